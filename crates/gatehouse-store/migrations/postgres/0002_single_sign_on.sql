-- Single sign-on: identities at upstream providers linked to accounts, and
-- sign-in attempts between a redirect to a provider and its callback.

CREATE TABLE upstream_links (
    provider   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX upstream_links_user ON upstream_links (user_id);

CREATE TABLE sso_flows (
    id_hash    BYTEA PRIMARY KEY,
    data       TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX sso_flows_expiry ON sso_flows (expires_ts);
