//! Stored sessions: one JSON file per profile in `$GATEHOUSE_CLIENT_DIR`
//! (default `~/.config/gatehouse/`), readable only by the user, shared
//! safely by every `gatehouse client` process using the profile.
//!
//! Several processes may use one profile at once (a script running
//! commands in parallel), and a refresh token is spent by its use. So:
//! each save writes a temporary file of its own and renames it over the
//! profile (readers see the old or the new session, never half of one); a
//! refresh happens under an exclusive lock on `<profile>.lock`, after
//! re-reading the profile (another process may have refreshed already);
//! and a token the server refuses is checked against the file before the
//! session is given up (the refresh of another process revokes the token it
//! replaced).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_client::{CrossProcessLock, Error, LockGuard, Session};
use serde::{Deserialize, Serialize};

/// What a profile file holds.
#[derive(Clone, Serialize, Deserialize)]
pub struct Stored {
    pub homeserver: String,
    pub session: Session,
}

/// A named stored session.
#[derive(Clone)]
pub struct Profile {
    pub name: String,
    path: PathBuf,
}

fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GATEHOUSE_CLIENT_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
        });
    base.join("gatehouse")
}

impl Profile {
    pub fn named(name: &str) -> Result<Self, String> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err("a profile name is letters, digits, '-', '_' and '.'".into());
        }
        Ok(Self {
            name: name.to_owned(),
            path: state_dir().join(format!("{name}.json")),
        })
    }

    /// The stored session, if there is one.
    pub fn read(&self) -> Result<Option<Stored>, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// The stored session, which a command needs.
    pub fn load(&self) -> Result<Stored, String> {
        self.read()?.ok_or_else(|| {
            format!(
                "no session for profile '{}': log in with `gatehouse client login`",
                self.name
            )
        })
    }

    /// Replaces the stored session, atomically: a temporary file of this
    /// process's own, made private before anything is written to it,
    /// flushed, then renamed over the profile.
    pub fn save(&self, homeserver: &str, session: &Session) -> Result<(), String> {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let text = serde_json::to_string_pretty(&Stored {
            homeserver: homeserver.to_owned(),
            session: session.clone(),
        })
        .map_err(|e| e.to_string())?;
        // `tempfile` creates with mode 0600 and a unique name.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", self.name))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| e.to_string())?;
        tmp.persist(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(())
    }

    /// Forgets the stored session; `true` if there was one.
    pub fn remove(&self) -> Result<bool, String> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// The lock every process takes around a refresh of this profile.
    pub fn refresh_lock(&self) -> CrossProcessLock {
        let path = self.path.with_extension("lock");
        Arc::new(move || {
            let path = path.clone();
            Box::pin(async move {
                tokio::task::spawn_blocking(move || -> Result<LockGuard, Error> {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| Error::Persistence(format!("{}: {e}", dir.display())))?;
                    }
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::Persistence(format!("{}: {e}", path.display())))?;
                    // Released when the file is closed (the guard dropped).
                    file.lock()
                        .map_err(|e| Error::Persistence(format!("{}: {e}", path.display())))?;
                    Ok(Box::new(file))
                })
                .await
                .map_err(|e| Error::Persistence(e.to_string()))?
            })
        })
    }
}
