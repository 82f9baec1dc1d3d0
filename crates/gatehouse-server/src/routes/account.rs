//! `GET /account/whoami`.

use axum::Json;
use serde::Serialize;

use crate::extract::Requester;

#[derive(Serialize)]
pub struct WhoamiResponse {
    user_id: String,
    device_id: String,
    is_guest: bool,
}

pub async fn whoami(requester: Requester) -> Json<WhoamiResponse> {
    Json(WhoamiResponse {
        user_id: requester.user_id.to_string(),
        device_id: requester.device_id,
        is_guest: requester.is_guest,
    })
}
