//! A real `gatehouse serve` process on a loopback port with a temporary
//! SQLite database, and helpers to speak HTTP to it.

#![allow(dead_code)]

pub mod database;
pub mod sdk;
pub mod shared_session;
pub mod synapse;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// Settings every test server gets unless a test overrides them: cheap
/// hashing (the cost is a benchmark's business) and generous rate limits.
pub fn base_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("GATEHOUSE_LISTEN", "127.0.0.1:0"),
        ("GATEHOUSE_LOG_FILTER", "debug"),
        ("GATEHOUSE_PASSWORDS__ARGON2_MEMORY_KIB", "256"),
        ("GATEHOUSE_PASSWORDS__ARGON2_ITERATIONS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for limit in [
        "LOGIN_PER_ADDRESS",
        "LOGIN_PER_ACCOUNT",
        "FAILED_LOGINS_PER_ACCOUNT",
        "REGISTRATION_PER_ADDRESS",
        "THREEPID_VALIDATION",
        "REGISTRATION_TOKEN_CHECKS",
        "LOGIN_TOKENS_PER_ACCOUNT",
        "UIA_SESSIONS_PER_ADDRESS",
        "USERNAME_CHECKS_PER_ADDRESS",
        "REFRESHES_PER_ADDRESS",
    ] {
        env.push((
            format!("GATEHOUSE_RATE_LIMITS__{limit}__PER_SECOND"),
            "1000".into(),
        ));
        env.push((
            format!("GATEHOUSE_RATE_LIMITS__{limit}__BURST_COUNT"),
            "1000".into(),
        ));
    }
    env
}

pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

impl Server {
    /// A server on a fresh data directory, with `extra` settings on top of [`base_env`].
    pub fn start(extra: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_in(tmp.path(), extra);
        s._tmp = Some(tmp);
        s
    }

    /// A server whose `public_baseurl` is its own address (for links in
    /// emails and `.well-known`), with `extra` settings.
    pub fn start_public(extra: Vec<(&'static str, String)>) -> Self {
        let port = free_port();
        let mut all: Vec<(&str, String)> = vec![
            ("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}")),
            (
                "GATEHOUSE_PUBLIC_BASEURL",
                format!("http://127.0.0.1:{port}"),
            ),
        ];
        all.extend(extra);
        let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Self::start(&pairs)
    }

    /// A server on an existing data directory (for restart tests).
    pub fn start_in(dir: &Path, extra: &[(&str, &str)]) -> Self {
        let mut env = base_env();
        env.push(("GATEHOUSE_DATA_DIR".into(), dir.display().to_string()));
        // A database named by the test wins; "" forces SQLite.
        let named = extra.iter().find(|(k, _)| *k == "GATEHOUSE_DATABASE__URL");
        if named.is_none()
            && let Some(url) = database::postgres_for(dir)
        {
            env.push(("GATEHOUSE_DATABASE__URL".into(), url));
        }
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        env.retain(|(k, v)| !(k == "GATEHOUSE_DATABASE__URL" && v.is_empty()));
        // With PostgreSQL nothing else may have made it: the log goes there.
        std::fs::create_dir_all(dir).expect("data dir");
        let log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(BIN)
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn gatehouse");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read stdout");
        let base = line
            .trim()
            .strip_prefix("Gatehouse listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_owned();
        Self {
            child,
            base,
            data_dir: dir.to_owned(),
            env,
            log,
            _tmp: None,
            http: reqwest::Client::new(),
        }
    }

    /// Runs an admin command against this server's data.
    pub fn admin(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("run admin")
    }

