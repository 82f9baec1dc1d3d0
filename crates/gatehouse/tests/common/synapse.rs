//! A real Synapse (matrix-synapse 1.163.2, started on loopback by
//! `interop/synapse/synapse.sh`, which `scripts/test` installs).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/synapse/synapse.sh")
}

/// A Synapse on a fresh directory and port, stopped on drop.
pub struct Synapse {
    dir: tempfile::TempDir,
    pub base: String,
}

impl Synapse {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra arguments after DIR PORT (an SMTP port). Synapse needs
    /// its port in its config, so it is chosen here; when another test's
    /// server takes that port during Synapse's seconds of start-up, the
    /// start is tried again on another port (at most three times).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut failures = Vec::new();
        while failures.len() < 3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port().to_string();
            let out = Command::new("bash")
                .arg(script())
                .args(["start", dir.path().to_str().unwrap(), &port])
                .args(extra)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                let stdout = String::from_utf8(out.stdout).unwrap();
                let base = stdout
                    .trim()
                    .strip_prefix("SYNAPSE_URL=")
                    .expect("SYNAPSE_URL line")
                    .trim_end_matches('/')
                    .to_owned();
                return Self { dir, base };
            }
            let port_taken = stderr.contains("Address already in use")
                || stderr.contains("something already answers");
            failures.push(stderr);
            if !port_taken {
                break;
            }
        }
        panic!(
            "synapse.sh start failed (run ./scripts/test, which installs Synapse): {}",
            failures.join("\n---- next attempt ----\n")
        );
    }

    /// Runs a `synapse.sh` command on this Synapse's directory; its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "synapse.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The directory holding its configuration and `homeserver.db`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the process and waits for it (its database is then quiescent).
    pub fn stop(&self) {
        self.run(&["stop"]);
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.dir.path().to_str().unwrap()])
            .output();
    }
}
