//! Single sign-on: upstream identities linked to accounts, and the flows
//! in flight between a redirect to a provider and its callback.

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use gatehouse_core::token::TokenHash;
use gatehouse_core::user_id::UserId;

use super::{PostgresStore, Tx, backend, exec, from_ts, insert, query_opt, ts, write_tx};
use crate::{SsoFlows, StoreError, StoreResult, Unlinked, UpstreamLink, UpstreamLinks};

pub(super) async fn add_link(tx: &Tx<'_>, link: &UpstreamLink) -> StoreResult<()> {
    insert(
        tx,
        "INSERT INTO upstream_links (provider, subject, user_id, created_ts) VALUES ($1, $2, $3, $4)",
        &[
            &link.provider,
            &link.subject,
            &link.user_id.as_str(),
            &ts(link.created_at),
        ],
        StoreError::LinkInUse,
    )
    .await
}

async fn remove_link(
    tx: &Tx<'_>,
    user_id: &str,
    provider: &str,
    subject: &str,
) -> StoreResult<Unlinked> {
    // The account's row, locked, orders concurrent unlinks of one account:
    // two of them cannot each see the other's link as the remaining way in.
    let Some(user) = query_opt(
        tx,
        "SELECT password_hash IS NOT NULL FROM users WHERE user_id = $1 FOR UPDATE",
        &[&user_id],
    )
    .await?
    else {
        return Ok(Unlinked::NotFound);
    };
    let has_password: bool = user.get(0);
    let counts = query_opt(
        tx,
        "SELECT count(*), count(*) FILTER (WHERE provider = $2 AND subject = $3)
         FROM upstream_links WHERE user_id = $1",
        &[&user_id, &provider, &subject],
    )
    .await?
    .ok_or_else(|| backend("count returned no row"))?;
    let (links, this): (i64, i64) = (counts.get(0), counts.get(1));
    if this == 0 {
        return Ok(Unlinked::NotFound);
    }
    if !has_password && links <= 1 {
        return Ok(Unlinked::LastWayIn);
    }
    exec(
        tx,
        "DELETE FROM upstream_links WHERE user_id = $1 AND provider = $2 AND subject = $3",
        &[&user_id, &provider, &subject],
    )
    .await?;
    Ok(Unlinked::Removed)
}

#[async_trait]
impl UpstreamLinks for PostgresStore {
    async fn upstream_link_owner(
        &self,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Option<UserId>> {
        Ok(self
            .read_opt(
                "SELECT user_id FROM upstream_links WHERE provider = $1 AND subject = $2",
                &[&provider, &subject],
            )
            .await?
            .map(|r| UserId::from_trusted(r.get(0))))
    }

    async fn upstream_links(&self, user_id: &UserId) -> StoreResult<Vec<UpstreamLink>> {
        Ok(self
            .read_all(
                "SELECT provider, subject, created_ts FROM upstream_links
                 WHERE user_id = $1 ORDER BY created_ts, provider, subject",
                &[&user_id.as_str()],
            )
            .await?
            .into_iter()
            .map(|r| UpstreamLink {
                user_id: user_id.clone(),
                provider: r.get(0),
                subject: r.get(1),
                created_at: from_ts(r.get(2)),
            })
            .collect())
    }

    async fn add_upstream_link(&self, link: &UpstreamLink) -> StoreResult<()> {
        write_tx!(self, |tx| add_link(&tx, link).await?)
    }

    async fn remove_upstream_link(
        &self,
        user_id: &UserId,
        provider: &str,
        subject: &str,
    ) -> StoreResult<Unlinked> {
        write_tx!(self, |tx| remove_link(
            &tx,
            user_id.as_str(),
            provider,
            subject
        )
        .await?)
    }
}

#[async_trait]
impl SsoFlows for PostgresStore {
    async fn create_sso_flow(
        &self,
        hash: &TokenHash,
        data: &serde_json::Value,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        exec(
            &client,
            "INSERT INTO sso_flows (id_hash, data, created_ts, expires_ts) VALUES ($1, $2, $3, $4)",
            &[&&hash.0[..], &data.to_string(), &ts(now), &ts(expires_at)],
        )
        .await?;
        Ok(())
    }

    async fn take_sso_flow(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<serde_json::Value>> {
        let client = self.client().await?;
        // One statement: of concurrent takers, one deletes the row.
        query_opt(
            &client,
            "DELETE FROM sso_flows WHERE id_hash = $1 AND expires_ts > $2 RETURNING data",
            &[&&hash.0[..], &ts(now)],
        )
        .await?
        .map(|r| serde_json::from_str(&r.get::<_, String>(0)).map_err(backend))
        .transpose()
    }
}
