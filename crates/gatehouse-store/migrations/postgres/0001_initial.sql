-- Gatehouse on PostgreSQL, schema version 1: the tables of SQLite's
-- migrations 1 to 9 as they stand after them, in PostgreSQL's types
-- (BOOLEAN flags, BYTEA hashes, BIGINT milliseconds, identity columns that
-- never hand out an ID twice). Append only: a released file is never edited.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest      BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    locked        BOOLEAN NOT NULL DEFAULT FALSE,
    suspended     BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts    BIGINT NOT NULL
);

CREATE TABLE threepids (
    medium   TEXT NOT NULL,
    address  TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    added_ts BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX threepids_user ON threepids (user_id);

CREATE TABLE devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    last_seen_ip TEXT,
    last_seen_ts BIGINT,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE refresh_tokens (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    parent_id  BIGINT,
    expires_ts BIGINT,
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_parent ON refresh_tokens (parent_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

CREATE TABLE access_tokens (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash     BYTEA NOT NULL UNIQUE,
    user_id        TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    refresh_id     BIGINT,
    pending_parent BIGINT,
    expires_ts     BIGINT,
    created_ts     BIGINT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_id);

CREATE TABLE uia_sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    body_hash  BYTEA NOT NULL,
    completed  TEXT NOT NULL DEFAULT '[]',
    data       TEXT NOT NULL DEFAULT '{}',
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL,
    consumed   BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX uia_sessions_expiry ON uia_sessions (expires_ts);

CREATE TABLE registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending      BIGINT NOT NULL DEFAULT 0,
    completed    BIGINT NOT NULL DEFAULT 0,
    expiry_ts    BIGINT,
    created_ts   BIGINT NOT NULL
);

CREATE TABLE threepid_validations (
    sid                TEXT PRIMARY KEY,
    client_secret_hash BYTEA NOT NULL,
    medium             TEXT NOT NULL,
    address            TEXT NOT NULL,
    token_hash         BYTEA NOT NULL,
    send_attempt       BIGINT NOT NULL,
    validated_ts       BIGINT,
    created_ts         BIGINT NOT NULL,
    expires_ts         BIGINT NOT NULL,
    next_link          TEXT,
    failed_attempts    BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX threepid_validations_request
    ON threepid_validations (client_secret_hash, medium, address);

CREATE TABLE cross_signing_keys (
    user_id    TEXT PRIMARY KEY,
    keys       TEXT NOT NULL,
    updated_ts BIGINT NOT NULL
);

CREATE TABLE login_tokens (
    token_hash BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX login_tokens_user ON login_tokens (user_id);

CREATE TABLE homeserver_syncs (
    localpart       TEXT PRIMARY KEY,
    version         BIGINT NOT NULL,
    erase           BOOLEAN NOT NULL DEFAULT FALSE,
    reactivate      BOOLEAN NOT NULL DEFAULT FALSE,
    deleted_devices TEXT NOT NULL DEFAULT '[]',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ts BIGINT NOT NULL
);

CREATE TABLE web_sessions (
    id_hash    BYTEA PRIMARY KEY,
    user_id    TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_ts);

CREATE TABLE accepted_policies (
    user_id     TEXT NOT NULL,
    policy      TEXT NOT NULL,
    version     TEXT NOT NULL,
    accepted_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, policy)
);
