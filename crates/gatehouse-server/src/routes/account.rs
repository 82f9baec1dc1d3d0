//! `GET /account/whoami`.

use axum::Json;
use serde_json::{Value, json};

use crate::extract::Requester;

pub async fn whoami(requester: Requester) -> Json<Value> {
    Json(json!({
        "user_id": requester.user_id.as_str(),
        "device_id": requester.device_id,
        "is_guest": requester.is_guest,
    }))
}
