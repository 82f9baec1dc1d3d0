//! A small pool of low-priority threads for password hashing.
//!
//! Argon2 is meant to be slow. Run on the async workers it would stall every
//! other request; run on tokio's blocking pool it would be unbounded and
//! compete with token checks at equal priority. These threads are few
//! (bounded in-flight work), run at nice 10 (the scheduler prefers the async
//! workers, so `whoami` latency holds during a login storm), and have a
//! bounded queue (beyond it, callers get a "busy" answer to turn into 429).
//! Each thread keeps its Argon2 working memory between verifications.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::time::Instant;

use gatehouse_core::password::{MemoryBlocks, PasswordPolicy, Verdict};
use tokio::sync::{Semaphore, oneshot};
use zeroize::Zeroizing;

type Job = Box<dyn FnOnce(&PasswordPolicy, &mut MemoryBlocks) + Send>;

/// The queue is full: too many password checks are waiting.
#[derive(Debug, Clone, Copy)]
pub struct Busy;

/// Handle to the hashing threads.
#[derive(Clone)]
pub struct HashPool {
    queue: mpsc::SyncSender<Job>,
    admission: Arc<Semaphore>,
    threads: usize,
    /// The longest a bcrypt check has taken here, in microseconds: see
    /// [`Self::failure_floor`].
    legacy_micros: Arc<AtomicU64>,
}

/// A stalled machine must not make every later failure slow.
const MAX_FAILURE_FLOOR: Duration = Duration::from_secs(2);

impl HashPool {
    /// Starts `threads` hashing threads sharing one policy.
    pub fn start(policy: PasswordPolicy, threads: usize, max_queued: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(max_queued.max(1));
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let policy = policy.clone();
            std::thread::Builder::new()
                .name(format!("gatehouse-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    let mut memory = MemoryBlocks::default();
                    loop {
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&policy, &mut memory),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawning a hashing thread");
        }
        Self {
            queue: tx,
            admission: Arc::new(Semaphore::new(threads + max_queued)),
            threads,
            legacy_micros: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PasswordPolicy, &mut MemoryBlocks) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let _permit = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |p, m| {
            let _ = tx.send(f(p, m));
        });
        self.queue.try_send(job).map_err(|_| Busy)?;
        rx.await.map_err(|_| Busy)
    }

    /// Checks a password (or costs the same when `stored` is `None`).
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<Verdict, Busy> {
        let legacy = stored
            .as_deref()
            .is_some_and(gatehouse_core::password::is_bcrypt)
            .then(|| self.legacy_micros.clone());
        self.run(move |p, m| {
            let started = Instant::now();
            let verdict = p.verify_with(&password, stored.as_deref(), m);
            if let Some(slowest) = legacy {
                record(&slowest, started.elapsed());
            }
            verdict
        })
        .await
    }

    /// Learns what a check of a bcrypt hash of `cost` takes, before any
    /// login has shown it (the server does this at start for the costliest
    /// hash it holds).
    pub async fn learn_bcrypt_cost(&self, cost: u32) -> Result<(), Busy> {
        let slowest = self.legacy_micros.clone();
        self.run(move |p, _| {
            let started = Instant::now();
            p.bcrypt_probe(cost);
            record(&slowest, started.elapsed());
        })
        .await
    }

    /// How long a failed password check should take at least. Accounts
    /// imported with bcrypt hashes (until their first login upgrades them)
    /// take far longer to check than Argon2 ones, so without this, a wrong
    /// password's answer time would tell which accounts exist and are
    /// legacy. Failures — wrong password or unknown account alike — are
    /// answered no sooner than the slowest bcrypt check seen. Only a wait,
    /// no work: it costs no CPU, and a right password is never delayed.
    pub fn failure_floor(&self) -> Duration {
        Duration::from_micros(self.legacy_micros.load(Ordering::Relaxed))
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, Busy> {
        self.run(move |p, m| p.hash_with(&password, m)).await
    }
}

/// Raises `slowest` to `took`, within [`MAX_FAILURE_FLOOR`].
fn record(slowest: &AtomicU64, took: Duration) {
    let micros = took.min(MAX_FAILURE_FLOOR).as_micros();
    slowest.fetch_max(u64::try_from(micros).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Lowers the calling thread's scheduling priority to nice 10.
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread with valid arguments; on
    // Linux, PRIO_PROCESS with a thread ID affects only that thread. A
    // failure (e.g. a seccomp policy) merely leaves the default priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
