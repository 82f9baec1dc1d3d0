//! The email and phone UIA stages' fallback pages
//! (`/_matrix/client/v3/auth/{stage}/fallback/web`), which a person
//! completes over plain HTTP.

mod common;

use std::sync::{Arc, Mutex};

use common::{Html, Server, Smtp, link_in, open_link, s};
use serde_json::{Value, json};

const REG: &str = "/_matrix/client/v3/register";
const EMAIL: &str = "m.login.email.identity";
const MSISDN: &str = "m.login.msisdn";
/// The cookie a fallback page keeps its validation in.
const KEPT: &str = "gatehouse_fallback_3pid";

fn stage_page(stage: &str) -> String {
    format!("/_matrix/client/v3/auth/{stage}/fallback/web")
}

/// POST one step of `stage`'s page for UIA `session`: `step` and its fields.
async fn step(
    server: &Server,
    stage: &str,
    cookie: Option<&str>,
    session: &str,
    step: &str,
    fields: &[(&str, &str)],
) -> Html {
    let mut form = vec![("session", session), ("step", step)];
    form.extend_from_slice(fields);
    server.post_form(&stage_page(stage), cookie, &form).await
}

/// A server that registers through `stage` alone, with `settings`.
fn registering_through(stage: &str, mut settings: Vec<(&'static str, String)>) -> Server {
    settings.push(("GATEHOUSE_REGISTRATION__ENABLED", "true".into()));
    settings.push(("GATEHOUSE_REGISTRATION__FLOWS", format!(r#"[["{stage}"]]"#)));
    Server::start_public(settings)
}

/// Start registering with `body`: the UIA session.
async fn uia_session(server: &Server, body: &Value) -> String {
    let (status, c) = server.post(REG, body.clone()).await;
    assert_eq!(status, 401, "{c}");
    s(&c, "session")
}

/// Finish registering with `body`, the stage done, by just the session.
async fn finish_registration(server: &Server, mut body: Value, session: &str) {
    body["auth"] = json!({"session": session});
    let (status, v) = server.post(REG, body).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn the_email_page_sends_the_link_and_completes_the_stage() {
    let smtp = Smtp::start();
    let server = registering_through(EMAIL, smtp.settings());
    let body = json!({"username": "mailer", "password": "pw"});
    let session = uia_session(&server, &body).await;
    let url = format!("{}?session={session}", stage_page(EMAIL));

    // The person enters an address; there is nothing about sid or secrets.
    let page = server.page(&url, None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<label for=\"email\">Email address</label>")
            && page
                .body
                .contains("inputmode=\"email\" spellcheck=\"false\" autocapitalize=\"none\" id=\"email\" name=\"email\"")
            && !page.body.contains("client_secret"),
        "{}",
        page.body
    );
    let bad = step(
        &server,
        EMAIL,
        None,
        &session,
        "send",
        &[("email", "not-an-address")],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body
            .contains("role=\"alert\">That is not an email address.")
            && bad
                .body
                .contains("aria-describedby=\"message\" aria-invalid=\"true\""),
        "{}",
        bad.body
    );
    let sent = step(
        &server,
        EMAIL,
        None,
        &session,
        "send",
        &[("email", "Web.User@Example.org")],
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(
        sent.body
            .contains("We sent a link to <strong>web.user@example.org</strong>"),
        "{}",
        sent.body
    );
    let kept = sent.cookie(KEPT).expect("the validation, kept");
    assert!(kept.starts_with(&format!("{session}:")), "{kept}");
    let set = sent.header("set-cookie");
    assert!(
        set.contains("HttpOnly")
            && set.contains("Path=/_matrix/client/v3/auth/m.login.email.identity/fallback/web"),
        "{set}"
    );
    let cookie = format!("{KEPT}={kept}");
    let mail = smtp.wait_for(1);
    assert!(mail.contains("To: web.user@example.org"), "{mail}");

    // Back on the page (say, after a reload), it waits for the link.
    let waiting = server.page(&url, Some(&cookie)).await;
    assert!(
        waiting.body.contains("I have opened the link"),
        "{}",
        waiting.body
    );

    // Too early: the link is not opened yet.
    let early = step(&server, EMAIL, Some(&cookie), &session, "check", &[]).await;
    assert_eq!(early.status, 401);
    assert!(
        early
            .body
            .contains("role=\"alert\">The link has not been opened yet."),
        "{}",
        early.body
    );
    // Another browser (no cookie) cannot finish it.
    let elsewhere = step(&server, EMAIL, None, &session, "check", &[]).await;
    assert_eq!(elsewhere.status, 400);
    assert!(!elsewhere.body.contains("authDone"));

    assert_eq!(open_link(&server, &link_in(&mail)).await.0, 200);
    let done = step(&server, EMAIL, Some(&cookie), &session, "check", &[]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body.contains("window.onAuthDone()") && done.body.contains("postMessage(\"authDone\""),
        "{}",
        done.body
    );
    assert_eq!(done.cookie(KEPT), Some(String::new()), "forgotten");

    // The client finishes with just the session; the address is the account's.
    finish_registration(&server, body, &session).await;
    let (status, _) = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "web.user@example.org"}, "password": "pw"}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_email_page_of_a_signed_in_user_takes_only_their_address() {
    let smtp = Smtp::start();
    let mut settings = smtp.settings();
    settings.push(("GATEHOUSE_UIA__FLOWS", format!(r#"[["{EMAIL}"]]"#)));
    let server = Server::start_public(settings);
    server.create_user("carol", "pw", &["--email", "carol@example.org"]);
    let token = server.access_token("carol", "pw").await;
    let path = "/_matrix/client/v3/account/password";
    let (status, c) = server
        .post_auth(path, &token, json!({"new_password": "new"}))
        .await;
    assert_eq!(status, 401, "{c}");
    let session = s(&c, "session");
    let other = step(
        &server,
        EMAIL,
        None,
        &session,
        "send",
        &[("email", "someone@example.org")],
    )
    .await;
    assert_eq!(other.status, 400);
    assert!(
        other
            .body
            .contains("That address is not linked to your account."),
        "{}",
        other.body
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        smtp.messages().is_empty(),
        "nothing was sent to someone else"
    );
    let sent = step(
        &server,
        EMAIL,
        None,
        &session,
        "send",
        &[("email", "carol@example.org")],
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let cookie = sent.cookie_header(KEPT);
    let mail = smtp.wait_for(1);
    // Worded for what it is: a signed-in user confirming, not a reset.
    assert!(mail.contains("asked to confirm it is you"), "{mail}");
    assert!(!mail.contains("reset the password"), "{mail}");
    assert_eq!(open_link(&server, &link_in(&mail)).await.0, 200);
    let done = step(&server, EMAIL, Some(&cookie), &session, "check", &[]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let (status, v) = server
        .post_auth(
            path,
            &token,
            json!({"new_password": "new", "auth": {"session": session}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

/// An SMS webhook recording what it is asked to send.
async fn sms_recorder() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(body);
                axum::Json(json!({"ok": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// The phone page's first step: send a code to a UK number in `country`.
async fn send_phone(server: &Server, session: &str, country: &str) -> Html {
    let fields = [("country", country), ("phone", "07400 123456")];
    step(server, MSISDN, None, session, "send", &fields).await
}

/// The phone page's second step: enter `code`.
async fn enter_code(server: &Server, session: &str, cookie: &str, code: &str) -> Html {
    step(
        server,
        MSISDN,
        Some(cookie),
        session,
        "code",
        &[("code", code)],
    )
    .await
}

#[tokio::test]
async fn the_phone_page_sends_a_code_and_completes_the_stage() {
    let (hook, seen) = sms_recorder().await;
    let server = registering_through(
        MSISDN,
        vec![
            ("GATEHOUSE_SMS__ENABLED", "true".into()),
            ("GATEHOUSE_SMS__WEBHOOK_URL", hook),
        ],
    );
    let body = json!({"username": "texter", "password": "pw"});
    let session = uia_session(&server, &body).await;
    let page = server
        .page(&format!("{}?session={session}", stage_page(MSISDN)), None)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("<label for=\"country\">Country code</label>")
            && page
                .body
                .contains("<label for=\"phone\">Phone number</label>")
            && page.body.contains("inputmode=\"tel\" id=\"phone\""),
        "{}",
        page.body
    );
    let no_country = send_phone(&server, &session, "ZZ").await;
    assert_eq!(no_country.status, 400);
    assert!(
        no_country
            .body
            .contains("aria-describedby=\"message country-hint\" aria-invalid=\"true\""),
        "{}",
        no_country.body
    );
    let sent = send_phone(&server, &session, "GB").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(
        sent.body
            .contains("We sent a code by text message to <strong>+447400123456</strong>"),
        "{}",
        sent.body
    );
    let cookie = sent.cookie_header(KEPT);
    let sms = seen.lock().unwrap()[0].clone();
    assert_eq!(sms["to"], "+447400123456");
    let code: String = sms["body"]
        .as_str()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 6, "{sms}");
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    let wrong = enter_code(&server, &session, &cookie, wrong_code).await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("role=\"alert\">That code is not right")
            && wrong.body.contains("id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus aria-describedby=\"message\" aria-invalid=\"true\""),
        "{}",
        wrong.body
    );
    let done = enter_code(&server, &session, &cookie, &code).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("window.onAuthDone()"), "{}", done.body);
    finish_registration(&server, body, &session).await;
}
