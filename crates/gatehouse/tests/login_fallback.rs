//! The login fallback page (`GET /_matrix/static/client/login/`) and the
//! email and phone UIA fallback pages a person completes, over plain HTTP
//! (`interop/js/test/login-fallback-browser.test.js` drives the login page
//! in a real Chromium).

mod common;

use std::sync::{Arc, Mutex};

use common::{Server, Smtp, link_in, s};
use serde_json::{Value, json};

const PAGE: &str = "/_matrix/static/client/login/";

/// A response as a page: status, headers and body.
struct Html {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Html {
    async fn of(resp: reqwest::Response) -> Self {
        Self {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// `name=value` of the cookies this response sets (value "" = deleted).
    fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| {
                let first = v.to_str().ok()?.split(';').next()?;
                let (k, v) = first.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .into_iter()
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// The value of hidden field `name` in the page.
    fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).unwrap_or_else(|| {
            panic!("no field {name} in {}", self.body);
        }) + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }

    /// The CSP nonce.
    fn nonce(&self) -> String {
        let csp = self.header("content-security-policy");
        csp.split("'nonce-")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .expect("a nonce in the CSP")
            .to_owned()
    }

    /// The login response the signed-in page hands to `onLogin`.
    fn login_response(&self) -> Option<Value> {
        let marker = "<script type=\"application/json\" id=\"login-response\">";
        let start = self.body.find(marker)? + marker.len();
        let end = self.body[start..].find("</script>")? + start;
        Some(serde_json::from_str(&self.body[start..end]).expect("JSON in the page"))
    }
}

async fn get(server: &Server, path: &str) -> Html {
    Html::of(server.http.get(server.url(path)).send().await.unwrap()).await
}

/// The form, as a browser shows it: its page, and the cookie it set.
async fn form(server: &Server, query: &str) -> (Html, String) {
    let page = get(server, &format!("{PAGE}{query}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie = page
        .cookie("gatehouse_login_csrf")
        .expect("a CSRF cookie with the form");
    (page, format!("gatehouse_login_csrf={cookie}"))
}

async fn post_form(
    server: &Server,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> Html {
    let mut req = server.http.post(server.url(path)).form(form);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    Html::of(req.send().await.unwrap()).await
}

/// How many devices (sessions) `user` has, seen through a fresh login.
async fn devices(server: &Server, user: &str, password: &str) -> usize {
    let token = server.access_token(user, password).await;
    let (status, list) = server.get("/_matrix/client/v3/devices", Some(&token)).await;
    assert_eq!(status, 200);
    // Not counting the session that looked.
    list["devices"].as_array().unwrap().len() - 1
}

#[tokio::test]
async fn the_page_is_a_strict_labelled_form() {
    let server = Server::start(&[]);
    let (page, _) = form(&server, "").await;
    assert!(
        page.header("content-type").starts_with("text/html"),
        "{}",
        page.header("content-type")
    );
    let csp = page.header("content-security-policy");
    assert!(
        csp.starts_with("default-src 'none'")
            && csp.contains("frame-ancestors 'none'")
            && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert_eq!(page.header("cache-control"), "no-store");
    let nonce = page.nonce();
    let html = &page.body;
    assert!(
        html.contains(&format!("<style nonce=\"{nonce}\">"))
            && html.contains(&format!("<script nonce=\"{nonce}\">")),
        "inline style and script carry the nonce: {html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets: {html}"
    );
    assert!(
        html.contains("<form method=\"post\" action=\"/_matrix/static/client/login/\">"),
        "{html}"
    );
    assert!(
        html.contains("<label for=\"user\">") && html.contains("id=\"user\" name=\"user\""),
        "{html}"
    );
    assert!(
        html.contains("<label for=\"password\">Password</label>")
            && html.contains("type=\"password\" id=\"password\" name=\"password\""),
        "{html}"
    );
    // The spec's hook exists from the start, for a client to replace.
    assert!(html.contains("window.matrixLogin"), "{html}");
    assert!(!html.contains("role=\"alert\""), "no error yet");
    // The CSRF token is in the form and in a strict cookie.
    let token = page.hidden("csrf");
    assert_eq!(page.cookie("gatehouse_login_csrf"), Some(token));
    let set = page.header("set-cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    // Without the trailing slash too.
    let bare = get(&server, PAGE.trim_end_matches('/')).await;
    assert_eq!(bare.status, 200);
    assert!(bare.body.contains("name=\"csrf\""));
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_with_the_error() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let (page, cookie) = form(&server, "").await;
    let answer = post_form(
        &server,
        PAGE,
        Some(&cookie),
        &[
            ("csrf", &page.hidden("csrf")),
            ("user", "alice"),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let html = &answer.body;
    assert!(
        html.contains("id=\"message\" role=\"alert\">Wrong username or password.</p>"),
        "{html}"
    );
    // The fields point at the error; the username is kept.
    assert!(
        html.contains("name=\"password\" autocomplete=\"current-password\" required autofocus aria-describedby=\"message\" aria-invalid=\"true\""),
        "{html}"
    );
    assert!(html.contains("value=\"alice\""), "{html}");
    assert!(answer.login_response().is_none(), "{html}");
    assert!(!html.contains("access_token"), "{html}");
    // A fresh token for the next try, which works.
    let again = post_form(
        &server,
        PAGE,
        Some(&format!(
            "gatehouse_login_csrf={}",
            answer.cookie("gatehouse_login_csrf").unwrap()
        )),
        &[
            ("csrf", &answer.hidden("csrf")),
            ("user", "alice"),
            ("password", "pw"),
        ],
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        devices(&server, "alice", "pw").await,
        1,
        "one session: the right password's"
    );

    // An unknown user answers the same; an empty name is pointed at.
    let (page, cookie) = form(&server, "").await;
    let unknown = post_form(
        &server,
        PAGE,
        Some(&cookie),
        &[
            ("csrf", &page.hidden("csrf")),
            ("user", "nobody"),
            ("password", "pw"),
        ],
    )
    .await;
    assert_eq!(unknown.status, 403);
    assert!(unknown.body.contains("Wrong username or password."));
    let (page, cookie) = form(&server, "").await;
    let empty = post_form(
        &server,
        PAGE,
        Some(&cookie),
        &[
            ("csrf", &page.hidden("csrf")),
            ("user", " "),
            ("password", "pw"),
        ],
    )
    .await;
    assert_eq!(empty.status, 400);
    assert!(
        empty.body.contains("Enter your username.")
            && empty.body.contains("name=\"user\" value=\"\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus aria-describedby=\"message\" aria-invalid=\"true\""),
        "{}",
        empty.body
    );
}

#[tokio::test]
async fn the_right_password_hands_the_login_response_to_on_login() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    // The spec's example: non-credential /login parameters in the query.
    let (page, cookie) = form(
        &server,
        "?device_id=GHTYAJCE&initial_device_display_name=Fallback%20%3Cphone%3E",
    )
    .await;
    assert_eq!(page.hidden("device_id"), "GHTYAJCE");
    assert_eq!(
        page.hidden("initial_device_display_name"),
        "Fallback &lt;phone&gt;",
        "escaped in the page"
    );
    let answer = post_form(
        &server,
        PAGE,
        Some(&cookie),
        &[
            ("csrf", &page.hidden("csrf")),
            ("user", "@alice:localhost"),
            ("password", "pw"),
            ("device_id", "GHTYAJCE"),
            ("initial_device_display_name", "Fallback <phone>"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), "no-store");
    assert!(
        answer
            .header("content-security-policy")
            .contains("frame-ancestors 'none'"),
        "the signed-in page is as strict"
    );
    let response = answer
        .login_response()
        .expect("the login response in the page");
    assert_eq!(response["user_id"], "@alice:localhost");
    assert_eq!(response["device_id"], "GHTYAJCE");
    assert_eq!(response["home_server"], "localhost");
    // The page's own (nonce'd) script calls the spec's function with it.
    let nonce = answer.nonce();
    let script = answer
        .body
        .split(&format!("<script nonce=\"{nonce}\">"))
        .nth(1)
        .expect("the page's script");
    assert!(
        script.contains("window.matrixLogin")
            && script.contains("onLogin.call(login, response)")
            && script.contains("getElementById(\"login-response\")"),
        "{script}"
    );
    assert!(
        !answer.body.contains("postMessage"),
        "the token goes to no other window"
    );
    assert!(
        answer
            .body
            .contains("You are signed in as <strong>@alice:localhost</strong>"),
        "{}",
        answer.body
    );
    // The form's token is spent.
    assert_eq!(answer.cookie("gatehouse_login_csrf"), Some(String::new()));

    // The access token works, for that device, with its display name.
    let token = s(&response, "access_token");
    let (status, me) = server.whoami(&token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_id"], "@alice:localhost");
    assert_eq!(me["device_id"], "GHTYAJCE");
    let (_, device) = server
        .get("/_matrix/client/v3/devices/GHTYAJCE", Some(&token))
        .await;
    assert_eq!(device["display_name"], "Fallback <phone>");

    // Asking for a refresh token, by bare localpart.
    let (page, cookie) = form(&server, "?refresh_token=true").await;
    let answer = post_form(
        &server,
        PAGE,
        Some(&cookie),
        &[
            ("csrf", &page.hidden("csrf")),
            ("user", "alice"),
            ("password", "pw"),
            ("refresh_token", &page.hidden("refresh_token")),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let response = answer.login_response().unwrap();
    assert!(response["refresh_token"].is_string(), "{response}");
    assert!(response["expires_in_ms"].is_u64(), "{response}");
}

#[tokio::test]
async fn email_addresses_sign_in_too() {
    let server = Server::start(&[]);
    server.create_user("bob", "pw", &["--email", "Bob@Example.org"]);
    let (page, cookie) = form(&server, "").await;
    let answer = post_form(
        &server,
        PAGE,
        Some(&cookie),
        &[
            ("csrf", &page.hidden("csrf")),
            ("user", "bob@example.org"),
            ("password", "pw"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.login_response().unwrap()["user_id"],
        "@bob:localhost"
    );
}

#[tokio::test]
async fn a_missing_or_forged_csrf_token_is_refused() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let (page, cookie) = form(&server, "").await;
    let token = page.hidden("csrf");
    let right = [("user", "alice"), ("password", "pw")];
    let with = |csrf: &str| {
        let mut f = vec![("csrf", csrf.to_owned())];
        f.extend(right.iter().map(|(k, v)| (*k, (*v).to_owned())));
        f
    };
    let refused = [
        // A cross-site form: no cookie, no token.
        post_form(&server, PAGE, None, &right).await,
        // The token without its cookie.
        post_form(&server, PAGE, None, &as_pairs(&with(&token))).await,
        // The cookie without the token.
        post_form(&server, PAGE, Some(&cookie), &right).await,
        // A token of the forger's own.
        post_form(
            &server,
            PAGE,
            Some(&cookie),
            &as_pairs(&with(&format!("{}x", &token[1..]))),
        )
        .await,
        // Both forged alike: a cookie of this page's is not one the forger can set.
        post_form(
            &server,
            PAGE,
            Some("gatehouse_login_csrf="),
            &as_pairs(&with("")),
        )
        .await,
    ];
    for answer in &refused {
        assert_eq!(answer.status, 403, "{}", answer.body);
        assert!(
            answer
                .body
                .contains("role=\"alert\">This form has expired or did not come from this page."),
            "{}",
            answer.body
        );
        assert!(answer.login_response().is_none());
    }
    assert_eq!(
        devices(&server, "alice", "pw").await,
        0,
        "no session was created"
    );
}

fn as_pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn the_page_is_rate_limited_like_login() {
    let server = Server::start(&[
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__PER_SECOND",
            "0.001",
        ),
        ("GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__BURST_COUNT", "2"),
    ]);
    server.create_user("alice", "pw", &[]);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (page, cookie) = form(&server, "").await;
        let answer = post_form(
            &server,
            PAGE,
            Some(&cookie),
            &[
                ("csrf", &page.hidden("csrf")),
                ("user", "alice"),
                ("password", "wrong"),
            ],
        )
        .await;
        statuses.push(answer.status);
        if answer.status == 429 {
            assert!(
                answer
                    .body
                    .contains("role=\"alert\">Too many attempts; wait a little and try again."),
                "{}",
                answer.body
            );
        }
    }
    assert_eq!(statuses, [403, 403, 429]);
    // /login shares the budget.
    let (status, v) = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "user": "alice", "password": "pw"}),
        )
        .await;
    assert_eq!(
        (status, v["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED"))
    );
}

// The email and phone UIA stages' pages, which a person can complete.

const REG: &str = "/_matrix/client/v3/register";

fn stage_page(stage: &str) -> String {
    format!("/_matrix/client/v3/auth/{stage}/fallback/web")
}

#[tokio::test]
async fn the_email_page_sends_the_link_and_completes_the_stage() {
    let smtp = Smtp::start();
    let mut settings = smtp.settings();
    settings.push(("GATEHOUSE_REGISTRATION__ENABLED", "true".into()));
    settings.push((
        "GATEHOUSE_REGISTRATION__FLOWS",
        r#"[["m.login.email.identity"]]"#.into(),
    ));
    let server = Server::start_public(settings);
    let body = json!({"username": "mailer", "password": "pw"});
    let (status, c) = server.post(REG, body.clone()).await;
    assert_eq!(status, 401);
    let session = s(&c, "session");
    let stage = "m.login.email.identity";
    let url = format!("{}?session={session}", stage_page(stage));

    // The person enters an address; there is nothing about sid or secrets.
    let page = get(&server, &url).await;
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
    let bad = post_form(
        &server,
        &stage_page(stage),
        None,
        &[
            ("session", &session),
            ("step", "send"),
            ("email", "not-an-address"),
        ],
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
    let sent = post_form(
        &server,
        &stage_page(stage),
        None,
        &[
            ("session", &session),
            ("step", "send"),
            ("email", "Web.User@Example.org"),
        ],
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(
        sent.body
            .contains("We sent a link to <strong>web.user@example.org</strong>"),
        "{}",
        sent.body
    );
    let kept = sent
        .cookie("gatehouse_fallback_3pid")
        .expect("the validation, kept");
    assert!(kept.starts_with(&format!("{session}:")), "{kept}");
    let set = sent.header("set-cookie");
    assert!(
        set.contains("HttpOnly")
            && set.contains("Path=/_matrix/client/v3/auth/m.login.email.identity/fallback/web"),
        "{set}"
    );
    let cookie = format!("gatehouse_fallback_3pid={kept}");
    let mail = smtp.wait_for(1);
    assert!(mail.contains("To: web.user@example.org"), "{mail}");

    // Back on the page (say, after a reload), it waits for the link.
    let resp = server
        .http
        .get(server.url(&url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let waiting = Html::of(resp).await;
    assert!(
        waiting.body.contains("I have opened the link"),
        "{}",
        waiting.body
    );

    // Too early: the link is not opened yet.
    let early = post_form(
        &server,
        &stage_page(stage),
        Some(&cookie),
        &[("session", &session), ("step", "check")],
    )
    .await;
    assert_eq!(early.status, 401);
    assert!(
        early
            .body
            .contains("role=\"alert\">The link has not been opened yet."),
        "{}",
        early.body
    );
    // Another browser (no cookie) cannot finish it.
    let elsewhere = post_form(
        &server,
        &stage_page(stage),
        None,
        &[("session", &session), ("step", "check")],
    )
    .await;
    assert_eq!(elsewhere.status, 400);
    assert!(!elsewhere.body.contains("authDone"));

    server.http.get(link_in(&mail)).send().await.unwrap();
    let done = post_form(
        &server,
        &stage_page(stage),
        Some(&cookie),
        &[("session", &session), ("step", "check")],
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body.contains("window.onAuthDone()") && done.body.contains("postMessage(\"authDone\""),
        "{}",
        done.body
    );
    assert_eq!(
        done.cookie("gatehouse_fallback_3pid"),
        Some(String::new()),
        "forgotten"
    );

    // The client finishes with just the session; the address is the account's.
    let mut finish = body;
    finish["auth"] = json!({"session": session});
    let (status, v) = server.post(REG, finish).await;
    assert_eq!(status, 200, "{v}");
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
    settings.push((
        "GATEHOUSE_UIA__FLOWS",
        r#"[["m.login.email.identity"]]"#.into(),
    ));
    let server = Server::start_public(settings);
    server.create_user("carol", "pw", &["--email", "carol@example.org"]);
    let token = server.access_token("carol", "pw").await;
    let path = "/_matrix/client/v3/account/password";
    let (status, c) = server
        .post_auth(path, &token, json!({"new_password": "new"}))
        .await;
    assert_eq!(status, 401, "{c}");
    let session = s(&c, "session");
    let stage = "m.login.email.identity";
    let other = post_form(
        &server,
        &stage_page(stage),
        None,
        &[
            ("session", &session),
            ("step", "send"),
            ("email", "someone@example.org"),
        ],
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
    let sent = post_form(
        &server,
        &stage_page(stage),
        None,
        &[
            ("session", &session),
            ("step", "send"),
            ("email", "carol@example.org"),
        ],
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let cookie = format!(
        "gatehouse_fallback_3pid={}",
        sent.cookie("gatehouse_fallback_3pid").unwrap()
    );
    server
        .http
        .get(link_in(&smtp.wait_for(1)))
        .send()
        .await
        .unwrap();
    let done = post_form(
        &server,
        &stage_page(stage),
        Some(&cookie),
        &[("session", &session), ("step", "check")],
    )
    .await;
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

#[tokio::test]
async fn the_phone_page_sends_a_code_and_completes_the_stage() {
    let (hook, seen) = sms_recorder().await;
    let server = Server::start_public(vec![
        ("GATEHOUSE_SMS__ENABLED", "true".into()),
        ("GATEHOUSE_SMS__WEBHOOK_URL", hook),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.msisdn"]]"#.into(),
        ),
    ]);
    let body = json!({"username": "texter", "password": "pw"});
    let (_, c) = server.post(REG, body.clone()).await;
    let session = s(&c, "session");
    let stage = "m.login.msisdn";
    let page = get(&server, &format!("{}?session={session}", stage_page(stage))).await;
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
    let no_country = post_form(
        &server,
        &stage_page(stage),
        None,
        &[
            ("session", &session),
            ("step", "send"),
            ("country", "ZZ"),
            ("phone", "07400 123456"),
        ],
    )
    .await;
    assert_eq!(no_country.status, 400);
    assert!(
        no_country
            .body
            .contains("aria-describedby=\"message country-hint\" aria-invalid=\"true\""),
        "{}",
        no_country.body
    );
    let sent = post_form(
        &server,
        &stage_page(stage),
        None,
        &[
            ("session", &session),
            ("step", "send"),
            ("country", "GB"),
            ("phone", "07400 123456"),
        ],
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(
        sent.body
            .contains("We sent a code by text message to <strong>+447400123456</strong>"),
        "{}",
        sent.body
    );
    let cookie = format!(
        "gatehouse_fallback_3pid={}",
        sent.cookie("gatehouse_fallback_3pid").unwrap()
    );
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
    let wrong = post_form(
        &server,
        &stage_page(stage),
        Some(&cookie),
        &[
            ("session", &session),
            ("step", "code"),
            ("code", wrong_code),
        ],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.body.contains("role=\"alert\">That code is not right")
            && wrong.body.contains("id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus aria-describedby=\"message\" aria-invalid=\"true\""),
        "{}",
        wrong.body
    );
    let done = post_form(
        &server,
        &stage_page(stage),
        Some(&cookie),
        &[("session", &session), ("step", "code"), ("code", &code)],
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("window.onAuthDone()"), "{}", done.body);
    let mut finish = body;
    finish["auth"] = json!({"session": session});
    let (status, v) = server.post(REG, finish).await;
    assert_eq!(status, 200, "{v}");
}
