//! Versioned schema migrations, tracked in SQLite's `user_version`.
//! Append only: a released migration is never edited.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: accounts, third-party IDs, devices, tokens.
    r"
    CREATE TABLE users (
        user_id       TEXT PRIMARY KEY,
        password_hash TEXT,
        is_admin      INTEGER NOT NULL DEFAULT 0,
        is_guest      INTEGER NOT NULL DEFAULT 0,
        deactivated   INTEGER NOT NULL DEFAULT 0,
        created_ts    INTEGER NOT NULL
    );
    CREATE TABLE threepids (
        medium     TEXT NOT NULL,
        address    TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        added_ts   INTEGER NOT NULL,
        PRIMARY KEY (medium, address)
    );
    CREATE INDEX threepids_user ON threepids (user_id);
    CREATE TABLE devices (
        user_id      TEXT NOT NULL,
        device_id    TEXT NOT NULL,
        display_name TEXT,
        last_seen_ip TEXT,
        last_seen_ts INTEGER,
        created_ts   INTEGER NOT NULL,
        PRIMARY KEY (user_id, device_id)
    );
    CREATE TABLE refresh_tokens (
        id         INTEGER PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE,
        user_id    TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        parent_id  INTEGER,
        expires_ts INTEGER,
        created_ts INTEGER NOT NULL
    );
    CREATE INDEX refresh_tokens_parent ON refresh_tokens (parent_id);
    CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
    CREATE TABLE access_tokens (
        id             INTEGER PRIMARY KEY,
        token_hash     BLOB NOT NULL UNIQUE,
        user_id        TEXT NOT NULL,
        device_id      TEXT NOT NULL,
        refresh_id     INTEGER,
        pending_parent INTEGER,
        expires_ts     INTEGER,
        created_ts     INTEGER NOT NULL
    );
    CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
    CREATE INDEX access_tokens_refresh ON access_tokens (refresh_id);
    ",
    // 2: user-interactive auth, registration tokens, 3PID validation, cross-signing keys.
    r"
    CREATE TABLE uia_sessions (
        id         TEXT PRIMARY KEY,
        user_id    TEXT,
        method     TEXT NOT NULL,
        path       TEXT NOT NULL,
        body_hash  BLOB NOT NULL,
        completed  TEXT NOT NULL DEFAULT '[]',
        data       TEXT NOT NULL DEFAULT '{}',
        created_ts INTEGER NOT NULL,
        expires_ts INTEGER NOT NULL,
        consumed   INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX uia_sessions_expiry ON uia_sessions (expires_ts);
    CREATE TABLE registration_tokens (
        token        TEXT PRIMARY KEY,
        uses_allowed INTEGER,
        pending      INTEGER NOT NULL DEFAULT 0,
        completed    INTEGER NOT NULL DEFAULT 0,
        expiry_ts    INTEGER,
        created_ts   INTEGER NOT NULL
    );
    CREATE TABLE threepid_validations (
        sid           TEXT PRIMARY KEY,
        client_secret TEXT NOT NULL,
        medium        TEXT NOT NULL,
        address       TEXT NOT NULL,
        token_hash    BLOB NOT NULL,
        send_attempt  INTEGER NOT NULL,
        validated_ts  INTEGER,
        created_ts    INTEGER NOT NULL,
        expires_ts    INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX threepid_validations_request
        ON threepid_validations (client_secret, medium, address);
    CREATE TABLE cross_signing_keys (
        user_id    TEXT PRIMARY KEY,
        keys       TEXT NOT NULL,
        updated_ts INTEGER NOT NULL
    );
    ",
    // 3: single-use login tokens (`m.login.token`).
    r"
    CREATE TABLE login_tokens (
        token_hash BLOB PRIMARY KEY,
        user_id    TEXT NOT NULL,
        expires_ts INTEGER NOT NULL,
        created_ts INTEGER NOT NULL
    );
    ",
    // 4: where a validated email link redirects (`next_link`), and wrong
    // secrets presented (a validation dies after a few: SMS codes are short).
    r"
    ALTER TABLE threepid_validations ADD COLUMN next_link TEXT;
    ALTER TABLE threepid_validations ADD COLUMN failed_attempts INTEGER NOT NULL DEFAULT 0;
    ",
    // 5: delegation to a homeserver (pending pushes, one row per user) and
    // browser sessions of the account page.
    r"
    CREATE TABLE homeserver_syncs (
        localpart       TEXT PRIMARY KEY,
        version         INTEGER NOT NULL,
        erase           INTEGER NOT NULL DEFAULT 0,
        reactivate      INTEGER NOT NULL DEFAULT 0,
        deleted_devices TEXT NOT NULL DEFAULT '[]',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_ts INTEGER NOT NULL
    );
    CREATE TABLE web_sessions (
        id_hash    BLOB PRIMARY KEY,
        user_id    TEXT NOT NULL,
        csrf_token TEXT NOT NULL,
        expires_ts INTEGER NOT NULL
    );
    CREATE INDEX web_sessions_expiry ON web_sessions (expires_ts);
    ",
];

/// Brings the schema up to date, each step in its own transaction.
pub fn run(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// The schema version this build expects.
pub fn latest() -> usize {
    MIGRATIONS.len()
}
