//! `gatehouse client …` end to end: spawned with answers on standard input,
//! against a real Gatehouse server.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::{BIN, Server, free_port};
use serde_json::Value;

fn client(dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("client")
        .args(args)
        .env("GATEHOUSE_CLIENT_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(ok(out).trim()).unwrap()
}

#[tokio::test]
async fn the_cli_covers_the_account_lifecycle() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = Server::start(&[
        ("GATEHOUSE_LISTEN", &format!("127.0.0.1:{port}")),
        ("GATEHOUSE_PUBLIC_BASEURL", &base),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.registration_token"]]"#,
        ),
    ]);
    server.create_registration_token("cli-token");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let found = json(&client(
        d,
        &[
            "discover",
            "--insecure-http",
            &format!("127.0.0.1:{port}"),
            "--json",
        ],
        "",
    ));
    assert_eq!(
        (found["state"].as_str(), found["base_url"].as_str()),
        (Some("Success"), Some(base.as_str()))
    );

    // Register: password twice, then the registration token stage, all
    // from stdin.
    let out = ok(&client(
        d,
        &["register", "--homeserver", &base, "--username", "carol"],
        "pw1\npw1\ncli-token\n",
    ));
    assert!(out.contains("Registered @carol:localhost"), "{out}");
    let file = d.join("default.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "the session file is private"
    );
    let me = json(&client(d, &["whoami", "--json"], ""));
    assert_eq!(me["user_id"], "@carol:localhost");

    // A second profile logs in on another device.
    let second = json(&client(
        d,
        &[
            "login",
            "--homeserver",
            &base,
            "--user",
            "carol",
            "--profile",
            "phone",
            "--json",
        ],
        "pw1\n",
    ));
    let phone_device = second["device_id"].as_str().unwrap().to_owned();
    let devices = json(&client(d, &["devices", "list", "--json"], ""));
    assert_eq!(devices.as_array().unwrap().len(), 2);
    ok(&client(
        d,
        &["devices", "rename", &phone_device, "Phone"],
        "",
    ));
    let devices = ok(&client(d, &["devices", "list"], ""));
    assert!(devices.contains("Phone"), "{devices}");

    // Deleting the other device asks for the password (UIA) on stdin.
    let wrong = client(d, &["devices", "delete", &phone_device], "nope\n");
    assert!(
        !wrong.status.success(),
        "a wrong password and then no more answers fails"
    );
    ok(&client(d, &["devices", "delete", &phone_device], "pw1\n"));
    let gone = client(d, &["whoami", "--profile", "phone"], "");
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("profile removed"),
        "a session the server ended is forgotten"
    );
    assert!(!d.join("phone.json").exists());

    // passwd: new twice, then the current one for UIA.
    ok(&client(d, &["passwd"], "pw2\npw2\npw1\n"));
    ok(&client(
        d,
        &[
            "login",
            "--homeserver",
            &base,
            "--user",
            "carol",
            "--profile",
            "again",
        ],
        "pw2\n",
    ));
    let mismatch = client(d, &["passwd"], "a\nb\n");
    assert!(String::from_utf8_lossy(&mismatch.stderr).contains("do not match"));

    // Refresh-capable login and an explicit refresh.
    ok(&client(
        d,
        &[
            "login",
            "--homeserver",
            &base,
            "--user",
            "carol",
            "--refresh",
            "--profile",
            "r",
        ],
        "pw2\n",
    ));
    ok(&client(d, &["refresh", "--profile", "r"], ""));
    assert_eq!(
        json(&client(d, &["whoami", "--profile", "r", "--json"], ""))["user_id"],
        "@carol:localhost"
    );

    ok(&client(d, &["logout", "--profile", "again"], ""));
    assert!(
        !d.join("again.json").exists(),
        "logout forgets the stored session"
    );

    let completions = ok(&client(d, &["completions", "bash"], ""));
    assert!(
        completions.contains("gatehouse"),
        "shell completions are generated"
    );

    // Deactivation, confirmed with --yes, password on stdin.
    ok(&client(d, &["deactivate", "--yes"], "pw2\n"));
    let after = client(
        d,
        &["login", "--homeserver", &base, "--user", "carol"],
        "pw2\n",
    );
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("M_USER_DEACTIVATED"),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    drop(server);
}

#[tokio::test]
async fn cli_registration_prompts_terms_and_waits_for_the_email_link() {
    let smtp = common::Smtp::start();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut settings: Vec<(&str, String)> = smtp.settings();
    settings.extend([
        ("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}")),
        ("GATEHOUSE_PUBLIC_BASEURL", base.clone()),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.terms", "m.login.email.identity"]]"#.into(),
        ),
        ("GATEHOUSE_UIA__TERMS__PRIVACY__VERSION", "\"1\"".into()),
        (
            "GATEHOUSE_UIA__TERMS__PRIVACY__LANGUAGES",
            r#"{en = {name = "Privacy", url = "https://example.org/p"}}"#.into(),
        ),
    ]);
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _server = Server::start(&pairs);
    let dir = tempfile::tempdir().unwrap();
    // Declining the policies stops registration.
    let declined = client(
        dir.path(),
        &[
            "register",
            "--homeserver",
            &base,
            "--username",
            "dan",
            "--email",
            "dan@example.org",
        ],
        "pw\npw\nn\n",
    );
    assert!(!declined.status.success());
    assert!(
        String::from_utf8_lossy(&declined.stderr).contains("Privacy"),
        "the policies are shown"
    );
    // Accepting them, then the CLI polls until the emailed link is opened.
    let mut child = Command::new(BIN)
        .args([
            "client",
            "register",
            "--homeserver",
            &base,
            "--username",
            "erin",
            "--email",
            "erin@example.org",
        ])
        .env("GATEHOUSE_CLIENT_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pw\npw\ny\n")
        .unwrap();
    let before = smtp.messages().len();
    let link = common::link_in(&smtp.wait_for(before + 1));
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting for the link"
    );
    reqwest::get(&link).await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Registered @erin:localhost"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me = json(&client(dir.path(), &["whoami", "--json"], ""));
    assert_eq!(me["user_id"], "@erin:localhost");
}
