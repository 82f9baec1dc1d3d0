//! Email (through a real SMTP server), SMS (through a real HTTP webhook)
//! and reCAPTCHA (against a siteverify endpoint) inside UIA.

mod common;

use std::sync::{Arc, Mutex};

use common::{Server, Smtp, assert_error, link_in, open_link, s};
use serde_json::{Value, json};

const REG: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn registration_with_a_validated_email() {
    let smtp = Smtp::start();
    let mut settings = smtp.settings();
    settings.push(("GATEHOUSE_REGISTRATION__ENABLED", "true".into()));
    settings.push((
        "GATEHOUSE_REGISTRATION__FLOWS",
        r#"[["m.login.email.identity"]]"#.into(),
    ));
    let server = Server::start_public(settings);
    let ask =
        json!({"client_secret": "secret-1", "email": "New.User@Example.org", "send_attempt": 1});
    let (status, first) = server
        .post(
            "/_matrix/client/v3/register/email/requestToken",
            ask.clone(),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let sid = s(&first, "sid");
    assert!(
        first["submit_url"]
            .as_str()
            .unwrap()
            .ends_with("/_gatehouse/threepid/submit_token")
    );
    // The same send_attempt again: same session, no second email.
    let (_, again) = server
        .post("/_matrix/client/v3/register/email/requestToken", ask)
        .await;
    assert_eq!(again["sid"], first["sid"]);
    let mail = smtp.wait_for(1);
    assert!(
        mail.contains("To: new.user@example.org"),
        "canonical address: {mail}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(smtp.messages().len(), 1, "send_attempt is idempotent");

    let body = json!({"username": "newuser", "password": "pw"});
    let (status, c) = server.post(REG, body.clone()).await;
    assert_eq!(status, 401);
    let mut step = body.clone();
    step["auth"] = json!({"type": "m.login.email.identity", "session": s(&c, "session"), "threepid_creds": {"sid": sid, "client_secret": "secret-1"}});
    let (status, v) = server.post(REG, step.clone()).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_UNAUTHORIZED")),
        "not clicked yet: {v}"
    );
    // A wrong token in the link is refused; the real link validates.
    let link = link_in(&mail);
    assert!(link.starts_with(&server.base), "{link}");
    let (status, _) = open_link(&server, &link.replace("token=", "token=x")).await;
    assert_eq!(status, 400);
    let (status, page) = open_link(&server, &link).await;
    assert_eq!(status, 200);
    assert!(page.contains("confirmed"), "{page}");
    let (status, done) = server.post(REG, step).await;
    assert_eq!(status, 200, "{done}");
    let (status, v) = server
        .post("/_matrix/client/v3/login", json!({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "new.user@example.org"}, "password": "pw"}))
        .await;
    assert_eq!(
        (status, v["user_id"].as_str()),
        (200, Some("@newuser:localhost")),
        "the email is bound"
    );
    // Asking again for a bound address is refused.
    let taken = server
        .post(
            "/_matrix/client/v3/register/email/requestToken",
            json!({"client_secret": "s2", "email": "new.user@example.org", "send_attempt": 1}),
        )
        .await;
    assert_error(&taken, 400, "M_THREEPID_IN_USE");
}

