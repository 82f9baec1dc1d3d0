//! The `gatehouse` command line: configuration handling and admin commands.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{BIN, Server, assert_error};
use serde_json::json;

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn config_example_is_complete_and_loads() {
    let out = run(&["config", "example"], &[]);
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    for key in [
        "server_name",
        "listen",
        "data_dir",
        "public_baseurl",
        "max_request_body_bytes",
        "metrics_listen",
        "access_token_lifetime_ms",
        "cache_ttl_ms",
        "argon2_memory_kib",
        "bcrypt_pepper",
        "bcrypt_pepper_path",
        "smtp_password_path",
        "webhook_token_path",
        "secret_key_path",
        "secret_path",
        "login_per_address",
        "failed_logins_per_account",
        "durability",
        "log_format",
        "trust_x_forwarded_for",
        "templates_dir",
        "client_allowlist",
        "client_secret_path",
        "on_localpart_taken",
        "link_by_email",
    ] {
        assert!(example.contains(key), "example lacks {key}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gatehouse.toml");
    std::fs::write(&file, &example).unwrap();
    let shown = run(&["--config", file.to_str().unwrap(), "config", "show"], &[]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
}

#[test]
fn invalid_configuration_names_the_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[tokens]\naccess_token_lifetime_ms = \"soon\"\n").unwrap();
    let out = run(&["--config", file.to_str().unwrap(), "serve"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokens.access_token_lifetime_ms"), "{err}");

    std::fs::write(&file, "srever_name = \"typo.example\"\n").unwrap();
    let out = run(&["--config", file.to_str().unwrap(), "serve"], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("srever_name"),
        "unknown keys are refused"
    );

    let out = run(
        &["config", "show"],
        &[("GATEHOUSE_RATE_LIMITS__LOGIN_PER_ACCOUNT__PER_SECOND", "-1")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate_limits.login_per_account"));

    let out = run(
        &["config", "show"],
        &[("GATEHOUSE_PUBLIC_BASEURL", "matrix.example.org")],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("public_baseurl"));
    let out = run(&["config", "show"], &[("GATEHOUSE_EMAIL__ENABLED", "true")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("public_baseurl"),
        "email links need the public address"
    );
    // Registration stages are refused for a logged-in user's operations.
    for (var, flows, stage) in [
        (
            "GATEHOUSE_UIA__FLOWS",
            r#"[["m.login.password", "m.login.registration_token"]]"#,
            "m.login.registration_token",
        ),
        (
            "GATEHOUSE_UIA__OPERATIONS__DEACTIVATION",
            r#"[["m.login.terms", "m.login.password"]]"#,
            "m.login.terms",
        ),
    ] {
        let out = run(&["config", "show"], &[(var, flows)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {err}");
        assert!(
            err.contains(stage) && err.contains("registration stage"),
            "{err}"
        );
    }
    assert!(
        !run(&["--config", "/nonexistent.toml", "serve"], &[])
            .status
            .success()
    );
}

#[test]
fn layers_override_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(
        &file,
        "server_name = \"from-file.example\"\nlisten = \"127.0.0.1:9000\"\n",
    )
    .unwrap();
    let show = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--config", file.to_str().unwrap()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["config", "show"]);
        String::from_utf8(run(&all, env).stdout).unwrap()
    };
    assert!(show(&[], &[]).contains("server_name = \"from-file.example\""));
    let env = [("GATEHOUSE_SERVER_NAME", "from-env.example")];
    assert!(show(&[], &env).contains("server_name = \"from-env.example\""));
    assert!(
        show(&["--server-name", "from-flag.example"], &env)
            .contains("server_name = \"from-flag.example\"")
    );
    assert!(show(&[], &[("GATEHOUSE_TOKENS__CACHE_TTL_MS", "5")]).contains("cache_ttl_ms = 5"));
    // Variables that name no configuration section are not configuration…
    assert!(show(&[], &[("GATEHOUSE_BIN", "/usr/bin/gatehouse")]).contains("from-file.example"));
    // …but a typo inside a known section is still refused.
    let typo = run(
        &["config", "show"],
        &[("GATEHOUSE_TOKENS__CACHE_TLL_MS", "5")],
    );
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("cache_tll_ms"));
}

#[tokio::test]
async fn admin_commands_manage_accounts() {
    let server = Server::start(&[]);
    server.create_user(
        "alice",
        "old-pw",
        &["--email", "alice@example.org", "--admin"],
    );
    // The password can come from standard input (no terminal to prompt on).
    let mut child = Command::new(BIN)
        .args(["user", "create", "bob"])
        .envs(server.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"bob-pw\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.login("bob", "bob-pw", json!({})).await;

    let dup = server.admin(&["user", "create", "alice", "--password", "x"]);
    assert!(!dup.status.success());
    let bad = server.admin(&["user", "create", "Not Valid", "--password", "x"]);
    assert!(!bad.status.success());

    assert!(
        server
            .admin(&["user", "set-password", "alice", "--password", "new-pw"])
            .status
            .success()
    );
    assert_error(
        &server
            .post(
                "/_matrix/client/v3/login",
                json!({"type": "m.login.password", "user": "alice", "password": "old-pw"}),
            )
            .await,
        403,
        "M_FORBIDDEN",
    );
    server.login("alice", "new-pw", json!({})).await;

    assert!(
        server
            .admin(&["user", "add-threepid", "bob", "--phone", "+1 201 555 0123"])
            .status
            .success()
    );
    let (status, v) = server
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.phone", "country": "US", "phone": "(201) 555-0123"}, "password": "bob-pw"}),
        )
        .await;
    assert_eq!(
        (status, v["user_id"].as_str()),
        (200, Some("@bob:localhost"))
    );
    let taken = server.admin(&[
        "user",
        "add-threepid",
        "bob",
        "--email",
        "ALICE@example.org",
    ]);
    assert!(!taken.status.success(), "an email belongs to one account");

    assert!(
        server
            .admin(&["user", "deactivate", "bob"])
            .status
            .success()
    );
    let list = String::from_utf8(server.admin(&["user", "list"]).stdout).unwrap();
    assert!(
        list.contains("@alice:localhost\tadmin\temail:alice@example.org"),
        "{list}"
    );
    assert!(list.contains("@bob:localhost\tdeactivated"), "{list}");
    assert!(
        !server
            .admin(&["user", "deactivate", "nobody"])
            .status
            .success()
    );
}

#[test]
fn secrets_never_reach_config_show() {
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), "file-secret-0123456789abcdef\n").unwrap();
    let inline = "inline-secret-0123456789abcdef";
    let env = [
        ("GATEHOUSE_PUBLIC_BASEURL", "https://matrix.example.org/"),
        ("GATEHOUSE_HOMESERVER__URL", "http://127.0.0.1:8009"),
        ("GATEHOUSE_HOMESERVER__SECRET", inline),
        ("GATEHOUSE_EMAIL__SMTP_PASSWORD", "smtp-password-value"),
        ("GATEHOUSE_SMS__WEBHOOK_TOKEN", "webhook-token-value"),
        ("GATEHOUSE_RECAPTCHA__SECRET_KEY", "recaptcha-secret-value"),
        (
            "GATEHOUSE_DATABASE__URL",
            "postgres://gh:db-password-value@db.example.org/gh?sslmode=require",
        ),
    ];
    let out = run(&["config", "show"], &env);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    for secret in [
        inline,
        "smtp-password-value",
        "webhook-token-value",
        "recaptcha-secret-value",
        "db-password-value",
    ] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert!(shown.contains("<redacted>"), "{shown}");
    // The database URL stays readable, its password does not.
    assert!(
        shown.contains("postgres://gh:***@db.example.org/gh?sslmode=require"),
        "{shown}"
    );
    // From a file: the path is shown, never the contents.
    let path = secret_file.path().to_str().unwrap();
    let out = run(
        &["config", "show"],
        &[
            ("GATEHOUSE_PUBLIC_BASEURL", "https://matrix.example.org/"),
            ("GATEHOUSE_HOMESERVER__URL", "http://127.0.0.1:8009"),
            ("GATEHOUSE_HOMESERVER__SECRET_PATH", path),
        ],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(path) && !shown.contains("file-secret"),
        "{shown}"
    );
}

#[test]
fn every_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let smtp = write("smtp", "smtp-password-in-a-file\n");
    let token = write("token", "webhook-token-in-a-file\n");
    let recaptcha = write("recaptcha", "recaptcha-secret-in-a-file\n");
    let pepper = write("pepper", "bcrypt-pepper-in-a-file\n");
    let env = [
        ("GATEHOUSE_EMAIL__SMTP_PASSWORD_PATH", smtp.as_str()),
        ("GATEHOUSE_SMS__WEBHOOK_TOKEN_PATH", token.as_str()),
        ("GATEHOUSE_RECAPTCHA__SECRET_KEY_PATH", recaptcha.as_str()),
        ("GATEHOUSE_PASSWORDS__BCRYPT_PEPPER_PATH", pepper.as_str()),
    ];
    let out = run(&["config", "show"], &env);
    let shown = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for secret in [
        "smtp-password-in-a-file",
        "webhook-token-in-a-file",
        "recaptcha-secret-in-a-file",
        "bcrypt-pepper-in-a-file",
    ] {
        assert!(
            !shown.contains(secret) && !err.contains(secret),
            "{secret} shown:\n{shown}{err}"
        );
    }
    // Each value was read (and redacted); the paths are no secret.
    assert_eq!(shown.matches("<redacted>").count(), 4, "{shown}");
    for path in [&smtp, &token, &recaptcha, &pepper] {
        assert!(shown.contains(path.as_str()), "{path} not shown:\n{shown}");
    }

    // A value and its file: exit 2, naming the key, echoing neither.
    let file = dir.path().join("gatehouse.toml");
    std::fs::write(
        &file,
        format!(
            "[email]\nsmtp_password = \"inline-smtp-password\"\nsmtp_password_path = {smtp:?}\n"
        ),
    )
    .unwrap();
    let out = run(&["--config", file.to_str().unwrap(), "config", "show"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`email.smtp_password`"), "{err}");
    assert!(
        !err.contains("inline-smtp-password") && !err.contains("smtp-password-in-a-file"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // A file that is not there: exit 2, naming the `_path` key.
    let missing = dir.path().join("no-such-file");
    let out = run(
        &["config", "show"],
        &[(
            "GATEHOUSE_SMS__WEBHOOK_TOKEN_PATH",
            missing.to_str().unwrap(),
        )],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`sms.webhook_token_path`"), "{err}");
}

/// `db status` reads the schema version without changing anything; `db
/// migrate` brings an old database (here an empty one: version 0) up to
/// date; a database newer than the build is refused.
#[test]
fn db_status_and_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let db = |cmd: &str| {
        let out = run(&["--data-dir", &data, "db", cmd], &[]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, said) = db("status");
    assert!(ok && said.contains("no database yet"), "{said}");
    assert!(
        !dir.path().join("gatehouse.sqlite").exists(),
        "status creates nothing"
    );

    let file = dir.path().join("gatehouse.sqlite");
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("CREATE TABLE placeholder (x INTEGER); DROP TABLE placeholder;")
        .unwrap();
    let latest = gatehouse_store::SqliteStore::schema_version();
    let (ok, said) = db("status");
    assert!(
        ok && said.contains(&format!(
            "schema version 0 of {latest}: {latest} migration(s) pending"
        )),
        "{said}"
    );
    let (ok, said) = db("migrate");
    assert!(
        ok && said.contains(&format!("migrated from schema version 0 to {latest}")),
        "{said}"
    );
    let (ok, said) = db("status");
    assert!(ok && said.contains("up to date"), "{said}");
    let (ok, said) = db("migrate");
    assert!(ok && said.contains("nothing to do"), "{said}");

    rusqlite::Connection::open(&file)
        .unwrap()
        .pragma_update(None, "user_version", i64::try_from(latest + 1).unwrap())
        .unwrap();
    let (ok, said) = db("status");
    assert!(!ok && said.contains("newer than this build"), "{said}");
}
