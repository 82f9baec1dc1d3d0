//! Single sign-on at the HTTP level, on both engines: what `GET /login`
//! advertises, the redirect endpoints' Matrix errors and rate limit, the
//! redirect to a CAS provider (the flow it stores, the browser cookie it
//! binds and reuses), forged callbacks, the configuration (secrets from files,
//! redacted in `config show`, bad settings refused) and operator templates.
//! The browser journeys against real providers are in
//! interop/js/test/sso-*.test.js.

mod common;

use std::process::{Command, Stdio};

use common::{BIN, Server, assert_error};

const CAS: &str =
    r#"[{ idp_id = "campus", idp_name = "Campus CAS", server_url = "http://127.0.0.1:9/cas" }]"#;
const OIDC: &str = r#"[{ idp_id = "acme", idp_name = "Acme ID", idp_icon = "mxc://x/acme", idp_brand = "acme", issuer = "http://127.0.0.1:9", client_id = "c", client_secret = "top-secret-value" }]"#;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn login_flows_advertise_the_providers() {
    let server = Server::start(&[("GATEHOUSE_SSO__OIDC", OIDC), ("GATEHOUSE_SSO__CAS", CAS)]);
    let (status, body) = server.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, 200);
    let flows = body["flows"].as_array().unwrap();
    let sso = flows.iter().find(|f| f["type"] == "m.login.sso").unwrap();
    assert_eq!(
        sso["identity_providers"],
        serde_json::json!([
            { "id": "acme", "name": "Acme ID", "icon": "mxc://x/acme", "brand": "acme" },
            { "id": "campus", "name": "Campus CAS" },
        ])
    );
    assert!(flows.iter().any(|f| f["type"] == "m.login.cas"));
    assert!(flows.iter().any(|f| f["type"] == "m.login.token"));

    // Without providers: neither, and the endpoints are not there.
    let plain = Server::start(&[]);
    let (_, body) = plain.get("/_matrix/client/v3/login", None).await;
    assert!(!body.to_string().contains("m.login.sso"));
    let got = plain
        .get(
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=http%3A%2F%2Fa%2F",
            None,
        )
        .await;
    assert_error(&got, 404, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn redirect_endpoints_answer_matrix_errors() {
    let server = Server::start(&[("GATEHOUSE_SSO__CAS", CAS)]);
    let cases = [
        (
            "/_matrix/client/v3/login/sso/redirect",
            400,
            "M_MISSING_PARAM",
        ),
        (
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=javascript:alert(1)",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=%2Frelative",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=http%3A%2F%2Fa%2F&action=steal",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=http%3A%2F%2Fa%2F&org.matrix.msc3824.action=x",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v3/login/sso/redirect/nope?redirectUrl=http%3A%2F%2Fa%2F",
            404,
            "M_NOT_FOUND",
        ),
        (
            "/_matrix/client/r0/login/sso/redirect/nope?redirectUrl=http%3A%2F%2Fa%2F",
            404,
            "M_NOT_FOUND",
        ),
        // Read as evil.example by browsers, as app.example by naive parsers.
        (
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fevil.example%5C%40app.example%2F",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fapp.example%2F%C3%A9",
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fapp.example%2F%20x",
            400,
            "M_INVALID_PARAM",
        ),
    ];
    for (path, status, errcode) in cases {
        let got = server.get(path, None).await;
        assert_error(&got, status, errcode);
    }
    let long = format!(
        "/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fa%2F{}",
        "x".repeat(2100)
    );
    assert_error(&server.get(&long, None).await, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn the_redirect_binds_a_flow_to_the_browser_and_the_callback_checks_it() {
    let server = Server::start_public(vec![("GATEHOUSE_SSO__CAS", CAS.into())]);
    let http = no_redirects();
    let resp = http
        .get(server.url(
            "/_matrix/client/v3/login/cas/redirect?redirectUrl=http%3A%2F%2F127.0.0.1%3A5%2Fcb&action=login",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    // To the CAS login page, with the callback (carrying the flow's state) as service.
    let url = reqwest::Url::parse(&location).unwrap();
    assert_eq!(url.path(), "/cas/login");
    let service = url
        .query_pairs()
        .find(|(k, _)| k == "service")
        .unwrap()
        .1
        .to_string();
    let callback = server.url("/_gatehouse/sso/callback/campus?state=");
    assert!(service.starts_with(&callback), "{service}");
    let state = &service[callback.len()..];
    assert_eq!(state.len(), 32);
    // The browser's own cookie: for the SSO pages only, never for script.
    assert!(cookie.starts_with("gatehouse_sso_browser="), "{cookie}");
    // Sent back to every path, so that a second flow started from the
    // client API reuses it rather than replacing it.
    for attr in ["Path=/; ", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let browser = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(
        common::database::count_rows(&server.data_dir, "sso_flows").await,
        1
    );
    // A second flow from the same browser keeps its cookie.
    let second = http
        .get(server.url(
            "/_matrix/client/v3/login/cas/redirect?redirectUrl=http%3A%2F%2F127.0.0.1%3A5%2Fcb",
        ))
        .header("cookie", &browser)
        .send()
        .await
        .unwrap();
    let kept = second.headers()["set-cookie"].to_str().unwrap();
    assert!(
        kept.starts_with(&format!("{browser};")),
        "{kept} vs {browser}"
    );

    // The ticket coming back to another browser: refused, and the flow is spent.
    let other = http
        .get(format!("{service}&ticket=ST-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    assert!(
        other.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(other.headers()["cache-control"], "no-store");
    assert!(
        other
            .text()
            .await
            .unwrap()
            .contains("started in another browser")
    );
    let replay = http
        .get(format!("{service}&ticket=ST-1"))
        .header("cookie", &browser)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400, "the flow was taken once");

    // A forged state, or none: pages, never a 500.
    for path in [
        "/_gatehouse/sso/callback/campus?state=forged&ticket=ST-1",
        "/_gatehouse/sso/callback/campus",
        "/_gatehouse/sso/callback/campus?state=",
        "/_gatehouse/sso/callback/nope?state=x&code=y",
    ] {
        let page = server.page(path, Some(&browser)).await;
        assert_eq!(page.status, 400, "{path}: {}", page.body);
        assert!(
            page.header("content-type").starts_with("text/html"),
            "{path}"
        );
        assert!(page.body.contains("role=\"alert\""), "{path}");
    }
    // The username page without its flow.
    let page = server
        .post_form(
            "/_gatehouse/sso/username",
            Some(&browser),
            &[("key", "forged"), ("username", "x")],
        )
        .await;
    assert_eq!(page.status, 400);
    let page = server
        .post_form("/_gatehouse/sso/username", None, &[])
        .await;
    assert_eq!(page.status, 400);
}

#[tokio::test]
async fn unauthenticated_redirects_are_rate_limited_per_address() {
    let server = Server::start(&[
        ("GATEHOUSE_SSO__CAS", CAS),
        (
            "GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__PER_SECOND",
            "0.001",
        ),
        ("GATEHOUSE_RATE_LIMITS__LOGIN_PER_ADDRESS__BURST_COUNT", "3"),
    ]);
    let http = no_redirects();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = http
            .get(server.url("/_matrix/client/v3/login/sso/redirect?redirectUrl=http%3A%2F%2Fa%2F"))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
            assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
        }
    }
    assert_eq!(statuses, [302, 302, 302, 429, 429]);
    assert_eq!(
        common::database::count_rows(&server.data_dir, "sso_flows").await,
        3,
        "refused attempts store nothing"
    );
}

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn provider_settings_are_checked_and_secrets_kept_out_of_sight() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "secret-from-a-file\n").unwrap();
    let from_file = format!(
        r#"[{{ idp_id = "acme", idp_name = "Acme", issuer = "http://127.0.0.1:9", client_id = "c", client_secret_path = {:?} }}]"#,
        secret.display().to_string()
    );
    let out = run(&["config", "show"], &[("GATEHOUSE_SSO__OIDC", &from_file)]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains("client_secret = \"<redacted>\""), "{shown}");
    assert!(!shown.contains("secret-from-a-file"));
    let out = run(&["config", "show"], &[("GATEHOUSE_SSO__OIDC", OIDC)]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("top-secret-value"));

    for (value, key) in [
        (
            r#"[{ idp_id = "Bad Id", idp_name = "x", server_url = "http://a" }]"#,
            "idp_id",
        ),
        (
            r#"[{ idp_id = "a", idp_name = "x", server_url = "ftp://a" }]"#,
            "server_url",
        ),
        (
            r#"[{ idp_id = "a", idp_name = "x", server_url = "http://a", user_mapping = { localpart_template = "{{ user." } }]"#,
            "user_mapping",
        ),
        (
            r#"[{ idp_id = "a", idp_name = "x", server_url = "http://a", unknown_key = 1 }]"#,
            "unknown_key",
        ),
    ] {
        let out = run(&["config", "show"], &[("GATEHOUSE_SSO__CAS", value)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(err.contains(key), "{value}: {err}");
    }
    let twice = format!("[{}, {}]", &CAS[1..CAS.len() - 1], &CAS[1..CAS.len() - 1]);
    let out = run(&["config", "show"], &[("GATEHOUSE_SSO__CAS", &twice)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("used twice"));
}

#[tokio::test]
async fn operators_replace_templates() {
    let dir = tempfile::tempdir().unwrap();
    let page = include_str!("../../gatehouse-server/templates/page.html")
        .replace("<main>", "<main><p>Example Corp sign-in</p>");
    std::fs::write(dir.path().join("page.html"), page).unwrap();
    let templates = dir.path().display().to_string();
    let server = Server::start(&[
        ("GATEHOUSE_TEMPLATES_DIR", &templates),
        ("GATEHOUSE_SSO__CAS", CAS),
    ]);
    let page = server.page("/_gatehouse/sso/callback/campus", None).await;
    assert!(page.body.contains("Example Corp sign-in"), "{}", page.body);
    let fallback = server.page("/_matrix/static/client/login/", None).await;
    assert!(fallback.body.contains("Example Corp sign-in"));

    // A template that does not parse stops the server at startup.
    std::fs::write(dir.path().join("sso.html"), "{% if %}").unwrap();
    let out = run(
        &["config", "show"],
        &[("GATEHOUSE_TEMPLATES_DIR", &templates)],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("templates_dir") && err.contains("sso.html"),
        "{err}"
    );
}
