//! `LISTEN gatehouse_revoked`: session changes made by any instance, for
//! every instance's token cache. Each transaction that ends or changes
//! sessions sends `pg_notify('gatehouse_revoked', user_id)`, delivered by
//! PostgreSQL only once it commits.

use std::time::Duration;

use gatehouse_core::user_id::UserId;
use tokio_postgres::AsyncMessage;

use super::{PostgresStore, db};
use crate::{OnRevoked, Revoked, StoreResult};

/// Wait before listening again after the connection was lost.
const RECONNECT: Duration = Duration::from_secs(1);

impl PostgresStore {
    /// Listens until the future is dropped, reconnecting when the
    /// connection fails. After each (re)connection everything counts as
    /// revoked: notifications sent while nobody listened are lost.
    pub(super) async fn listen(&self, revoked: OnRevoked) -> StoreResult<()> {
        loop {
            if let Err(e) = self.listen_once(&revoked).await {
                tracing::warn!(error = %e, "lost the revocation listener; reconnecting");
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    async fn listen_once(&self, revoked: &OnRevoked) -> StoreResult<()> {
        let (client, mut connection) = self
            .options
            .pg_config()?
            .connect(self.options.tls()?)
            .await
            .map_err(db)?;
        let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
        // The connection runs here; its notifications come out through the
        // channel. It ends when the server closes it or `client` is dropped.
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if sender.send(n.payload().to_owned()).is_err() {
                            return Ok(());
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        });
        client
            .batch_execute("LISTEN gatehouse_revoked")
            .await
            .map_err(db)?;
        revoked(Revoked::Everything);
        while let Some(user) = received.recv().await {
            revoked(Revoked::User(UserId::from_trusted(user)));
        }
        drop(client);
        match driver.await {
            Ok(Err(e)) => Err(db(e)),
            _ => Ok(()),
        }
    }
}
