//! A persisted session shared by several SDK clients, the way processes
//! share a CLI profile: one store, one lock around refreshes.

use std::sync::{Arc, Mutex};

use gatehouse_client::{Client, CrossProcessLock, LockGuard, Session};

#[derive(Clone, Default)]
pub struct SharedStore {
    pub session: Arc<Mutex<Option<Session>>>,
    /// Every session change the clients persisted (`None`: it ended).
    pub saved: Arc<Mutex<Vec<Option<Session>>>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl SharedStore {
    pub fn new(session: Session) -> Self {
        let store = Self::default();
        *store.session.lock().unwrap() = Some(session);
        store
    }

    /// A client on the stored session, persisting both ways through it.
    pub fn client(&self, base: &str) -> Client {
        let (reader, writer, saved) = (
            self.session.clone(),
            self.session.clone(),
            self.saved.clone(),
        );
        let lock = self.lock.clone();
        let refresh_lock: CrossProcessLock = Arc::new(move || {
            let lock = lock.clone();
            Box::pin(async move { Ok(Box::new(lock.lock_owned().await) as LockGuard) })
        });
        Client::builder(base)
            .session(
                self.session
                    .lock()
                    .unwrap()
                    .clone()
                    .expect("a stored session"),
            )
            .session_callbacks(
                move || Ok(reader.lock().unwrap().clone()),
                move |s| {
                    *writer.lock().unwrap() = s.cloned();
                    saved.lock().unwrap().push(s.cloned());
                    Ok(())
                },
            )
            .cross_process_refresh_lock(refresh_lock)
            .build()
            .unwrap()
    }
}

/// Two clients on one persisted session take turns refreshing: each
/// refresh spends the refresh token the other holds in memory, and each
/// client carries on with what the other persisted instead of failing.
pub async fn two_clients_take_turns_refreshing(base: &str, session: Session) {
    let store = SharedStore::new(session);
    let (a, b) = (store.client(base), store.client(base));
    for round in 0..3 {
        a.refresh()
            .await
            .unwrap_or_else(|e| panic!("round {round}, a: {e}"));
        a.whoami().await.unwrap();
        // b's tokens are a's old ones: it reloads before refreshing.
        b.refresh()
            .await
            .unwrap_or_else(|e| panic!("round {round}, b: {e}"));
        b.whoami().await.unwrap();
        // a's token was replaced by b's refresh: a request reloads too.
        a.whoami()
            .await
            .unwrap_or_else(|e| panic!("round {round}, a after b: {e}"));
    }
    // The store holds the last refresh's tokens. (Whether a still uses
    // its own older ones depends on the server: Gatehouse revokes them once
    // the new ones are used, Synapse lets them live until they expire.)
    assert_eq!(*store.session.lock().unwrap(), b.session());
}
