//! Crashes under load lose nothing acknowledged, on both engines: clients
//! register (with a registration token), log in, refresh, use and log out
//! at once while the server is killed with SIGKILL ten times at random
//! moments and restarted on the same data. Afterwards, checked against what
//! the clients were answered: every 2xx is reflected, every revoked token
//! stays revoked, and nothing is half made.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use common::{Server, open_registration};
use serde_json::{Value, json};

const REG: &str = "/_matrix/client/v3/register";
const WORKERS: usize = 4;
const CRASHES: usize = 10;

/// What a client was answered with a 2xx, in order (and the one request
/// whose unanswered outcome matters: a logout).
#[derive(Debug, Clone)]
enum Acked {
    Registered(String),
    LoggedIn,
    Refreshed {
        old_at: String,
        old_rt: String,
        at: String,
    },
    Used(String),
    /// Not an answer: a logout was sent (it may have happened unanswered).
    LogoutSent(String),
    LoggedOut(String),
}

struct Load {
    base: RwLock<String>,
    http: reqwest::Client,
    log: Mutex<Vec<Acked>>,
    stop: AtomicBool,
}

impl Load {
    /// `None` when there was no answer (the server died mid-request) or a
    /// 5xx: the outcome is unknown, and the client moves on.
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Option<Value> {
        let url = format!("{}{path}", self.base.read().unwrap());
        let mut req = self.http.post(url).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.ok()?;
        (status == 200 || status == 401).then_some(v)
    }

    fn ack(&self, a: Acked) {
        self.log.lock().unwrap().push(a);
    }

    /// One account's life; stops at the first unknown outcome.
    async fn life(&self, name: &str) -> Option<()> {
        let body = json!({"username": name, "password": "pw", "inhibit_login": true});
        let challenge = self.post(REG, None, body.clone()).await?;
        let mut answer = body;
        answer["auth"] = json!({"type": "m.login.registration_token", "token": "invite", "session": challenge.get("session")?.as_str()?});
        let done = self.post(REG, None, answer).await?;
        done.get("user_id")?;
        self.ack(Acked::Registered(name.to_owned()));
        let login = self
            .post(
                "/_matrix/client/v3/login",
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "pw", "refresh_token": true}),
            )
            .await?;
        let (at, rt) = (
            login.get("access_token")?.as_str()?.to_owned(),
            login.get("refresh_token")?.as_str()?.to_owned(),
        );
        self.ack(Acked::LoggedIn);
        let rotated = self
            .post(
                "/_matrix/client/v3/refresh",
                None,
                json!({"refresh_token": rt}),
            )
            .await?;
        let at2 = rotated.get("access_token")?.as_str()?.to_owned();
        self.ack(Acked::Refreshed {
            old_at: at,
            old_rt: rt,
            at: at2.clone(),
        });
        let url = format!(
            "{}/_matrix/client/v3/account/whoami",
            self.base.read().unwrap()
        );
        let used = self.http.get(url).bearer_auth(&at2).send().await.ok()?;
        if used.status() != 200 {
            return None;
        }
        self.ack(Acked::Used(at2.clone()));
        self.ack(Acked::LogoutSent(at2.clone()));
        self.post("/_matrix/client/v3/logout", Some(&at2), json!({}))
            .await?
            .get("errcode")
            .is_none()
            .then_some(())?;
        self.ack(Acked::LoggedOut(at2));
        Some(())
    }
}

/// A pseudo-random delay in `[lo, hi)` ms (the clock's nanoseconds).
fn jitter(lo: u64, hi: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Duration::from_millis(lo + u64::from(nanos) % (hi - lo))
}

async fn crash_under_load(dir: &Path, database: &str) {
    let mut settings = open_registration(r#"[["m.login.registration_token"]]"#);
    settings.push(("GATEHOUSE_DATABASE__URL", database.to_owned()));
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = Server::start_in(dir, &pairs);
    server.create_registration_token("invite");
    let load = Arc::new(Load {
        base: RwLock::new(server.base.clone()),
        http: reqwest::Client::new(),
        log: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let load = load.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !load.stop.load(Ordering::Relaxed) {
                    n += 1;
                    if load.life(&format!("w{w}n{n}")).await.is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for _ in 0..CRASHES {
        tokio::time::sleep(jitter(150, 600)).await;
        server.crash();
        server = Server::start_in(dir, &pairs);
        *load.base.write().unwrap() = server.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let log = load.log.lock().unwrap().clone();
    check(&server, dir, database, &log).await;
}

async fn check(server: &Server, dir: &Path, database: &str, log: &[Acked]) {
    let count = |kind: fn(&Acked) -> bool| log.iter().filter(|a| kind(a)).count();
    let answers = log.len() - count(|a| matches!(a, Acked::LogoutSent(_)));
    let registered = count(|a| matches!(a, Acked::Registered(_)));
    let logged_out = count(|a| matches!(a, Acked::LoggedOut(_)));
    println!(
        "{CRASHES} crashes under load: {answers} acknowledged answers ({registered} registrations, {logged_out} logouts)"
    );
    assert!(
        registered >= WORKERS && logged_out >= 1,
        "the load ran: {log:?}"
    );
    let login = |name: &str| json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "pw"});
    for (i, a) in log.iter().enumerate() {
        // Whether a later answer on this session says so.
        let later = |f: &dyn Fn(&Acked) -> bool| log[i + 1..].iter().any(f);
        if let Acked::Registered(name) = a {
            let (status, v) = server.post("/_matrix/client/v3/login", login(name)).await;
            assert_eq!(status, 200, "{name} was registered: {v}");
        }
        if let Acked::Used(at) | Acked::Refreshed { at, .. } = a
            && !later(&|b| matches!(b, Acked::LogoutSent(t) if t == at))
        {
            assert_eq!(server.whoami(at).await.0, 200, "a live token was lost");
        }
        if let Acked::Refreshed { old_at, old_rt, at } = a
            && later(&|b| matches!(b, Acked::Used(t) if t == at))
        {
            // The new token's first use retired the old pair, for good.
            assert_eq!(
                server.whoami(old_at).await.0,
                401,
                "a retired token came back"
            );
            let (status, _) = server
                .post(
                    "/_matrix/client/v3/refresh",
                    json!({"refresh_token": old_rt}),
                )
                .await;
            assert_eq!(status, 401, "a retired refresh token came back");
        }
        if let Acked::LoggedOut(at) = a {
            assert_eq!(
                server.whoami(at).await.0,
                401,
                "a logged-out token came back"
            );
        }
    }
    // Nothing half made: every device has a token and every token a device,
    // and the token's completed uses are exactly the accounts made with it.
    let url = (!database.is_empty()).then_some(database);
    let q = |sql: &'static str| common::database::query_count_on(url, dir, sql);
    assert_eq!(
        q("SELECT count(*) FROM devices d WHERE NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.user_id = d.user_id AND a.device_id = d.device_id)").await,
        0,
        "devices without tokens"
    );
    assert_eq!(
        q("SELECT count(*) FROM access_tokens a WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE a.user_id = d.user_id AND a.device_id = d.device_id)").await,
        0,
        "tokens without devices"
    );
    let users = q("SELECT count(*) FROM users").await;
    let completed = q("SELECT completed FROM registration_tokens WHERE token = 'invite'").await;
    assert_eq!(completed, users, "token uses completed vs accounts made");
    assert!(users >= registered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_lose_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_under_load(dir.path(), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_lose_nothing_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = gatehouse_store::postgres::testing::fresh_database().await;
    crash_under_load(dir.path(), &url).await;
}
