//! No input produces a 500 or a panic: arbitrary bodies, paths and methods
//! thrown at the router (in process, over a real SQLite file) always get a
//! Matrix error or a success.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gatehouse_core::SystemClock;
use gatehouse_server::{AppState, Config, router};
use gatehouse_store::SqliteStore;
use gatehouse_store::sqlite::Durability;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

/// The secret of the delegated variant (its homeserver is a closed port:
/// every call to it fails, which must give a Matrix error too).
const SECRET: &str = "fuzzing-secret-0123456789";

fn app(dir: &std::path::Path, delegated: bool) -> axum::Router {
    let mut config = Config::default();
    config.passwords.argon2_memory_kib = 64;
    config.passwords.argon2_iterations = 1;
    config.registration.enabled = true;
    if delegated {
        config.public_baseurl = Some("http://127.0.0.1:1/".into());
        config.homeserver.url = Some("http://127.0.0.1:1".into());
        config.homeserver.secret = Some(SECRET.into());
        config.homeserver.timeout_ms = 200;
    }
    let store = SqliteStore::open(&dir.join("db.sqlite"), Durability::Normal).unwrap();
    router(AppState::new(
        config,
        Arc::new(store),
        Arc::new(SystemClock),
    ))
}

const PATHS: &[&str] = &[
    "/_matrix/client/v3/login",
    "/_matrix/client/r0/login",
    "/_matrix/client/v3/refresh",
    "/_matrix/client/v3/logout",
    "/_matrix/client/v3/logout/all",
    "/_matrix/client/v3/account/whoami",
    "/_matrix/client/api/v1/login",
    "/_matrix/client/api/v1/tokenrefresh",
    "/_matrix/client/versions",
    "/.well-known/matrix/client",
    "/_matrix/client/v3/nonexistent",
    "/_matrix/client/v3/register",
    "/_matrix/client/v3/register/available?username=x",
    "/_matrix/client/v1/register/m.login.registration_token/validity?token=x",
    "/_matrix/client/v3/account/password",
    "/_matrix/client/v3/account/deactivate",
    "/_matrix/client/v3/account/3pid",
    "/_matrix/client/v3/account/3pid/delete",
    "/_matrix/client/v3/devices",
    "/_matrix/client/v3/devices/ABC",
    "/_matrix/client/v3/delete_devices",
    "/_matrix/client/v3/keys/device_signing/upload",
    "/_matrix/client/v1/login/get_token",
    "/_matrix/client/v3/register/email/requestToken",
    "/_matrix/client/v3/account/3pid/add",
    "/_matrix/client/v3/auth/m.login.password/fallback/web?session=x",
    "/_gatehouse/threepid/submit_token",
    "/_matrix/client/v3/capabilities",
    "/oauth2/introspect",
    "/.well-known/openid-configuration",
    "/_gatehouse/account",
    "/_gatehouse/account?action=org.matrix.session_view&device_id=%FF",
];

/// JSON values shaped like login bodies, with random types in every slot.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9@:._ +-]{0,20}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("m.login.password"),
            Just("m.id.user"),
            Just("m.id.phone"),
            Just("m.id.thirdparty"),
            Just("email"),
            Just("msisdn"),
            Just("GB"),
            Just("ghrt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_000000"),
            Just("m.login.dummy"),
            Just("m.login.registration_token"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("identifier".to_owned()),
                    Just("user".to_owned()),
                    Just("password".to_owned()),
                    Just("medium".to_owned()),
                    Just("address".to_owned()),
                    Just("country".to_owned()),
                    Just("phone".to_owned()),
                    Just("number".to_owned()),
                    Just("device_id".to_owned()),
                    Just("refresh_token".to_owned()),
                    Just("initial_device_display_name".to_owned()),
                    Just("auth".to_owned()),
                    Just("session".to_owned()),
                    Just("username".to_owned()),
                    Just("new_password".to_owned()),
                    Just("devices".to_owned()),
                    Just("master_key".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_answer_is_a_matrix_answer(
        path in prop::sample::select(PATHS),
        method in prop::sample::select(&["GET", "POST", "PUT", "DELETE", "OPTIONS"][..]),
        auth in prop::option::of(prop_oneof!["[ -~]{0,50}", Just(format!("Bearer {SECRET}"))]),
        body in body(),
        delegated in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, html, json) = rt.block_on(async {
            let mut req = Request::builder().method(method).uri(path);
            if let Some(a) = &auth {
                req = req.header("authorization", a.as_str());
            }
            let resp = app(dir.path(), delegated).oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
            let status = resp.status();
            let html = resp.headers().get("content-type").is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/html"));
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, html, serde_json::from_slice::<serde_json::Value>(&bytes))
        });
        prop_assert!(status != StatusCode::INTERNAL_SERVER_ERROR, "500 for {method} {path}");
        // Fallback pages answer in HTML, for people; everything else in JSON.
        if (path.contains("/fallback/web") || path.starts_with("/_gatehouse/account"))
            && html
            && method != "OPTIONS"
        {
            return Ok(());
        }
        let json = json.expect("every response is JSON");
        prop_assert!(json.is_object());
        // A user-interactive auth challenge is the spec's 401 without an
        // errcode (one is added only when a stage failed).
        let challenge = status == StatusCode::UNAUTHORIZED
            && json["flows"].is_array()
            && json["session"].is_string();
        if !status.is_success() && !challenge {
            prop_assert!(json["errcode"].as_str().is_some_and(|e| e.starts_with("M_")), "{json}");
            prop_assert!(json["error"].is_string(), "{json}");
        }
    }
}