    /// Creates a user, panicking on failure.
    pub fn create_user(&self, name: &str, password: &str, extra: &[&str]) {
        let mut args = vec!["user", "create", name, "--password", password];
        args.extend_from_slice(extra);
        let out = self.admin(&args);
        assert!(
            out.status.success(),
            "user create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a registration token (no use limit), panicking on failure.
    pub fn create_registration_token(&self, token: &str) {
        let out = self.admin(&["registration-token", "create", "--token", token]);
        assert!(
            out.status.success(),
            "registration-token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON response ({status}): {text}"));
        (status, value)
    }

    /// Logs in with `m.id.user` and returns the access token.
    pub async fn access_token(&self, user: &str, password: &str) -> String {
        s(
            &self.login(user, password, serde_json::json!({})).await,
            "access_token",
        )
    }

    /// Logs in with `m.id.user`, returning the response body.
    pub async fn login(&self, user: &str, password: &str, extra: Value) -> Value {
        let mut body = serde_json::json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let (status, resp) = self.post("/_matrix/client/v3/login", body).await;
        assert_eq!(status, 200, "login failed: {resp}");
        resp
    }

    pub async fn whoami(&self, token: &str) -> (u16, Value) {
        self.get("/_matrix/client/v3/account/whoami", Some(token))
            .await
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process without any chance to flush (a crash).
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.crash();
    }
}

pub fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string '{key}' in {v}"))
        .to_owned()
}

/// Asserts a Matrix error response.
#[track_caller]
pub fn assert_error(got: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(got.0, status, "status of {}", got.1);
    assert_eq!(got.1["errcode"], errcode, "errcode of {}", got.1);
    assert!(
        got.1["error"].is_string(),
        "error message missing in {}",
        got.1
    );
}

/// A real SMTP server (aiosmtpd from PyPI, installed by `scripts/test` into
/// `~/.cache/gatehouse-venv`) writing every message into a maildir.
pub struct Smtp {
    child: Child,
    pub port: u16,
    pub maildir: tempfile::TempDir,
}