#[tokio::test]
async fn forgotten_password_is_reset_by_email() {
    let smtp = Smtp::start();
    let server = Server::start_public(smtp.settings());
    server.create_user("alice", "old", &["--email", "alice@example.org"]);
    let old_session = server.login("alice", "old", json!({})).await;
    let unknown = server
        .post(
            "/_matrix/client/v3/account/password/email/requestToken",
            json!({"client_secret": "c", "email": "nobody@example.org", "send_attempt": 1}),
        )
        .await;
    assert_error(&unknown, 400, "M_THREEPID_NOT_FOUND");
    let (status, t) = server
        .post(
            "/_matrix/client/v3/account/password/email/requestToken",
            json!({"client_secret": "c", "email": "Alice@example.org", "send_attempt": 1}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    let mail = smtp.wait_for(1);
    assert!(mail.contains("reset the password"), "{mail}");
    let body = json!({"new_password": "new"});
    let (status, c) = server
        .post("/_matrix/client/v3/account/password", body.clone())
        .await;
    assert_eq!(status, 401, "{c}");
    assert_eq!(c["flows"], json!([{"stages": ["m.login.email.identity"]}]));
    assert_eq!(open_link(&server, &link_in(&mail)).await.0, 200);
    let mut step = body;
    step["auth"] = json!({"type": "m.login.email.identity", "session": s(&c, "session"), "threepid_creds": {"sid": s(&t, "sid"), "client_secret": "c"}});
    assert_eq!(
        server
            .post("/_matrix/client/v3/account/password", step)
            .await,
        (200, json!({}))
    );
    assert_eq!(
        server.whoami(&s(&old_session, "access_token")).await.0,
        401,
        "sessions end on reset"
    );
    server.login("alice", "new", json!({})).await;
}

#[tokio::test]
async fn adding_an_email_to_an_account() {
    let smtp = Smtp::start();
    let server = Server::start_public(smtp.settings());
    server.create_user("alice", "pw", &[]);
    let at = server.access_token("alice", "pw").await;
    let (status, t) = server
        .post_auth(
            "/_matrix/client/v3/account/3pid/email/requestToken",
            &at,
            json!({"client_secret": "c", "email": "alice@example.org", "send_attempt": 1}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    let link = link_in(&smtp.wait_for(1));
    let add = json!({"client_secret": "c", "sid": s(&t, "sid")});
    // Before validation, after UIA: refused.
    let (_, c) = server
        .post_auth("/_matrix/client/v3/account/3pid/add", &at, add.clone())
        .await;
    let mut with_auth = add.clone();
    with_auth["auth"] = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw", "session": s(&c, "session")});
    assert_error(
        &server
            .post_auth(
                "/_matrix/client/v3/account/3pid/add",
                &at,
                with_auth.clone(),
            )
            .await,
        400,
        "M_THREEPID_AUTH_FAILED",
    );
    assert_eq!(open_link(&server, &link).await.0, 200);
    // The session was not spent by the failure: the very same request,
    // retried once the link was clicked, goes through (its completed
    // password stage is not checked again).
    assert_eq!(
        server
            .post_auth(
                "/_matrix/client/v3/account/3pid/add",
                &at,
                with_auth.clone()
            )
            .await,
        (200, json!({}))
    );
    // Succeeded, it is spent.
    assert_error(
        &server
            .post_auth("/_matrix/client/v3/account/3pid/add", &at, with_auth)
            .await,
        403,
        "M_FORBIDDEN",
    );
    let (_, list) = server
        .get("/_matrix/client/v3/account/3pid", Some(&at))
        .await;
    assert_eq!(list["threepids"][0]["address"], "alice@example.org");
    // Now alice can re-authenticate by email too.
    let (_, c) = server
        .post_auth("/_matrix/client/v3/account/deactivate", &at, json!({}))
        .await;
    assert_eq!(
        c["flows"],
        json!([{"stages": ["m.login.password"]}, {"stages": ["m.login.email.identity"]}])
    );
}

#[tokio::test]
async fn the_email_link_redirects_to_an_allowed_next_link() {
    let smtp = Smtp::start();
    let mut settings = smtp.settings();
    settings.push((
        "GATEHOUSE_EMAIL__NEXT_LINK_DOMAINS",
        r#"["app.example.org"]"#.into(),
    ));
    let server = Server::start_public(settings);
    const ASK: &str = "/_matrix/client/v3/register/email/requestToken";
    let ask = |next: &str| json!({"client_secret": "c", "email": "bob@example.org", "send_attempt": 1, "next_link": next});
    for bad in [
        "javascript:alert(1)",
        "/relative/path",
        "https://evil.example.com/x",
    ] {
        assert_error(&server.post(ASK, ask(bad)).await, 400, "M_INVALID_PARAM");
    }
    let next = "https://app.example.org/welcome?from=mail";
    let (status, t) = server.post(ASK, ask(next)).await;
    assert_eq!(status, 200, "{t}");
    let link = link_in(&smtp.wait_for(1));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let wrong = no_redirects
        .get(link.replace("token=", "token=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400, "a wrong link shows the error page");
    let right = no_redirects.get(&link).send().await.unwrap();
    assert!(right.status().is_redirection(), "{}", right.status());
    assert_eq!(right.headers()["location"], next);
    let (_, done) = server
        .post(
            "/_gatehouse/threepid/submit_token",
            json!({"sid": s(&t, "sid"), "client_secret": "c", "token": "nope"}),
        )
        .await;
    assert_eq!(done, json!({"success": false}));
}

/// An HTTP endpoint on loopback that records what it receives.
async fn recorder(reply: Value) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            let reply = reply.clone();
            async move {
                store.lock().unwrap().push(body);
                axum::Json(reply)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn registration_with_an_sms_code() {
    let (hook, seen) = recorder(json!({"ok": true})).await;
    let server = Server::start_public(vec![
        ("GATEHOUSE_SMS__ENABLED", "true".into()),
        ("GATEHOUSE_SMS__WEBHOOK_URL", hook),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.msisdn"]]"#.into(),
        ),
    ]);
    let (status, t) = server
        .post("/_matrix/client/v3/register/msisdn/requestToken", json!({"client_secret": "c", "country": "GB", "phone_number": "07400 123456", "send_attempt": 1}))
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["msisdn"], "447400123456");
    let sent: Value = serde_json::from_str(&seen.lock().unwrap()[0]).unwrap();
    assert_eq!(sent["to"], "+447400123456");
    let code: String = sent["body"]
        .as_str()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 6, "{sent}");
    let submit = s(&t, "submit_url");
    let wrong = server
        .send(
            server
                .http
                .post(&submit)
                .json(&json!({"sid": s(&t, "sid"), "client_secret": "c", "token": "000000x"})),
        )
        .await;
    assert_eq!(wrong, (200, json!({"success": false})));
    let right = server
        .send(
            server
                .http
                .post(&submit)
                .json(&json!({"sid": s(&t, "sid"), "client_secret": "c", "token": code})),
        )
        .await;
    assert_eq!(right, (200, json!({"success": true})));
    let body = json!({"username": "phoneuser", "password": "pw"});
    let (_, c) = server.post(REG, body.clone()).await;
    let mut step = body;
    step["auth"] = json!({"type": "m.login.msisdn", "session": s(&c, "session"), "threepid_creds": {"sid": s(&t, "sid"), "client_secret": "c"}});
    let (status, v) = server.post(REG, step).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = server
        .post("/_matrix/client/v3/login", json!({"type": "m.login.password", "identifier": {"type": "m.id.phone", "country": "GB", "phone": "07400123456"}, "password": "pw"}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sms_codes_cannot_be_guessed() {
    let (hook, seen) = recorder(json!({"ok": true})).await;
    let server = Server::start_public(vec![
        ("GATEHOUSE_SMS__ENABLED", "true".into()),
        ("GATEHOUSE_SMS__WEBHOOK_URL", hook),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
    ]);
    let ask = |attempt: u64| json!({"client_secret": "c", "country": "GB", "phone_number": "07400 654321", "send_attempt": attempt});
    let last_code = || -> String {
        let sent: Value = serde_json::from_str(seen.lock().unwrap().last().unwrap()).unwrap();
        sent["body"]
            .as_str()
            .unwrap()
            .chars()
            .filter(char::is_ascii_digit)
            .collect()
    };
    let (_, t) = server
        .post("/_matrix/client/v3/register/msisdn/requestToken", ask(1))
        .await;
    let code = last_code();
    let submit = |token: &str| {
        server.send(
            server
                .http
                .post(s(&t, "submit_url"))
                .json(&json!({"sid": s(&t, "sid"), "client_secret": "c", "token": token})),
        )
    };
    let wrong = if code == "000000" { "111111" } else { "000000" };
    // Twenty wrong guesses at once: checked and counted atomically, so they
    // cannot all slip in under the limit of five.
    let mut guesses = Vec::new();
    for _ in 0..20 {
        let request = server
            .http
            .post(s(&t, "submit_url"))
            .json(&json!({"sid": s(&t, "sid"), "client_secret": "c", "token": wrong}));
        guesses.push(tokio::spawn(async move {
            request.send().await.unwrap().json::<Value>().await.unwrap()
        }));
    }
    for guess in guesses {
        assert_eq!(guess.await.unwrap(), json!({"success": false}));
    }
    assert_eq!(
        submit(&code).await,
        (200, json!({"success": false})),
        "after five wrong codes even the right one is refused"
    );
    // A new send_attempt sends a new code for the same session.
    let (_, again) = server
        .post("/_matrix/client/v3/register/msisdn/requestToken", ask(2))
        .await;
    assert_eq!(again["sid"], t["sid"]);
    assert_eq!(submit(&last_code()).await, (200, json!({"success": true})));
}

#[tokio::test]
async fn recaptcha_is_verified_against_siteverify() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/siteverify",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                let ok = body.contains("response=good") && body.contains("secret=shh");
                store.lock().unwrap().push(body);
                axum::Json(json!({"success": ok}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/siteverify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = Server::start_public(vec![
        ("GATEHOUSE_RECAPTCHA__ENABLED", "true".into()),
        ("GATEHOUSE_RECAPTCHA__SITE_KEY", "public-site-key".into()),
        ("GATEHOUSE_RECAPTCHA__SECRET_KEY", "shh".into()),
        ("GATEHOUSE_RECAPTCHA__SITEVERIFY_URL", url),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.recaptcha"]]"#.into(),
        ),
    ]);
    let body = json!({"username": "human", "password": "pw"});
    let (_, c) = server.post(REG, body.clone()).await;
    assert_eq!(
        c["params"]["m.login.recaptcha"],
        json!({"public_key": "public-site-key"})
    );
    let mut step = body.clone();
    step["auth"] =
        json!({"type": "m.login.recaptcha", "session": s(&c, "session"), "response": "bad"});
    let (status, v) = server.post(REG, step.clone()).await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (401, Some("M_CAPTCHA_INVALID"))
    );
    step["auth"]["response"] = json!("good");
    assert_eq!(server.post(REG, step).await.0, 200);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "both answers were checked at siteverify"
    );
}

#[tokio::test]
async fn registration_and_token_requests_are_rate_limited() {
    let smtp = Smtp::start();
    let mut settings = smtp.settings();
    for (k, v) in [
        ("GATEHOUSE_TRUST_X_FORWARDED_FOR", "true"),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
        (
            "GATEHOUSE_RATE_LIMITS__REGISTRATION_PER_ADDRESS__PER_SECOND",
            "0.001",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__REGISTRATION_PER_ADDRESS__BURST_COUNT",
            "2",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__THREEPID_VALIDATION__PER_SECOND",
            "0.001",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__THREEPID_VALIDATION__BURST_COUNT",
            "3",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__REGISTRATION_TOKEN_CHECKS__PER_SECOND",
            "0.001",
        ),
        (
            "GATEHOUSE_RATE_LIMITS__REGISTRATION_TOKEN_CHECKS__BURST_COUNT",
            "3",
        ),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.dummy"], ["m.login.registration_token"]]"#,
        ),
    ] {
        settings.push((k, v.into()));
    }
    let server = Server::start_public(settings);
    let from = |ip: &str, path: &str, body: Value| {
        server
            .http
            .post(server.url(path))
            .header("X-Forwarded-For", ip)
            .json(&body)
    };

    // Registration: UIA round trips cost nothing, created accounts do.
    for _ in 0..5 {
        let (status, _) = server
            .send(from(
                "10.0.0.1",
                REG,
                json!({"username": "x", "password": "pw"}),
            ))
            .await;
        assert_eq!(status, 401, "a challenge is not a registration");
    }
    for name in ["first", "second"] {
        let (_, c) = server
            .send(from(
                "10.0.0.1",
                REG,
                json!({"username": name, "password": "pw"}),
            ))
            .await;
        let done = json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy", "session": s(&c, "session")}});
        assert_eq!(server.send(from("10.0.0.1", REG, done)).await.0, 200);
    }
    let third = server
        .send(from(
            "10.0.0.1",
            REG,
            json!({"username": "third", "password": "pw"}),
        ))
        .await;
    assert_error(&third, 429, "M_LIMIT_EXCEEDED");
    assert!(third.1["retry_after_ms"].as_u64().unwrap() > 0);
    let (status, _) = server
        .send(from(
            "10.0.0.2",
            REG,
            json!({"username": "third", "password": "pw"}),
        ))
        .await;
    assert_eq!(status, 401, "another address is not held back");

    // Registration tokens: validity checks and token stages share a budget.
    let validity =
        |ip: &str| {
            server
                .http
                .get(server.url(
                    "/_matrix/client/v1/register/m.login.registration_token/validity?token=guess",
                ))
                .header("X-Forwarded-For", ip)
        };
    for _ in 0..2 {
        assert_eq!(
            server.send(validity("10.0.3.1")).await,
            (200, json!({"valid": false}))
        );
    }
    let (_, c) = server
        .send(from(
            "10.0.3.1",
            REG,
            json!({"username": "tok", "password": "pw"}),
        ))
        .await;
    let guess = json!({"username": "tok", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "guess", "session": s(&c, "session")}});
    assert_eq!(
        server.send(from("10.0.3.1", REG, guess.clone())).await.0,
        401
    );
    assert_error(
        &server.send(from("10.0.3.1", REG, guess)).await,
        429,
        "M_LIMIT_EXCEEDED",
    );
    assert_error(
        &server.send(validity("10.0.3.1")).await,
        429,
        "M_LIMIT_EXCEEDED",
    );

    // requestToken: per client address...
    const ASK: &str = "/_matrix/client/v3/register/email/requestToken";
    let ask = |email: &str| json!({"client_secret": "c", "email": email, "send_attempt": 1});
    for n in 1..=3 {
        let (status, v) = server
            .send(from("10.0.1.1", ASK, ask(&format!("u{n}@example.org"))))
            .await;
        assert_eq!(status, 200, "{v}");
    }
    assert_error(
        &server
            .send(from("10.0.1.1", ASK, ask("u4@example.org")))
            .await,
        429,
        "M_LIMIT_EXCEEDED",
    );
    // ...and per address mailed, whoever asks: u1 has had one message. A
    // repeated send_attempt sends nothing and costs nothing...
    assert_eq!(
        server
            .send(from("10.0.2.1", ASK, ask("u1@example.org")))
            .await
            .0,
        200
    );
    // ...but new requests (other clients, other secrets) do: two more.
    let fresh = |secret: &str| json!({"client_secret": secret, "email": "u1@example.org", "send_attempt": 1});
    for (ip, secret) in [("10.0.2.2", "s2"), ("10.0.2.3", "s3")] {
        assert_eq!(server.send(from(ip, ASK, fresh(secret))).await.0, 200);
    }
    assert_error(
        &server.send(from("10.0.2.4", ASK, fresh("s4"))).await,
        429,
        "M_LIMIT_EXCEEDED",
    );
    smtp.wait_for(5);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(smtp.messages().len(), 5, "u1..u3, then two more to u1");
}
