//! The stack every delegation test shares: a real Synapse delegating to a
//! real `gatehouse serve`, started once per test binary, and the calls the
//! tests make on both.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{Server, assert_error, free_port, s, when_this_process_exits};
use reqwest::Method;
use serde_json::{Value, json};

pub const PW: &str = "delegation-pw";
pub const API_SCOPE: &str = "urn:matrix:client:api:*";
pub const ADMIN_SCOPE: &str = "urn:synapse:admin:*";
/// The Gatehouse account every stack makes a server admin, for Synapse's
/// admin API.
pub const ROOT: &str = "root";

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/synapse/synapse.sh")
}

/// A Synapse delegating authentication, on its own directory and port;
/// stopped on drop.
pub struct Synapse {
    pub dir: PathBuf,
    pub port: u16,
    pub auth_url: String,
    pub secret_file: PathBuf,
    pub base: String,
}

impl Synapse {
    /// Starts it; `Err` carries synapse.sh's diagnostics.
    ///
    /// A fresh Synapse builds some indexes in background updates, one a
    /// second, and until `profiles_full_user_id_key_idx` exists (about 20 s
    /// on SQLite) `/_synapse/mas/reactivate_user` fails with 500 ("ON
    /// CONFLICT clause does not match any PRIMARY KEY or UNIQUE
    /// constraint"). So the updates run without pauses, and the start waits
    /// for them all.
    pub fn start(
        dir: &Path,
        port: u16,
        auth_url: &str,
        secret_file: &Path,
        extra_config: &str,
    ) -> Result<Self, String> {
        let synapse = Self {
            dir: dir.to_owned(),
            port,
            auth_url: auth_url.to_owned(),
            secret_file: secret_file.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
        };
        std::fs::write(
            dir.with_extension("extra.yaml"),
            format!("background_updates:\n  sleep_enabled: false\n{extra_config}"),
        )
        .map_err(|e| format!("cannot write the extra config: {e}"))?;
        synapse.launch()?;
        synapse.wait_for_background_updates();
        Ok(synapse)
    }

