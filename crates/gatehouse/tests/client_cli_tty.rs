//! `gatehouse client` in a real terminal (tmux, which `scripts/test`
//! installs): every prompt as a person sees it — secrets not echoed, the
//! new password asked twice, the current one named as such, confirmations,
//! and the spinner of a long wait.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Server, Smtp, free_port, link_in};

/// A tmux server of its own, with one window running one command; killed
/// on drop.
struct Terminal {
    socket: String,
}

impl Terminal {
    /// Runs `gatehouse client ARGS` in a fresh terminal with the client
    /// directory `dir`; the window stays after it exits, showing its status.
    fn run(dir: &std::path::Path, args: &[&str]) -> Self {
        let socket = format!("gatehouse-test-{}-{}", std::process::id(), free_port());
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let script = format!(
            "GATEHOUSE_CLIENT_DIR='{}' '{BIN}' client {}; echo \"[exit $?]\"; sleep 600",
            dir.display(),
            quoted.join(" ")
        );
        let status = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "160", "-y", "40"])
            .arg(script)
            .status()
            .expect("tmux (scripts/test installs it)");
        assert!(status.success(), "tmux new-session");
        Self { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text` (tmux drops trailing spaces);
    /// returns the screen.
    fn expect(&self, text: &str) -> String {
        let text = text.trim_end();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {text:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` and Enter.
    fn type_line(&self, text: &str) {
        for keys in [&["-l", text][..], &["Enter"][..]] {
            let status = Command::new("tmux")
                .args(["-L", &self.socket, "send-keys"])
                .args(keys)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    /// Waits for the command to end; its exit status and the screen.
    fn finish(&self) -> (i32, String) {
        let screen = self.expect("[exit ");
        let code = screen
            .split("[exit ")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1);
        (code, screen)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn server(extra: &[(&str, String)]) -> (Server, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut settings: Vec<(&str, String)> = vec![
        ("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}")),
        ("GATEHOUSE_PUBLIC_BASEURL", base.clone()),
        ("GATEHOUSE_REGISTRATION__ENABLED", "true".into()),
        (
            "GATEHOUSE_REGISTRATION__FLOWS",
            r#"[["m.login.dummy"]]"#.into(),
        ),
    ];
    settings.extend_from_slice(extra);
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (Server::start(&pairs), base)
}

#[test]
fn login_passwd_and_device_deletion_prompt_as_a_person_expects() {
    let (server, base) = server(&[]);
    server.create_user("tia", "secret-one", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Login: the password is not echoed.
    let t = Terminal::run(d, &["login", "--homeserver", &base, "--user", "tia"]);
    t.expect("Password: ");
    t.type_line("secret-one");
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Logged in as @tia:localhost"), "{screen}");
    assert!(
        !screen.contains("secret-one"),
        "the password was echoed:\n{screen}"
    );
    drop(t);

    // A second device, to delete.
    let t = Terminal::run(
        d,
        &[
            "login",
            "--homeserver",
            &base,
            "--user",
            "tia",
            "--profile",
            "other",
            "--device-id",
            "OTHERDEV",
        ],
    );
    t.expect("Password: ");
    t.type_line("secret-one");
    assert_eq!(t.finish().0, 0);
    drop(t);

    // passwd: the new password twice, then the current one, named so.
    let t = Terminal::run(d, &["passwd", "--keep-devices"]);
    t.expect("New password: ");
    t.type_line("secret-two");
    t.expect("New password again: ");
    t.type_line("secret-two");
    t.expect("Current password: ");
    t.type_line("secret-one");
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Password changed"), "{screen}");
    assert!(
        !screen.contains("secret-"),
        "a password was echoed:\n{screen}"
    );
    drop(t);

    // Deleting a device: UIA asks for the account's password; a wrong one
    // is said so and asked again.
    let t = Terminal::run(d, &["devices", "delete", "OTHERDEV"]);
    t.expect("Password for @tia:localhost: ");
    t.type_line("wrong");
    t.expect("Invalid username or password");
    t.type_line("secret-two");
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Deleted OTHERDEV"), "{screen}");
    drop(t);

    // Deleting this profile's own device: asked first; no is no.
    let own = {
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("default.json")).unwrap())
                .unwrap();
        stored["session"]["device_id"].as_str().unwrap().to_owned()
    };
    let t = Terminal::run(d, &["devices", "delete", &own]);
    t.expect("is this profile's own device");
    t.type_line("n");
    let (code, screen) = t.finish();
    assert_ne!(code, 0, "{screen}");
    assert!(screen.contains("nothing deleted"), "{screen}");
}

#[test]
fn registration_confirms_the_password_and_shows_a_spinner_while_waiting() {
    let smtp = Smtp::start();
    let mut extra = smtp.settings();
    extra.push((
        "GATEHOUSE_REGISTRATION__FLOWS",
        r#"[["m.login.email.identity"]]"#.into(),
    ));
    let (server, base) = server(&extra);
    server.create_user("taken", "pw", &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // A taken name: said before any password is asked.
    let t = Terminal::run(
        d,
        &["register", "--homeserver", &base, "--username", "taken"],
    );
    let (code, screen) = t.finish();
    assert_ne!(code, 0);
    assert!(!screen.contains("New password"), "{screen}");
    drop(t);

    // Mismatched passwords: refused.
    let t = Terminal::run(d, &["register", "--homeserver", &base, "--username", "uma"]);
    t.expect("New password: ");
    t.type_line("one");
    t.expect("New password again: ");
    t.type_line("two");
    let (code, screen) = t.finish();
    assert_ne!(code, 0);
    assert!(screen.contains("do not match"), "{screen}");
    drop(t);

    // The email stage: a spinner says what is awaited and how to cancel,
    // until the link is opened.
    let t = Terminal::run(
        d,
        &[
            "register",
            "--homeserver",
            &base,
            "--username",
            "uma",
            "--email",
            "uma@example.org",
        ],
    );
    t.expect("New password: ");
    t.type_line("pw-uma");
    t.expect("New password again: ");
    t.type_line("pw-uma");
    let screen = t.expect("Waiting for you to open the link we emailed (Ctrl-C to cancel)");
    let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    assert!(screen.chars().any(|c| frames.contains(&c)), "{screen}");
    let link = link_in(&smtp.wait_for(1));
    let opened = reqwest::blocking_get(&link);
    assert!(opened, "the link opens");
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Registered @uma:localhost"), "{screen}");
    assert!(
        !screen.contains("Waiting for you"),
        "the spinner's line is cleared:\n{screen}"
    );
}

/// GET `url` on a runtime of its own (these tests are synchronous).
mod reqwest {
    pub fn blocking_get(url: &str) -> bool {
        let url = url.to_owned();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            ::reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    }
}
