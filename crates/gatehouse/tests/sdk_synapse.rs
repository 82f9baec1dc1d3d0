//! The client SDK against a real Synapse (matrix-synapse 1.163.2, started on
//! loopback by `interop/synapse/synapse.sh`, which `scripts/test` installs).
//! Where Synapse departs from the spec, the test says so and checks what
//! Synapse really does, instead of skipping.

mod common;

use std::process::Command;
use std::time::Duration;

use common::synapse::Synapse;
use gatehouse_client::discovery::{AutoDiscovery, DiscoveryState};
use gatehouse_client::{
    Client, Error, ErrorCode, InteractiveAuth, LoginRequest, StageStatus, UserIdentifier,
};
use serde_json::{Value, json};

/// Runs a UIA-protected request, answering the password stage as `user`.
async fn uia<F>(request: F, user: &'static str, password: &'static str) -> Result<Value, Error>
where
    F: Fn(
            Option<Value>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, Error>> + Send>>
        + Send
        + Sync
        + 'static,
{
    let run = gatehouse_client::authenticate(request, move |stage, _, _| {
        Box::pin(async move {
            (stage == "m.login.password")
                .then(|| json!({"type": stage, "identifier": {"type": "m.id.user", "user": user}, "password": password}))
        })
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("UIA in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_works_against_synapse() {
    let synapse = Synapse::start();
    let domain = synapse.base.trim_start_matches("http://").to_owned();

    // Discovery: Synapse serves .well-known from public_baseurl.
    let found = AutoDiscovery::new()
        .with_scheme("http")
        .find_client_config(&domain)
        .await;
    assert_eq!(found.homeserver.state, DiscoveryState::Success, "{found:?}");
    assert_eq!(
        found.homeserver.base_url.as_deref(),
        Some(synapse.base.as_str())
    );

    let anon = Client::builder(&synapse.base).build().unwrap();
    let flows = anon.login_flows().await.unwrap();
    assert!(
        flows
            .iter()
            .any(|f| f.kind == "m.login.token" && f.get_login_token),
        "{flows:?}"
    );

    // Registration through InteractiveAuth (dummy stage, done by the SDK).
    let c = anon.clone();
    let registered = uia(
        move |auth| {
            let c = c.clone();
            Box::pin(async move {
                c.register(
                    json!({"username": "sdkuser", "password": "pw", "refresh_token": true}),
                    auth,
                )
                .await
            })
        },
        "sdkuser",
        "pw",
    )
    .await
    .unwrap();
    assert_eq!(registered["user_id"], "@sdkuser:localhost");

    // Login, the seed 000 pattern, refresh.
    let r = anon
        .login_request(
            LoginRequest::password(UserIdentifier::user("sdkuser"), "pw").refresh_token(true),
        )
        .await
        .unwrap();
    assert!(r.refresh_token.is_some() && r.expires_in_ms.is_some());
    let client = Client::builder(&synapse.base)
        .session(r.session())
        .build()
        .unwrap();
    assert_eq!(client.whoami().await.unwrap().user_id, "@sdkuser:localhost");
    let first = r.session();
    // Refresh once (answer "lost"), then again with the same refresh token
    // before either answer's tokens are used. The spec keeps the old refresh
    // token valid until new tokens are used, and Gatehouse keeps both
    // answers usable until one is. Synapse 1.163 departs from it: the retry
    // succeeds, but the first answer's tokens die at once (401
    // M_UNKNOWN_TOKEN, soft_logout false).
    let lost = Client::builder(&synapse.base)
        .session(first.clone())
        .build()
        .unwrap();
    lost.refresh().await.unwrap();
    client.refresh().await.unwrap();
    let killed = lost.whoami().await.unwrap_err();
    let m = killed.matrix().unwrap();
    assert_eq!(
        (m.status, &m.errcode, m.soft_logout),
        (401, &ErrorCode::UnknownToken, false),
        "Synapse kills the first answer's tokens: {m:?}"
    );
    assert_eq!(
        client.whoami().await.unwrap().user_id,
        "@sdkuser:localhost",
        "the retry's tokens work"
    );
    // Once the new tokens are used, the old refresh token is dead. The spec
    // says 401 M_UNKNOWN_TOKEN; Synapse answers 403 M_FORBIDDEN.
    let late = Client::builder(&synapse.base)
        .session(first)
        .build()
        .unwrap()
        .refresh()
        .await
        .unwrap_err();
    let m = late.matrix().unwrap();
    assert_eq!(
        (m.status, &m.errcode),
        (403, &ErrorCode::Forbidden),
        "Synapse's answer to a dead refresh token: {m:?}"
    );

    // Two clients sharing one persisted session (as processes share a CLI
    // profile) take turns refreshing: with Synapse too, each carries on
    // with the other's tokens instead of dying with its spent ones.
    let shared = anon
        .login_request(
            LoginRequest::password(UserIdentifier::user("sdkuser"), "pw").refresh_token(true),
        )
        .await
        .unwrap();
    common::shared_session::two_clients_take_turns_refreshing(&synapse.base, shared.session())
        .await;

    // Synapse departs from the spec: spec-form m.id.phone {country, phone}
    // fails with 400 "Missing JSON keys" (it wants the old `number` key).
    let phone = anon
        .login_request(LoginRequest::password(
            UserIdentifier::phone("GB", "07400123456"),
            "pw",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        phone.matrix().map(|m| m.status),
        Some(400),
        "Synapse refuses spec-form m.id.phone: {phone:?}"
    );

    // Synapse has no m.login.password fallback page (the spec lists one;
    // Gatehouse serves it). Checked as Synapse does it.
    let page = reqwest::get(anon.fallback_auth_url("m.login.password", "any-session"))
        .await
        .unwrap();
    assert_eq!(
        page.status().as_u16(),
        404,
        "Synapse serves no password fallback page"
    );

    // A user made through the admin API, with an email: log in by email.
    synapse.run(&["create-user", "carol", "carol-pw", "carol@example.org"]);
    let by_email = anon
        .login_request(LoginRequest::password(
            UserIdentifier::email("carol@example.org"),
            "carol-pw",
        ))
        .await
        .unwrap();
    assert_eq!(by_email.user_id, "@carol:localhost");

    // /login/get_token under UIA, then m.login.token.
    let c = client.clone();
    let token = uia(
        move |auth| {
            let c = c.clone();
            Box::pin(async move {
                c.login_token(auth)
                    .await
                    .map(|t| json!({"login_token": t.login_token}))
            })
        },
        "sdkuser",
        "pw",
    )
    .await
    .unwrap();
    let via_token = anon
        .login_request(LoginRequest::token(token["login_token"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(via_token.user_id, "@sdkuser:localhost");

    // Device deletion and password change through InteractiveAuth.
    let other = via_token.device_id.clone().unwrap();
    let c = client.clone();
    uia(
        move |auth| {
            let (c, d) = (c.clone(), other.clone());
            Box::pin(async move { c.delete_device(&d, auth).await.map(|()| json!({})) })
        },
        "sdkuser",
        "pw",
    )
    .await
    .unwrap();
    assert!(
        !client
            .devices()
            .await
            .unwrap()
            .iter()
            .any(|d| Some(&d.device_id) == via_token.device_id.as_ref())
    );
    let c = client.clone();
    uia(
        move |auth| {
            let c = c.clone();
            Box::pin(async move { c.set_password("pw2", false, auth).await.map(|()| json!({})) })
        },
        "sdkuser",
        "pw",
    )
    .await
    .unwrap();

    // Rate limiting and errors are typed the same way.
    let wrong = anon
        .login_request(LoginRequest::password(
            UserIdentifier::user("sdkuser"),
            "pw",
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.errcode(), Some(&ErrorCode::Forbidden));

    // Deactivation; Synapse departs from the spec: the deactivated user's
    // password login is 403 M_FORBIDDEN, not M_USER_DEACTIVATED.
    let c = client.clone();
    uia(
        move |auth| {
            let c = c.clone();
            Box::pin(async move { c.deactivate_account(auth, true).await })
        },
        "sdkuser",
        "pw2",
    )
    .await
    .unwrap();
    let gone = anon
        .login_request(LoginRequest::password(
            UserIdentifier::user("sdkuser"),
            "pw2",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        gone.errcode(),
        Some(&ErrorCode::Forbidden),
        "Synapse answers M_FORBIDDEN, the spec says M_USER_DEACTIVATED"
    );
}

/// Synapse's mails are base64 MIME parts; the link is in the decoded text.
fn synapse_link(mail: &str) -> String {
    use base64::Engine as _;
    let mut text = mail.to_owned();
    for part in mail.split("Content-Transfer-Encoding: base64").skip(1) {
        let body: String = part
            .split("\n\n")
            .nth(1)
            .or_else(|| part.split("\r\n\r\n").nth(1))
            .unwrap_or("")
            .lines()
            .take_while(|l| !l.starts_with("--"))
            .collect();
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(body.trim()) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    let start = text
        .find("http://127.0.0.1")
        .unwrap_or_else(|| panic!("no link in the mail: {}", &mail[..mail.len().min(3000)]));
    text[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .next()
        .unwrap()
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_refresh_and_cli_sso_against_synapse() {
    let smtp = common::Smtp::start();
    let synapse = Synapse::start_with(&[&smtp.port.to_string()]);
    let anon = Client::builder(&synapse.base).build().unwrap();

    // Registration with email verification: the SDK requests the token,
    // the link is followed, poll() completes the stage.
    let (c1, c2) = (anon.clone(), anon.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<StageStatus>();
    let ia = InteractiveAuth::builder(
        move |auth, _| {
            let c = c1.clone();
            Box::pin(async move {
                c.register(json!({"username": "mailuser", "password": "pw"}), auth)
                    .await
            })
        },
        move |_, status| {
            let _ = tx.send(status.clone());
        },
    )
    .inputs(gatehouse_client::AuthInputs {
        email_address: Some("mailuser@example.org".into()),
        ..Default::default()
    })
    .request_email_token(move |email, secret, attempt, _| {
        let c = c2.clone();
        Box::pin(async move {
            Ok(c.request_email_token(
                gatehouse_client::TokenPurpose::Register,
                &email,
                &secret,
                attempt,
                None,
            )
            .await?
            .sid)
        })
    })
    .build();
    let runner = ia.clone();
    let done = tokio::spawn(async move { runner.attempt_auth().await });
    let status = rx.recv().await.unwrap();
    assert!(status.email_sid.is_some(), "{status:?}");
    let link = synapse_link(&smtp.wait_for_raw(1));
    let clicked = reqwest::get(&link).await.unwrap();
    assert!(
        clicked.status().is_success(),
        "{link}: {}",
        clicked.status()
    );
    ia.poll().await;
    let registered = tokio::time::timeout(Duration::from_secs(20), done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(registered["user_id"], "@mailuser:localhost");

    // Automatic refresh: Synapse's access tokens live 10 s here; after that
    // a request gets 401 M_UNKNOWN_TOKEN soft_logout and the SDK refreshes.
    let r = anon
        .login_request(
            LoginRequest::password(UserIdentifier::user("mailuser"), "pw").refresh_token(true),
        )
        .await
        .unwrap();
    let changed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = changed.clone();
    let client = Client::builder(&synapse.base)
        .session(r.session())
        .refresh_margin(Duration::ZERO)
        .on_session_changed(move |_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(
        client.whoami().await.unwrap().user_id,
        "@mailuser:localhost"
    );
    assert_eq!(
        changed.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "refreshed once, by itself"
    );

    // The SSO callback on loopback (what `gatehouse client login --sso`
    // waits on): a login token — here from /login/get_token — arrives there
    // as the homeserver's redirect would bring it, and logs in.
    let callback = gatehouse_client::sso::SsoCallback::bind().await.unwrap();
    let url = client.sso_login_url(
        callback.url(),
        gatehouse_client::SsoKind::Sso,
        None,
        Some(gatehouse_client::SsoAction::Login),
    );
    assert!(
        url.starts_with(&format!(
            "{}/_matrix/client/v3/login/sso/redirect?redirectUrl=",
            synapse.base
        )),
        "{url}"
    );
    let redirect = callback.url().to_owned();
    let waiting = tokio::spawn(callback.login_token());
    let c = client.clone();
    let token = uia(
        move |auth| {
            let c = c.clone();
            Box::pin(async move {
                c.login_token(auth)
                    .await
                    .map(|t| json!({"t": t.login_token}))
            })
        },
        "mailuser",
        "pw",
    )
    .await
    .unwrap();
    // An idle connection (browsers open spare ones) does not hold it up.
    let parsed = url::Url::parse(&redirect).unwrap();
    let _idle =
        std::net::TcpStream::connect((parsed.host_str().unwrap(), parsed.port().unwrap())).unwrap();
    let back = reqwest::get(format!(
        "{redirect}?loginToken={}",
        token["t"].as_str().unwrap()
    ))
    .await
    .unwrap();
    assert!(back.status().is_success());
    let caught = waiting.await.unwrap().unwrap();
    let via_sso = anon
        .login_request(LoginRequest::token(caught))
        .await
        .unwrap();
    assert_eq!(via_sso.user_id, "@mailuser:localhost");

    // This Synapse has no SSO: the CLI says so at once, naming what it
    // offers, instead of printing a URL that 404s and waiting 10 minutes.
    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new(common::BIN)
        .args(["client", "login", "--sso", "--homeserver", &synapse.base])
        .env("GATEHOUSE_CLIENT_DIR", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("does not offer m.login.sso") && said.contains("m.login.password"),
        "{said}"
    );
}