/// A port that was free a moment ago. Only for a Gatehouse server that must
/// know its own address before it starts (it binds within milliseconds);
/// slower servers should bind port 0 themselves and report it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Smtp {
    pub fn start() -> Self {
        let python = std::env::var("GATEHOUSE_TEST_PYTHON").unwrap_or_else(|_| {
            let venv = format!(
                "{}/.cache/gatehouse-venv/bin/python",
                std::env::var("HOME").unwrap_or_default()
            );
            if Path::new(&venv).exists() {
                venv
            } else {
                "python3".into()
            }
        });
        let maildir = tempfile::tempdir().unwrap();
        // It binds port 0 itself and prints the port it got (see the script).
        let mut child = Command::new(&python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/smtp-server.py"))
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start aiosmtpd with {python} ({e}); run ./scripts/test, which installs it"));
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let port = line.trim().parse().ok();
        // Owned at once, so that Drop reaps it whatever happens next.
        let smtp = Self {
            child,
            port: port.unwrap_or_default(),
            maildir,
        };
        assert!(
            read.is_ok() && port.is_some(),
            "aiosmtpd did not start (is it installed for {python}? run ./scripts/test)"
        );
        smtp
    }

    /// Settings that point a Gatehouse server at this SMTP server.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GATEHOUSE_EMAIL__ENABLED", "true".into()),
            ("GATEHOUSE_EMAIL__SMTP_HOST", "127.0.0.1".into()),
            ("GATEHOUSE_EMAIL__SMTP_PORT", self.port.to_string()),
            ("GATEHOUSE_EMAIL__TLS", "none".into()),
            (
                "GATEHOUSE_EMAIL__FROM",
                "\"Gatehouse <noreply@example.org>\"".into(),
            ),
        ]
    }

    /// Delivered messages as received, oldest first.
    pub fn raw_messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail").join("new");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| std::fs::read_to_string(path).unwrap_or_default())
            .collect()
    }

    /// Delivered messages, oldest first, with quoted-printable undone
    /// enough to read links.
    pub fn messages(&self) -> Vec<String> {
        self.raw_messages()
            .into_iter()
            .map(|raw| {
                raw.replace("=\r\n", "")
                    .replace("=\n", "")
                    .replace("=3D", "=")
            })
            .collect()
    }

    /// Waits until `n` messages have arrived and returns the newest, as received.
    pub fn wait_for_raw(&self, n: usize) -> String {
        for _ in 0..400 {
            let m = self.raw_messages();
            if m.len() >= n {
                return m.into_iter().last().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("message #{n} never arrived");
    }

    /// Waits until `n` messages have arrived and returns the newest.
    pub fn wait_for(&self, n: usize) -> String {
        for _ in 0..400 {
            let m = self.messages();
            if m.len() >= n {
                return m.into_iter().last().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("message #{n} never arrived");
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The validation link in a message.
pub fn link_in(message: &str) -> String {
    let start = message.find("http").expect("a link in the message");
    message[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// An HTTP client that keeps no idle connection. For a server shared by
/// several tests: each `#[tokio::test]` has its own runtime, and a pooled
/// connection dies with the runtime that opened it.
pub fn unpooled_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client")
}

impl Server {
    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This server, made usable from several tests' runtimes (see
    /// [`unpooled_client`]), e.g. kept in a `static`. Statics are never
    /// dropped: pair it with [`when_this_process_exits`].
    pub fn shared(mut self) -> Self {
        self.http = unpooled_client();
        self
    }

    /// `method path` with `body` as `token`'s owner, under User-Interactive
    /// Authentication: the first answer must be the 401 challenge, and the
    /// request is repeated with the password stage for `user`.
    pub async fn with_password_uia(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        mut body: Value,
        user: &str,
        password: &str,
    ) -> (u16, Value) {
        let request = |body: &Value| {
            self.http
                .request(method.clone(), self.url(path))
                .bearer_auth(token)
                .json(body)
        };
        let (status, challenge) = self.send(request(&body)).await;
        assert_eq!(
            status, 401,
            "{method} {path}: UIA challenge expected, got {challenge}"
        );
        body["auth"] = serde_json::json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            "session": s(&challenge, "session"),
        });
        self.send(request(&body)).await
    }
}

/// Runs the shell `script` once this test process has exited, however it
/// ends (a watchdog in its own process group, so that a Ctrl-C reaching
/// the tests does not kill it first). For what a `static` owns: processes
/// and directories that no `Drop` will ever clean up.
// Never waited for: it outlives this process by design (init reaps it).
#[allow(clippy::zombie_processes)]
pub fn when_this_process_exits(script: &str) {
    use std::os::unix::process::CommandExt;
    let watch = format!(
        "while kill -0 {} 2>/dev/null; do sleep 0.2; done; {script}",
        std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(watch)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the exit watchdog");
}

/// GET a validation link a message carried, as a person's browser would;
/// every such page carries a strict CSP. The status and the page.
pub async fn open_link(server: &Server, link: &str) -> (u16, String) {
    let resp = server.http.get(link).send().await.unwrap();
    let status = resp.status().as_u16();
    let csp = resp
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        csp.is_some_and(|c| c.contains("default-src 'none'")),
        "pages carry a strict CSP"
    );
    (status, resp.text().await.unwrap())
}

/// A response as a page: status, headers and body.
pub struct Html {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Html {
    pub async fn of(resp: reqwest::Response) -> Self {
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// `name=value` of the cookies this response sets (value "" = deleted).
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| {
                let first = v.to_str().ok()?.split(';').next()?;
                let (k, v) = first.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect()
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// The set cookie `name` as a `Cookie` request header would carry it.
    pub fn cookie_header(&self, name: &str) -> String {
        let value = self
            .cookie(name)
            .unwrap_or_else(|| panic!("no cookie {name} set: {}", self.header("set-cookie")));
        format!("{name}={value}")
    }

    /// The value of hidden field `name` in the page.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).unwrap_or_else(|| {
            panic!("no field {name} in {}", self.body);
        }) + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }

    /// The CSP nonce.
    pub fn nonce(&self) -> String {
        let csp = self.header("content-security-policy");
        csp.split("'nonce-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("a nonce in the CSP")
            .to_owned()
    }
}

impl Server {
    /// GET `path` as a page, with a `Cookie` header if given.
    pub async fn page(&self, path: &str, cookie: Option<&str>) -> Html {
        let mut req = self.http.get(self.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        Html::of(req.send().await.unwrap()).await
    }

    /// POST a form to `path`, as a browser would, with a `Cookie` header if given.
    pub async fn post_form(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Html {
        let mut req = self.http.post(self.url(path)).form(form);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        Html::of(req.send().await.unwrap()).await
    }
}

/// Settings that open registration with `flows` (a JSON list of lists).
pub fn open_registration(flows: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
        ("GATEHOUSE_REGISTRATION__FLOWS", flows.to_owned()),
    ]
}

pub fn start_with(settings: &[(&'static str, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(&pairs)
}

pub fn stages(v: &Value) -> Vec<Vec<String>> {
    v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| serde_json::from_value(f["stages"].clone()).unwrap())
        .collect()
}
