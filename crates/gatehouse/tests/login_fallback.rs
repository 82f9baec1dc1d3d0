//! The login fallback page (`GET /_matrix/static/client/login/`), over
//! plain HTTP (`interop/js/test/login-fallback-browser.test.js` drives it
//! in a real Chromium). The email and phone UIA fallback pages are in
//! `threepid_fallback.rs`.

mod common;

use common::{Html, Server, s};
use serde_json::{Value, json};

const PAGE: &str = "/_matrix/static/client/login/";
/// The cookie the form's CSRF token is kept in.
const CSRF: &str = "gatehouse_login_csrf";

/// The login response the signed-in page hands to `onLogin`.
fn login_response(page: &Html) -> Option<Value> {
    let marker = "<script type=\"application/json\" id=\"login-response\">";
    let start = page.body.find(marker)? + marker.len();
    let end = page.body[start..].find("</script>")? + start;
    Some(serde_json::from_str(&page.body[start..end]).expect("JSON in the page"))
}

/// The form, as a browser shows it: its page, and the cookie it set.
async fn form(server: &Server, query: &str) -> (Html, String) {
    let page = server.page(&format!("{PAGE}{query}"), None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.cookie(CSRF).is_some(), "a CSRF cookie with the form");
    let cookie = page.cookie_header(CSRF);
    (page, cookie)
}

/// Submit the form `page` showed, with its cookie, its CSRF token and `fields`.
async fn submit(server: &Server, page: &Html, cookie: &str, fields: &[(&str, &str)]) -> Html {
    let csrf = page.hidden("csrf");
    let mut all = vec![("csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    server.post_form(PAGE, Some(cookie), &all).await
}

/// Open a fresh form and sign in on it as `user` with `password`.
async fn sign_in(server: &Server, user: &str, password: &str) -> Html {
    let (page, cookie) = form(server, "").await;
    submit(
        server,
        &page,
        &cookie,
        &[("user", user), ("password", password)],
    )
    .await
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
    assert_eq!(page.cookie(CSRF), Some(token));
    let set = page.header("set-cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    // Without the trailing slash too.
    let bare = server.page(PAGE.trim_end_matches('/'), None).await;
    assert_eq!(bare.status, 200);
    assert!(bare.body.contains("name=\"csrf\""));
}

#[tokio::test]
async fn a_wrong_password_shows_the_form_again_with_the_error() {
    let server = Server::start(&[]);
    server.create_user("alice", "pw", &[]);
    let answer = sign_in(&server, "alice", "wrong").await;
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
    assert!(login_response(&answer).is_none(), "{html}");
    assert!(!html.contains("access_token"), "{html}");
    // A fresh token for the next try, which works.
    let again = submit(
        &server,
        &answer,
        &answer.cookie_header(CSRF),
        &[("user", "alice"), ("password", "pw")],
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        devices(&server, "alice", "pw").await,
        1,
        "one session: the right password's"
    );

    // An unknown user answers the same; an empty name is pointed at.
    let unknown = sign_in(&server, "nobody", "pw").await;
    assert_eq!(unknown.status, 403);
    assert!(unknown.body.contains("Wrong username or password."));
    let empty = sign_in(&server, " ", "pw").await;
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
    let answer = submit(
        &server,
        &page,
        &cookie,
        &[
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
    let response = login_response(&answer).expect("the login response in the page");
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
    assert_eq!(answer.cookie(CSRF), Some(String::new()));

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
    let answer = submit(
        &server,
        &page,
        &cookie,
        &[
            ("user", "alice"),
            ("password", "pw"),
            ("refresh_token", &page.hidden("refresh_token")),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let response = login_response(&answer).unwrap();
    assert!(response["refresh_token"].is_string(), "{response}");
    assert!(response["expires_in_ms"].is_u64(), "{response}");
}

#[tokio::test]
async fn email_addresses_sign_in_too() {
    let server = Server::start(&[]);
    server.create_user("bob", "pw", &["--email", "Bob@Example.org"]);
    let answer = sign_in(&server, "bob@example.org", "pw").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        login_response(&answer).unwrap()["user_id"],
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
        server.post_form(PAGE, None, &right).await,
        // The token without its cookie.
        server.post_form(PAGE, None, &as_pairs(&with(&token))).await,
        // The cookie without the token.
        server.post_form(PAGE, Some(&cookie), &right).await,
        // A token of the forger's own.
        server
            .post_form(
                PAGE,
                Some(&cookie),
                &as_pairs(&with(&format!("{}x", &token[1..]))),
            )
            .await,
        // Both forged alike: a cookie of this page's is not one the forger can set.
        server
            .post_form(PAGE, Some("gatehouse_login_csrf="), &as_pairs(&with("")))
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
        assert!(login_response(answer).is_none());
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
        let answer = sign_in(&server, "alice", "wrong").await;
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
