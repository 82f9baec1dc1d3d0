//! Locking and suspension behind Synapse, through the spec's admin API at
//! Gatehouse: the lock reaches Synapse's record of the user and
//! introspection refuses the user's tokens; the suspension is set in
//! Synapse too, which is what refuses the user's messages.

use reqwest::Method;
use serde_json::json;

use super::common::{assert_error, s};
use super::stack::*;

#[tokio::test]
async fn lock_and_suspension_reach_synapse() {
    let (_running, stack) = shared().await;
    let g = &stack.gatehouse;
    g.create_user("lou", PW, &[]);
    let (token, _) = stack.login("lou", "LOUDEV", json!({})).await;
    let admin = stack.admin_token().await;
    let moderate = async |what: &str, body: serde_json::Value| {
        let path = format!("/_matrix/client/v1/admin/{what}/@lou:localhost");
        g.send(g.http.put(g.url(&path)).bearer_auth(&admin).json(&body))
            .await
    };

    // Locked: Synapse's record says so, and introspection refuses lou.
    assert_eq!(
        moderate("lock", json!({"locked": true})).await,
        (200, json!({"locked": true}))
    );
    assert_eq!(stack.synapse_user(&admin, "lou").await["locked"], true);
    assert_eq!(stack.introspect(&token).await["active"], false);
    assert_eq!(
        moderate("lock", json!({"locked": false})).await,
        (200, json!({"locked": false}))
    );
    assert_eq!(stack.synapse_user(&admin, "lou").await["locked"], false);
    assert_eq!(stack.introspect(&token).await["active"], true);

    // Suspended: Synapse refuses lou's messages, then takes them again.
    let (status, room) = stack
        .synapse_call(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{room}");
    let room = s(&room, "room_id");
    let send = async |txn: &str| {
        stack
            .synapse_call(
                Method::PUT,
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
                Some(&token),
                Some(json!({"msgtype": "m.text", "body": "hello"})),
            )
            .await
    };
    assert_eq!(
        moderate("suspend", json!({"suspended": true})).await,
        (200, json!({"suspended": true}))
    );
    assert_eq!(stack.synapse_user(&admin, "lou").await["suspended"], true);
    assert_error(&send("t1").await, 403, "M_USER_SUSPENDED");
    // Gatehouse's own part: removing a contact address is refused.
    assert_error(
        &g.post_auth(
            "/_matrix/client/v3/account/3pid/delete",
            &token,
            json!({"medium": "email", "address": "lou@example.org"}),
        )
        .await,
        403,
        "M_USER_SUSPENDED",
    );
    assert_eq!(
        moderate("suspend", json!({"suspended": false})).await,
        (200, json!({"suspended": false}))
    );
    let (status, sent) = send("t2").await;
    assert_eq!(status, 200, "{sent}");

    // A user who never logged in is unknown to Synapse: made known, then
    // suspended there too.
    g.create_user("nell", PW, &[]);
    let path = "/_matrix/client/v1/admin/suspend/@nell:localhost";
    let (status, v) = g
        .send(
            g.http
                .put(g.url(path))
                .bearer_auth(&admin)
                .json(&json!({"suspended": true})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(stack.synapse_user(&admin, "nell").await["suspended"], true);

    // The command line cannot suspend behind a homeserver (it has no
    // administrator's token to tell it with), and says so.
    let out = g.admin(&["user", "suspend", "lou"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin API"), "{err}");
}
