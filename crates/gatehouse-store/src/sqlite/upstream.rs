//! Single sign-on: upstream identities linked to accounts, and the flows
//! in flight between a redirect to a provider and its callback.

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{SqliteStore, backend, from_ts, is_unique_violation, ts};
use crate::{SsoFlows, StoreError, StoreResult, Unlinked, UpstreamLink, UpstreamLinks};

pub(super) fn add_link(tx: &Transaction<'_>, link: &UpstreamLink) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO upstream_links (provider, subject, user_id, created_ts) VALUES (?1, ?2, ?3, ?4)",
        params![
            link.provider,
            link.subject,
            link.user_id.as_str(),
            ts(Some(link.created_at))
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::LinkInUse
        } else {
            backend(e)
        }
    })?;
    Ok(())
}

#[async_trait]
impl UpstreamLinks for SqliteStore {
    async fn upstream_link_owner(
        &self,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Option<UserId>> {
        let (provider, subject) = (provider.to_owned(), subject.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT user_id FROM upstream_links WHERE provider = ?1 AND subject = ?2",
            )?
            .query_row([provider, subject], |r| Ok(UserId::from_trusted(r.get(0)?)))
            .optional()
        })
        .await
    }

    async fn upstream_links(&self, user_id: &UserId) -> StoreResult<Vec<UpstreamLink>> {
        let id = user_id.as_str().to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT provider, subject, created_ts FROM upstream_links
                 WHERE user_id = ?1 ORDER BY created_ts, provider, subject",
            )?
            .query_map([&id], |r| {
                Ok(UpstreamLink {
                    user_id: UserId::from_trusted(id.clone()),
                    provider: r.get(0)?,
                    subject: r.get(1)?,
                    created_at: from_ts(r.get(2)?).unwrap_or(0),
                })
            })?
            .collect()
        })
        .await
    }

    async fn add_upstream_link(&self, link: &UpstreamLink) -> StoreResult<()> {
        let link = link.clone();
        self.write(move |tx| add_link(tx, &link)).await
    }

    async fn remove_upstream_link(
        &self,
        user_id: &UserId,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Unlinked> {
        let (id, provider, subject) = (
            user_id.as_str().to_owned(),
            provider.to_owned(),
            subject.to_owned(),
        );
        self.write(move |tx| {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM upstream_links WHERE user_id = ?1 AND provider = ?2 AND subject = ?3",
                    params![id, provider, subject],
                    |_| Ok(()),
                )
                .optional()
                .map_err(backend)?
                .is_some();
            if !exists {
                return Ok(Unlinked::NotFound);
            }
            // The one writer makes this check and the delete one step.
            let other_ways: i64 = tx
                .query_row(
                    "SELECT (SELECT count(*) FROM users WHERE user_id = ?1 AND password_hash IS NOT NULL)
                          + (SELECT count(*) FROM upstream_links WHERE user_id = ?1) - 1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            if other_ways < 1 {
                return Ok(Unlinked::LastWayIn);
            }
            tx.execute(
                "DELETE FROM upstream_links WHERE user_id = ?1 AND provider = ?2 AND subject = ?3",
                params![id, provider, subject],
            )
            .map_err(backend)?;
            Ok(Unlinked::Removed)
        })
        .await
    }
}

#[async_trait]
impl SsoFlows for SqliteStore {
    async fn create_sso_flow(
        &self,
        hash: &TokenHash,
        data: &serde_json::Value,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let (hash, data) = (*hash, data.to_string());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO sso_flows (id_hash, data, created_ts, expires_ts) VALUES (?1, ?2, ?3, ?4)",
                params![&hash.0[..], data, ts(Some(now)), ts(Some(expires_at))],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn take_sso_flow(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<serde_json::Value>> {
        let hash = *hash;
        let text: Option<String> = self
            .write(move |tx| {
                tx.query_row(
                    "DELETE FROM sso_flows WHERE id_hash = ?1 AND expires_ts > ?2 RETURNING data",
                    params![&hash.0[..], ts(Some(now))],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)
            })
            .await?;
        text.map(|t| serde_json::from_str(&t).map_err(backend))
            .transpose()
    }
}
