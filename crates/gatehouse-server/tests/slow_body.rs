//! A body that trickles in is cut off with a Matrix error instead of
//! holding its task (and connection) for as long as the client likes.
//! Time is paused: the 30 s wait passes at once.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use gatehouse_core::SystemClock;
use gatehouse_server::{AppState, Config, router};
use gatehouse_store::SqliteStore;
use gatehouse_store::sqlite::Durability;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use tower::ServiceExt;

#[tokio::test(start_paused = true)]
async fn a_body_that_never_ends_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"), Durability::Normal).unwrap();
    let app = router(AppState::new(
        Config::default(),
        Arc::new(store),
        Arc::new(SystemClock),
    ));
    let (mut sender, body) = Channel::<bytes::Bytes>::new(1);
    sender
        .send_data(bytes::Bytes::from_static(b"{\"type\":"))
        .await
        .unwrap();
    let request = Request::post("/_matrix/client/v3/login")
        .header("content-type", "application/json")
        .body(Body::new(body))
        .unwrap();
    // `sender` stays alive: the body neither ends nor fails.
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 408);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["errcode"], "M_UNKNOWN");
    drop(sender);
}
