//! `gatehouse client` faults found by trying it as a new user would: a
//! profile shared by concurrent processes across many token expiries, and
//! everything that must be checked before a prompt (answers come from
//! standard input here; `client_cli_tty.rs` drives a real terminal).

mod common;

use std::io::Write;
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
    // A command that fails before reading its answers closes the pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", text(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "should fail: {}", text(out));
    text(out)
}

/// A server with open registration (dummy stage) on a known port.
fn server(extra: &[(&str, &str)]) -> (Server, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let mut settings = vec![
        ("GATEHOUSE_LISTEN", listen.as_str()),
        ("GATEHOUSE_PUBLIC_BASEURL", base.as_str()),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true"),
        ("GATEHOUSE_REGISTRATION__FLOWS", r#"[["m.login.dummy"]]"#),
    ];
    settings.extend_from_slice(extra);
    (Server::start(&settings), base)
}

/// Four processes at a time share one profile whose access token lives a
/// second, for six expiries: every one of them keeps working, and the
/// profile holds a live session at the end.
#[tokio::test]
async fn processes_sharing_a_profile_all_keep_working_across_expiries() {
    let (server, base) = server(&[("GATEHOUSE_TOKENS__ACCESS_TOKEN_LIFETIME_MS", "1000")]);
    server.create_user("sam", "pw", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    ok(&client(
        &d,
        &["login", "--homeserver", &base, "--user", "sam", "--refresh"],
        "pw\n",
    ));
    let mut runs = 0;
    for round in 0..6 {
        // Expired (or about to): every process wants a refresh at once.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let batch: Vec<_> = (0..4)
            .map(|i| {
                let d = d.clone();
                let args: &[&str] = if i % 2 == 0 {
                    &["whoami", "--json"]
                } else {
                    &["devices", "list", "--json"]
                };
                std::thread::spawn(move || client(&d, args, ""))
            })
            .collect();
        for out in batch {
            let out = out.join().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {} (every process must keep working)",
                text(&out)
            );
            runs += 1;
        }
    }
    let me: Value =
        serde_json::from_str(ok(&client(&d, &["whoami", "--json"], "")).trim()).unwrap();
    assert_eq!(me["user_id"], "@sam:localhost");
    println!("{runs} concurrent commands over 6 expiries, all succeeded");
}

/// A session the server really ended is removed, with a message saying
/// to log in again; `logout --local` forgets one without the server.
#[tokio::test]
async fn ended_sessions_are_removed_and_local_logout_tells_no_server() {
    let (server, base) = server(&[]);
    server.create_user("ann", "pw", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for profile in ["a", "b"] {
        ok(&client(
            d,
            &[
                "login",
                "--homeserver",
                &base,
                "--user",
                "ann",
                "--profile",
                profile,
            ],
            "pw\n",
        ));
    }
    // `b` ends every session of the account; `a` learns it on next use.
    ok(&client(d, &["logout", "--all", "--profile", "b"], ""));
    let gone = failed(&client(d, &["whoami", "--profile", "a"], ""));
    assert!(gone.contains("log in again"), "{gone}");
    assert!(!d.join("a.json").exists(), "the dead session is removed");
    // A local logout: the file goes, the device stays at the server.
    let login = ok(&client(
        d,
        &[
            "login",
            "--homeserver",
            &base,
            "--user",
            "ann",
            "--profile",
            "c",
            "--json",
        ],
        "pw\n",
    ));
    let device: Value = serde_json::from_str(login.trim()).unwrap();
    ok(&client(
        d,
        &[
            "login",
            "--homeserver",
            &base,
            "--user",
            "ann",
            "--profile",
            "d",
        ],
        "pw\n",
    ));
    let forgot = ok(&client(d, &["logout", "--local", "--profile", "c"], ""));
    assert!(forgot.contains("the server was not told"), "{forgot}");
    assert!(!d.join("c.json").exists());
    let list = ok(&client(d, &["devices", "list", "--profile", "d"], ""));
    assert!(
        list.contains(device["device_id"].as_str().unwrap()),
        "{list}"
    );
}

#[tokio::test]
async fn what_can_be_checked_is_checked_before_any_prompt() {
    let (server, base) = server(&[]);
    server.create_user("taken", "pw", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = base.rsplit(':').next().unwrap();

    // A server name without scheme: discovery, then the name itself.
    let by_name = ok(&client(
        d,
        &[
            "login",
            "--homeserver",
            &format!("127.0.0.1:{port}"),
            "--insecure-http",
            "--user",
            "taken",
            "--device-name",
            "Work laptop",
            "--json",
        ],
        "pw\n",
    ));
    assert!(by_name.contains("@taken:localhost"), "{by_name}");
    // Without --insecure-http: https fails before the password prompt,
    // with the reason and a hint.
    let https = failed(&client(
        d,
        &[
            "login",
            "--homeserver",
            &format!("127.0.0.1:{port}"),
            "--user",
            "taken",
        ],
        "",
    ));
    assert!(
        !https.contains("Password"),
        "asked before checking: {https}"
    );
    assert!(https.contains("--insecure-http"), "{https}");
    // Not a Matrix server at all (nothing listens there).
    let nothing = failed(&client(
        d,
        &[
            "login",
            "--homeserver",
            &format!("http://127.0.0.1:{}", free_port()),
            "--user",
            "taken",
        ],
        "",
    ));
    assert!(nothing.contains("is not a Matrix homeserver"), "{nothing}");
    // SSO on a server without it: refused at once, naming what is offered.
    let sso = failed(&client(d, &["login", "--homeserver", &base, "--sso"], ""));
    assert!(
        sso.contains("does not offer m.login.sso") && sso.contains("m.login.password"),
        "{sso}"
    );

    // The device name given, and the current device marked.
    let list = ok(&client(d, &["devices", "list"], ""));
    assert!(
        list.starts_with("* ") && list.contains("Work laptop"),
        "{list}"
    );
    // Unknown devices, and none: refused before any password is asked.
    let nope = failed(&client(d, &["devices", "delete", "NOPE"], ""));
    assert!(nope.contains("no device NOPE"), "{nope}");
    let none = failed(&client(d, &["devices", "delete"], ""));
    assert!(none.contains("<DEVICE_IDS>"), "{none}");

    // Registration: a taken name is refused before the password, and an
    // occupied profile is not overwritten.
    let taken = failed(&client(
        d,
        &[
            "register",
            "--homeserver",
            &base,
            "--username",
            "taken",
            "--profile",
            "new",
        ],
        "",
    ));
    assert!(
        taken.contains("M_USER_IN_USE") || taken.contains("is taken"),
        "{taken}"
    );
    let occupied = failed(&client(
        d,
        &["register", "--homeserver", &base, "--username", "fresh"],
        "pw\npw\n",
    ));
    assert!(
        occupied.contains("holds @taken:localhost's session"),
        "{occupied}"
    );
    let mismatch = failed(&client(
        d,
        &[
            "register",
            "--homeserver",
            &base,
            "--username",
            "fresh",
            "--profile",
            "new",
        ],
        "one\ntwo\n",
    ));
    assert!(mismatch.contains("do not match"), "{mismatch}");

    // No refresh token: said so, instead of "not logged in".
    let refresh = failed(&client(d, &["refresh"], ""));
    assert!(refresh.contains("has no refresh token"), "{refresh}");

    // --json errors are JSON, with the Matrix errcode.
    let wrong = client(
        d,
        &[
            "login",
            "--homeserver",
            &base,
            "--user",
            "taken",
            "--json",
            "--profile",
            "w",
        ],
        "wrong\n",
    );
    assert!(!wrong.status.success());
    let error: Value = serde_json::from_slice(&wrong.stdout).expect("a JSON error");
    assert_eq!(error["errcode"], "M_FORBIDDEN", "{error}");

    // discover: a failure is an exit status, with the reason. A real
    // misconfiguration: a server whose .well-known names a base URL where
    // no homeserver answers.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let _misconfigured = Server::start(&[
        ("GATEHOUSE_LISTEN", listen.as_str()),
        ("GATEHOUSE_PUBLIC_BASEURL", nowhere.as_str()),
    ]);
    let failed_discovery = failed(&client(d, &["discover", "--insecure-http", &listen], ""));
    assert!(
        failed_discovery.contains("FailError")
            && failed_discovery.contains("valid Matrix homeserver"),
        "{failed_discovery}"
    );

    // The client's help is the client's: no server flags.
    let help = ok(&client(d, &["login", "--help"], ""));
    assert!(
        !help.contains("--data-dir") && !help.contains("--listen"),
        "{help}"
    );
    // Output cut short by a closed pipe ends quietly.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!("'{BIN}' client completions bash | head -1"))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
}
