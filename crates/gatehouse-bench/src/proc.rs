//! Child processes under test: spawning, their address, their memory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A binary next to this one (cargo puts workspace binaries together).
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p gatehouse`",
            path.display()
        );
    }
    Ok(path)
}

/// Settings for the server under test: the default (production) Argon2
/// cost, rate limits out of the way, the default durability.
pub fn bench_env(data: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("GATEHOUSE_DATA_DIR".to_owned(), data.display().to_string()),
        ("GATEHOUSE_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("GATEHOUSE_LOG_FILTER".to_owned(), "warn".to_owned()),
        (
            "GATEHOUSE_REGISTRATION__ENABLED".to_owned(),
            "true".to_owned(),
        ),
    ];
    for limit in [
        "LOGIN_PER_ADDRESS",
        "LOGIN_PER_ACCOUNT",
        "FAILED_LOGINS_PER_ACCOUNT",
        "REGISTRATION_PER_ADDRESS",
        "UIA_SESSIONS_PER_ADDRESS",
        "USERNAME_CHECKS_PER_ADDRESS",
        "REFRESHES_PER_ADDRESS",
        "THREEPID_VALIDATION",
        "REGISTRATION_TOKEN_CHECKS",
        "LOGIN_TOKENS_PER_ACCOUNT",
    ] {
        env.push((
            format!("GATEHOUSE_RATE_LIMITS__{limit}__PER_SECOND"),
            "1000000".into(),
        ));
        env.push((
            format!("GATEHOUSE_RATE_LIMITS__{limit}__BURST_COUNT"),
            "1000000".into(),
        ));
    }
    env
}

pub fn admin(bin: &Path, env: &[(String, String)], args: &[&str]) -> Result<()> {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A running server that printed `… listening on http://ADDR` first.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
}

impl Process {
    pub fn spawn(bin: &Path, args: &[&str], env: &[(String, String)]) -> Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .context("no address")?
            .parse()
            .context("address")?;
        let pid = child.id();
        Ok(Self { child, addr, pid })
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's RSS every 50 ms and keeps the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self { stop, peak, thread }
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}
