//! Fallback pages over plain HTTP (`interop/js/test/fallback-browser.test.js`
//! drives the same pages in a real Chromium).

mod common;

use common::{Server, Smtp, free_port, link_in, s};
use serde_json::json;

async fn page(server: &Server, path: &str) -> (u16, String, String) {
    let resp = server.http.get(server.url(path)).send().await.unwrap();
    let csp = resp
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status().as_u16(), csp, resp.text().await.unwrap())
}

async fn submit(server: &Server, stage: &str, form: &[(&str, &str)]) -> (u16, String) {
    let resp = server
        .http
        .post(server.url(&format!("/_matrix/client/v3/auth/{stage}/fallback/web")))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn password_fallback_completes_the_stage() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    let path = "/_matrix/client/v3/account/password";
    let (_, c) = server
        .post_auth(path, &at, json!({"new_password": "new"}))
        .await;
    let session = s(&c, "session");
    let (status, csp, html) = page(
        &server,
        &format!("/_matrix/client/v3/auth/m.login.password/fallback/web?session={session}"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        html.contains("type=\"password\"") && html.contains("@alice:localhost"),
        "{html}"
    );
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a nonce in the CSP");
    assert!(
        csp.starts_with("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        html.contains(&format!("nonce=\"{nonce}\"")),
        "inline style carries the nonce"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    let (status, html) = submit(
        &server,
        "m.login.password",
        &[("session", &session), ("password", "wrong")],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        html.contains("Invalid username or password") && !html.contains("authDone"),
        "{html}"
    );
    let (status, html) = submit(
        &server,
        "m.login.password",
        &[("session", &session), ("password", "pw")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        html.contains("window.onAuthDone()") && html.contains("postMessage(\"authDone\""),
        "{html}"
    );
    // The client finishes with just the session.
    let done = server
        .post_auth(
            path,
            &at,
            json!({"new_password": "new", "auth": {"session": session}}),
        )
        .await;
    assert_eq!(done, (200, json!({})));
    server.login("alice", "new", json!({})).await;
    // The session is spent: its page is gone.
    let (status, _, _) = page(
        &server,
        &format!("/_matrix/client/v3/auth/m.login.password/fallback/web?session={session}"),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn fallback_pages_refuse_what_they_cannot_serve() {
    let server = Server::start(&[]);
    let (status, _, _) = page(
        &server,
        "/_matrix/client/v3/auth/m.login.carrier_pigeon/fallback/web?session=x",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, html) = page(
        &server,
        "/_matrix/client/v3/auth/m.login.password/fallback/web",
    )
    .await;
    assert_eq!(status, 400);
    assert!(html.contains("missing"), "{html}");
    let (status, _, _) = page(
        &server,
        "/_matrix/client/v3/auth/m.login.password/fallback/web?session=nope",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = submit(
        &server,
        "m.login.password",
        &[("session", "nope"), ("password", "x")],
    )
    .await;
    assert_eq!(status, 400);
    // A malformed query is an HTML error page too, with the strict CSP.
    let (status, csp, html) = page(
        &server,
        "/_matrix/client/v3/auth/m.login.password/fallback/web?session=a&session=b",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        csp.contains("default-src 'none'") && html.contains("<html"),
        "{html}"
    );
    // A stage the session's flows do not ask for gets no form.
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    let (_, c) = server
        .post_auth(
            "/_matrix/client/v3/account/password",
            &at,
            json!({"new_password": "x"}),
        )
        .await;
    let (status, _, html) = page(
        &server,
        &format!(
            "/_matrix/client/v3/auth/m.login.registration_token/fallback/web?session={}",
            s(&c, "session")
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert!(!html.contains("<form"), "{html}");
}

#[tokio::test]
async fn token_terms_recaptcha_and_email_fallbacks() {
    let smtp = Smtp::start();
    let port = free_port();
    let mut settings: Vec<(&str, String)> = smtp.settings();
    settings.extend([
        ("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}")),
        ("GATEHOUSE_PUBLIC_BASEURL", format!("http://127.0.0.1:{port}")),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.registration_token", "m.login.terms", "m.login.email.identity"], ["m.login.recaptcha"]]"#.into(),
        ),
        ("GATEHOUSE_UIA__TERMS__PRIVACY__VERSION", "\"2\"".into()),
        ("GATEHOUSE_UIA__TERMS__PRIVACY__LANGUAGES", r#"{en = {name = "Privacy notice", url = "https://example.org/privacy"}}"#.into()),
        ("GATEHOUSE_RECAPTCHA__ENABLED", "true".into()),
        ("GATEHOUSE_RECAPTCHA__SITE_KEY", "site-key-123".into()),
        ("GATEHOUSE_RECAPTCHA__SECRET_KEY", "secret".into()),
        ("GATEHOUSE_RECAPTCHA__SITEVERIFY_URL", "http://127.0.0.1:9/unreachable".into()),
    ]);
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start(&pairs);
    server.create_registration_token("tok");
    let body = json!({"username": "webuser", "password": "pw"});
    let (_, c) = server
        .post("/_matrix/client/v3/register", body.clone())
        .await;
    let session = s(&c, "session");
    let url =
        |stage: &str| format!("/_matrix/client/v3/auth/{stage}/fallback/web?session={session}");

    let (status, csp, html) = page(&server, &url("m.login.recaptcha")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("data-sitekey=\"site-key-123\"") && csp.contains("https://www.recaptcha.net"),
        "{csp}"
    );
    let (status, html) = submit(
        &server,
        "m.login.recaptcha",
        &[("session", &session), ("g-recaptcha-response", "x")],
    )
    .await;
    assert_eq!(
        status, 401,
        "siteverify unreachable means not verified: {html}"
    );

    let (status, html) = submit(
        &server,
        "m.login.registration_token",
        &[("session", &session), ("token", "tok")],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let (status, _, html) = page(&server, &url("m.login.terms")).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Privacy notice") && html.contains("version 2"),
        "{html}"
    );
    let (status, _) = submit(&server, "m.login.terms", &[("session", &session)]).await;
    assert_eq!(status, 400, "the box must be ticked");
    let (status, _) = submit(
        &server,
        "m.login.terms",
        &[("session", &session), ("accept", "yes")],
    )
    .await;
    assert_eq!(status, 200);

    let (_, t) = server
        .post(
            "/_matrix/client/v3/register/email/requestToken",
            json!({"client_secret": "cs", "email": "web@example.org", "send_attempt": 1}),
        )
        .await;
    let sid = s(&t, "sid");
    let (status, _) = submit(
        &server,
        "m.login.email.identity",
        &[
            ("session", &session),
            ("sid", &sid),
            ("client_secret", "cs"),
        ],
    )
    .await;
    assert_eq!(status, 401, "not validated yet");
    server
        .http
        .get(link_in(&smtp.wait_for(1)))
        .send()
        .await
        .unwrap();
    let (status, html) = submit(
        &server,
        "m.login.email.identity",
        &[
            ("session", &session),
            ("sid", &sid),
            ("client_secret", "cs"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let mut done = body;
    done["auth"] = json!({"session": session});
    let (status, v) = server.post("/_matrix/client/v3/register", done).await;
    assert_eq!(status, 200, "{v}");
}
