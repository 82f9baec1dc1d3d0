//! The server in process on a `ManualClock`: expiries and rate-limit
//! refills shown to the millisecond, with no test sleeping through them —
//! what injecting the clock everywhere buys (decision 0014).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use gatehouse_core::clock::ManualClock;
use gatehouse_server::{AppState, Config, router};
use gatehouse_store::SqliteStore;
use gatehouse_store::sqlite::Durability;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct App {
    router: axum::Router,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

impl App {
    fn new(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.passwords.argon2_memory_kib = 64;
        config.passwords.argon2_iterations = 1;
        config.registration.enabled = true;
        config.registration.flows = vec![vec!["m.login.dummy".into()]];
        configure(&mut config);
        let store = SqliteStore::open(&dir.path().join("db.sqlite"), Durability::Normal).unwrap();
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let router = router(AppState::new(config, Arc::new(store), clock.clone()));
        Self {
            router,
            clock,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn whoami(&self, token: &str) -> (u16, Value) {
        self.call(
            "GET",
            "/_matrix/client/v3/account/whoami",
            Some(token),
            Value::Null,
        )
        .await
    }

    /// Registers `name` (password `pw`) with a refresh token.
    async fn register(&self, name: &str) -> Value {
        let mut body = json!({"username": name, "password": "pw", "refresh_token": true});
        let (_, challenge) = self
            .call("POST", "/_matrix/client/v3/register", None, body.clone())
            .await;
        body["auth"] = json!({"type": "m.login.dummy", "session": challenge["session"]});
        let (status, v) = self
            .call("POST", "/_matrix/client/v3/register", None, body)
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_owned()
}

#[tokio::test]
async fn access_tokens_expire_on_the_millisecond_and_refresh_resumes() {
    let app = App::new(|_| {});
    let reg = app.register("ada").await;
    let lifetime = reg["expires_in_ms"].as_u64().unwrap();
    let token = s(&reg, "access_token");
    app.clock.advance(lifetime - 1);
    assert_eq!(
        app.whoami(&token).await.0,
        200,
        "valid until its last millisecond"
    );
    app.clock.advance(1);
    let (status, v) = app.whoami(&token).await;
    assert_eq!(
        (status, v["errcode"].as_str(), v["soft_logout"].as_bool()),
        (401, Some("M_UNKNOWN_TOKEN"), Some(true)),
        "{v}"
    );
    let (status, fresh) = app
        .call(
            "POST",
            "/_matrix/client/v3/refresh",
            None,
            json!({"refresh_token": reg["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(app.whoami(&s(&fresh, "access_token")).await.0, 200);
}

#[tokio::test]
async fn refresh_tokens_and_uia_sessions_expire_on_the_millisecond() {
    let app = App::new(|c| c.tokens.refresh_token_lifetime_ms = Some(60_000));
    let reg = app.register("bea").await;
    let refresh = json!({"refresh_token": reg["refresh_token"]});
    app.clock.advance(60_000);
    let (status, v) = app
        .call("POST", "/_matrix/client/v3/refresh", None, refresh)
        .await;
    assert_eq!(
        (status, v["errcode"].as_str(), v["soft_logout"].as_bool()),
        (401, Some("M_UNKNOWN_TOKEN"), Some(true)),
        "expired: may resume, {v}"
    );

    // A UIA session lives `uia.session_lifetime_ms` (15 minutes).
    let (status, challenge) = app
        .call("POST", "/_matrix/client/v3/register", None, json!({}))
        .await;
    assert_eq!(status, 401);
    let session = s(&challenge, "session");
    app.clock.advance(15 * 60 * 1000);
    let (status, v) = app
        .call(
            "POST",
            "/_matrix/client/v3/register",
            None,
            json!({"username": "late", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (400, Some("M_UNKNOWN")),
        "{v}"
    );
}

/// The login limit per address (Synapse's rc_login: 0.17/s, burst 3): the
/// fourth try is refused with a wait, and allowed exactly when it is over.
#[tokio::test]
async fn rate_limits_refill_on_the_injected_clock() {
    let app = App::new(|c| {
        c.rate_limits.failed_logins_per_account.burst_count = 100;
        c.rate_limits.login_per_account.burst_count = 100;
    });
    let wrong = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "x"});
    for _ in 0..3 {
        assert_eq!(
            app.call("POST", "/_matrix/client/v3/login", None, wrong.clone())
                .await
                .0,
            403
        );
    }
    let (status, v) = app
        .call("POST", "/_matrix/client/v3/login", None, wrong.clone())
        .await;
    assert_eq!(status, 429, "{v}");
    let wait = v["retry_after_ms"].as_u64().unwrap();
    app.clock.advance(wait - 1);
    assert_eq!(
        app.call("POST", "/_matrix/client/v3/login", None, wrong.clone())
            .await
            .0,
        429
    );
    app.clock.advance(1);
    assert_eq!(
        app.call("POST", "/_matrix/client/v3/login", None, wrong)
            .await
            .0,
        403,
        "allowed once the wait is over"
    );
}

/// A change recorded for the homeserver is left to the request that made
/// it for one retry interval: the background retries, taking it at once,
/// could apply it before the change itself is made here (a device not yet
/// deleted reads as "re-created, keep it"), and mark it done with the
/// homeserver never told.
#[tokio::test]
async fn recorded_homeserver_changes_wait_one_interval_for_the_retries() {
    use gatehouse_core::Clock;
    use gatehouse_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("db.sqlite"), Durability::Normal).unwrap());
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let mut config = Config::default();
    config.homeserver.url = Some("http://127.0.0.1:1".into());
    config.homeserver.secret = Some("a-shared-secret-for-the-test".into());
    config.homeserver.retry_interval_ms = 300;
    let homeserver = gatehouse_server::homeserver::Homeserver::from_config(
        &config,
        store.clone(),
        clock.clone(),
    )
    .unwrap()
    .unwrap();
    let user = gatehouse_core::user_id::UserId::new("dora", "localhost").unwrap();
    let _recorded = homeserver
        .record(
            &user,
            gatehouse_server::homeserver::devices_deleted(["D1".to_owned()]),
        )
        .await
        .unwrap();
    let due = |at| {
        let store = store.clone();
        async move { store.due_homeserver_syncs(at, 10).await.unwrap().len() }
    };
    assert_eq!(due(clock.now_ms()).await, 0, "not the retries' yet");
    clock.advance(299);
    assert_eq!(due(clock.now_ms()).await, 0);
    clock.advance(1);
    assert_eq!(
        due(clock.now_ms()).await,
        1,
        "the retries' once an interval passed"
    );
}