    /// Waits until Synapse's database has no background update left.
    pub fn wait_for_background_updates(&self) {
        let venv = std::env::var("GATEHOUSE_SYNAPSE_VENV").unwrap_or_else(|_| {
            format!(
                "{}/.cache/gatehouse-synapse-venv",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let count = "import sqlite3, sys; db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True); print(db.execute('select count(*) from background_updates').fetchone()[0])";
        let db = self.dir.join("homeserver.db");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(format!("{venv}/bin/python"))
                .args(["-c", count])
                .arg(&db)
                .output()
                .expect("run the venv's python");
            let left = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if left == "0" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Synapse's background updates not done after 30 s ({left} left): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// start-delegated on this directory: the first start, or a restart on
    /// the same data and port.
    pub fn launch(&self) -> Result<(), String> {
        let out = Command::new("bash")
            .arg(script())
            .arg("start-delegated")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(&self.auth_url)
            .arg(&self.secret_file)
            .env(
                "GATEHOUSE_SYNAPSE_EXTRA_CONFIG",
                self.dir.with_extension("extra.yaml"),
            )
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run synapse.sh: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.trim() == format!("SYNAPSE_URL={}", self.base) {
            Ok(())
        } else {
            Err(format!(
                "synapse.sh start-delegated failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Kills Synapse (SIGKILL: a crash) and waits until it is gone.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("synapse.pid")).expect("synapse.pid");
        let pid = pid.trim();
        let signal = |signal: &str| {
            Command::new("kill")
                .args([signal, pid])
                .stderr(Stdio::null())
                .status()
                .expect("run kill")
                .success()
        };
        assert!(signal("-KILL"), "kill -KILL {pid}");
        // Until reaped (synapse.sh will not start over a live PID).
        let deadline = Instant::now() + Duration::from_secs(10);
        while signal("-0") {
            assert!(Instant::now() < deadline, "Synapse {pid} survives SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "Synapse's port is closed"
        );
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

/// The bridge's `as_token`.
pub const BRIDGE_TOKEN: &str = "as_token_of_the_delegated_bridge_0123";

/// An application service owning `@bridge_*`, known to both servers.
const BRIDGE_REGISTRATION: &str = r#"id: delegated-bridge
url: null
as_token: "as_token_of_the_delegated_bridge_0123"
hs_token: "hs_token_of_the_delegated_bridge_0123"
sender_localpart: bridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@bridge_.*:localhost'
  aliases: []
  rooms: []
"#;

/// Gatehouse and the Synapse that delegates to it, sharing a secret file.
/// Fields drop in order: Gatehouse, Synapse, then the directory.
pub struct Stack {
    pub gatehouse: Server,
    pub synapse: Synapse,
    pub secret: String,
    /// Gatehouse's `public_baseurl`, hence the issuer.
    pub public: String,
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Each needs the other's address before it starts: Gatehouse's port is
    /// picked first and bound at once, then Synapse is started on another
    /// port (seconds later; if that port was taken meanwhile, both are tried
    /// again on new ports, at most three times).
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret =
            gatehouse_core::token::generate(gatehouse_core::token::TokenKind::Access).to_string();
        let secret_file = dir.path().join("shared-secret");
        // With a newline, as `echo` would write it: both sides trim it.
        std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
        let data = dir.path().join("gatehouse");
        std::fs::create_dir_all(&data).expect("data dir");
        // The bridge: registered with both, as a real deployment has it
        // (Synapse answers its `as_token` on the rooms API itself).
        let bridge = dir.path().join("bridge.yaml");
        std::fs::write(&bridge, BRIDGE_REGISTRATION).expect("registration file");
        let bridge_files = format!("[{:?}]", bridge.display().to_string());
        let mut failures = Vec::new();
        while failures.len() < 3 {
            let gport = free_port();
            let sport = loop {
                let p = free_port();
                if p != gport {
                    break p;
                }
            };
            let public = format!("http://127.0.0.1:{gport}");
            let listen = format!("127.0.0.1:{gport}");
            let synapse_url = format!("http://127.0.0.1:{sport}");
            let secret_path = secret_file.display().to_string();
            let mut env: Vec<(&str, &str)> = vec![
                ("GATEHOUSE_LISTEN", &listen),
                ("GATEHOUSE_PUBLIC_BASEURL", &public),
                ("GATEHOUSE_HOMESERVER__URL", &synapse_url),
                ("GATEHOUSE_HOMESERVER__SECRET_PATH", &secret_path),
                ("GATEHOUSE_HOMESERVER__RETRY_INTERVAL_MS", "300"),
                ("GATEHOUSE_APPSERVICES__REGISTRATION_FILES", &bridge_files),
            ];
            env.extend_from_slice(extra);
            let gatehouse = Server::start_in(&data, &env).shared();
            assert_eq!(gatehouse.base, public, "Gatehouse listens where it said");
            match Synapse::start(
                &dir.path().join("synapse"),
                sport,
                &format!("{public}/"),
                &secret_file,
                &format!(
                    "app_service_config_files: [{:?}]\n",
                    bridge.display().to_string()
                ),
            ) {
                Ok(synapse) => {
                    let stack = Self {
                        gatehouse,
                        synapse,
                        secret,
                        public,
                        dir,
                    };
                    stack.gatehouse.create_user(ROOT, PW, &[]);
                    admin_cli(&stack.gatehouse, &["user", "admin", ROOT]);
                    // Provisioned on Synapse by a first login now, so that
                    // the tests' concurrent admin logins never race to
                    // provision it (see
                    // `concurrent_first_logins_of_a_user_all_succeed`).
                    stack.admin_token().await;
                    return stack;
                }
                Err(e) => {
                    let port_taken = e.contains("Address already in use")
                        || e.contains("something already answers");
                    failures.push(e);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        panic!(
            "Synapse did not start (run ./scripts/test or `interop/synapse/synapse.sh install`): {}",
            failures.join("\n---- next attempt ----\n")
        );
    }

    pub async fn synapse_call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .gatehouse
            .http
            .request(method, format!("{}{path}", self.synapse.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        self.gatehouse.send(request).await
    }

    pub async fn synapse_whoami(&self, token: &str) -> (u16, Value) {
        self.synapse_call(
            Method::GET,
            "/_matrix/client/v3/account/whoami",
            Some(token),
            None,
        )
        .await
    }

    /// Asserts that Synapse takes `token` as `user`'s on `device`.
    pub async fn assert_works_on_synapse(&self, token: &str, user: &str, device: &str) {
        let (status, v) = self.synapse_whoami(token).await;
        assert_eq!(status, 200, "Synapse's whoami for {user}/{device}: {v}");
        assert_eq!(v["user_id"], format!("@{user}:localhost"), "{v}");
        assert_eq!(v["device_id"], device, "{v}");
    }

    /// Asserts that Synapse refuses `token` as it refuses a dead one.
    pub async fn assert_refused_by_synapse(&self, token: &str, what: &str) {
        let got = self.synapse_whoami(token).await;
        assert_error(&got, 401, "M_UNKNOWN_TOKEN");
        assert_eq!(got.1["soft_logout"], false, "{what}: {}", got.1);
    }

    /// A token for the server admin ([`ROOT`]).
    pub async fn admin_token(&self) -> String {
        let device = gatehouse_core::token::generate_device_id();
        self.login(ROOT, &device, json!({})).await.0
    }

    /// Synapse's record of a user, from its admin API.
    pub async fn synapse_user(&self, admin: &str, user: &str) -> Value {
        let (status, v) = self
            .synapse_call(
                Method::GET,
                &format!("/_synapse/admin/v2/users/@{user}:localhost"),
                Some(admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "admin API user {user}: {v}");
        v
    }

    /// The device IDs Synapse holds for a user, from its admin API.
    pub async fn synapse_devices(&self, admin: &str, user: &str) -> Vec<String> {
        let (status, v) = self
            .synapse_call(
                Method::GET,
                &format!("/_synapse/admin/v2/users/@{user}:localhost/devices"),
                Some(admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "admin API devices of {user}: {v}");
        v["devices"]
            .as_array()
            .unwrap_or_else(|| panic!("no devices list in {v}"))
            .iter()
            .map(|d| s(d, "device_id"))
            .collect()
    }

    /// `POST /oauth2/introspect` as Synapse sends it, with `authorization`
    /// as the whole header value (or none).
    pub async fn introspect_as(&self, authorization: Option<&str>, token: &str) -> (u16, Value) {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let mut request = self
            .gatehouse
            .http
            .post(self.gatehouse.url("/oauth2/introspect"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header("x-mas-supports-device-id", "1")
            .body(form);
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        self.gatehouse.send(request).await
    }

    /// Introspection with the shared secret; must be a 200.
    pub async fn introspect(&self, token: &str) -> Value {
        let (status, v) = self
            .introspect_as(Some(&format!("Bearer {}", self.secret)), token)
            .await;
        assert_eq!(status, 200, "introspection is always 200: {v}");
        v
    }

    /// What Gatehouse logged about its calls to Synapse.
    pub fn homeserver_log(&self) -> String {
        self.gatehouse
            .logs()
            .lines()
            .filter(|l| l.contains("homeserver"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Logs in with an explicit device ID; returns (access token, body).
    pub async fn login(&self, user: &str, device: &str, extra: Value) -> (String, Value) {
        let mut body = json!({ "device_id": device });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body["type"] = json!("m.login.password");
        body["identifier"] = json!({"type": "m.id.user", "user": user});
        body["password"] = json!(PW);
        let (status, r) = self.gatehouse.post("/_matrix/client/v3/login", body).await;
        assert_eq!(
            status,
            200,
            "login as {user} on {device}: {r}\nGatehouse's homeserver calls:\n{}",
            self.homeserver_log()
        );
        assert_eq!(r["device_id"], device, "{r}");
        (s(&r, "access_token"), r)
    }
}

/// Runs an admin command, asserting success; returns its stdout.
pub fn admin_cli(server: &Server, args: &[&str]) -> String {
    let out = server.admin(args);
    assert!(
        out.status.success(),
        "gatehouse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("could not be told"),
        "gatehouse {args:?} did not reach the homeserver: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pair every test uses, started once per test binary; registration
/// is open.
pub async fn stack() -> &'static Stack {
    pub static STACK: tokio::sync::OnceCell<Stack> = tokio::sync::OnceCell::const_new();
    STACK
        .get_or_init(|| async {
            let stack = Stack::start(&[("GATEHOUSE_REGISTRATION__ENABLED", "true")]).await;
            // A static is never dropped: stop both and remove the directory
            // once this test binary has exited.
            when_this_process_exits(&format!(
                "kill {}; bash '{}' stop '{}' >/dev/null 2>&1; rm -rf '{}'",
                stack.gatehouse.pid(),
                script().display(),
                stack.synapse.dir.display(),
                stack.dir.path().display(),
            ));
            stack
        })
        .await
}

/// Held for reading by the tests that need Synapse running with its
/// caches, and for writing by the one that stops and restarts it.
pub static SYNAPSE_UP: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The shared pair, with Synapse kept running until the guard drops.
pub async fn shared() -> (tokio::sync::RwLockReadGuard<'static, ()>, &'static Stack) {
    let running = SYNAPSE_UP.read().await;
    (running, stack().await)
}

pub fn scopes(v: &Value) -> Vec<String> {
    v["scope"]
        .as_str()
        .unwrap_or_else(|| panic!("no scope in {v}"))
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// A room ID or event ID as one path segment.
pub fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
