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
    // 6: 3PID validations keep only the SHA-256 of their client_secret (a
    // bearer secret), not the secret. SQLite has no SHA-256 to convert the
    // rows with, so pending validations are dropped: they expire within an
    // hour anyway (an SMS code within 15 minutes), and a client whose link
    // stops working asks again. `sid` stays in clear: it is the server's
    // lookup key, returned to the client, and useless without the secret.
    // Login tokens get an index by user: a password change and
    // `/logout/all` now delete the account's outstanding ones.
    r"
    DROP TABLE threepid_validations;
    CREATE TABLE threepid_validations (
        sid                TEXT PRIMARY KEY,
        client_secret_hash BLOB NOT NULL,
        medium             TEXT NOT NULL,
        address            TEXT NOT NULL,
        token_hash         BLOB NOT NULL,
        send_attempt       INTEGER NOT NULL,
        validated_ts       INTEGER,
        created_ts         INTEGER NOT NULL,
        expires_ts         INTEGER NOT NULL,
        next_link          TEXT,
        failed_attempts    INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX threepid_validations_request
        ON threepid_validations (client_secret_hash, medium, address);
    CREATE INDEX login_tokens_user ON login_tokens (user_id);
    ",
    // 7: token row IDs are never reused (AUTOINCREMENT). A rotation's
    // clean-up names its parent and child by row ID; with plain rowids a
    // deleted newest row's ID went to the next token inserted, possibly
    // another user's, which a late clean-up would then have deleted. The
    // tables are rebuilt as they were, with the same rows and indexes.
    r"
    CREATE TABLE refresh_tokens_new (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash BLOB NOT NULL UNIQUE,
        user_id    TEXT NOT NULL,
        device_id  TEXT NOT NULL,
        parent_id  INTEGER,
        expires_ts INTEGER,
        created_ts INTEGER NOT NULL
    );
    INSERT INTO refresh_tokens_new (id, token_hash, user_id, device_id, parent_id, expires_ts, created_ts)
        SELECT id, token_hash, user_id, device_id, parent_id, expires_ts, created_ts FROM refresh_tokens;
    DROP TABLE refresh_tokens;
    ALTER TABLE refresh_tokens_new RENAME TO refresh_tokens;
    CREATE INDEX refresh_tokens_parent ON refresh_tokens (parent_id);
    CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
    CREATE TABLE access_tokens_new (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash     BLOB NOT NULL UNIQUE,
        user_id        TEXT NOT NULL,
        device_id      TEXT NOT NULL,
        refresh_id     INTEGER,
        pending_parent INTEGER,
        expires_ts     INTEGER,
        created_ts     INTEGER NOT NULL
    );
    INSERT INTO access_tokens_new
        SELECT id, token_hash, user_id, device_id, refresh_id, pending_parent, expires_ts, created_ts
        FROM access_tokens;
    DROP TABLE access_tokens;
    ALTER TABLE access_tokens_new RENAME TO access_tokens;
    CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
    CREATE INDEX access_tokens_refresh ON access_tokens (refresh_id);
    ",
    // 8: account locking and suspension, set by administrators.
    r"
    ALTER TABLE users ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE users ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
    ",
    // 9: which version of each policy (`m.login.terms`) each user accepted,
    // and when: kept through deactivation, as a record of consent.
    r"
    CREATE TABLE accepted_policies (
        user_id     TEXT NOT NULL,
        policy      TEXT NOT NULL,
        version     TEXT NOT NULL,
        accepted_ts INTEGER NOT NULL,
        PRIMARY KEY (user_id, policy)
    );
    ",
    // 10: single sign-on: identities at upstream providers linked to
    // accounts, and sign-in attempts between redirect and callback.
    r"
    CREATE TABLE upstream_links (
        provider   TEXT NOT NULL,
        subject    TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        created_ts INTEGER NOT NULL,
        PRIMARY KEY (provider, subject)
    );
    CREATE INDEX upstream_links_user ON upstream_links (user_id);
    CREATE TABLE sso_flows (
        id_hash    BLOB PRIMARY KEY,
        data       TEXT NOT NULL,
        created_ts INTEGER NOT NULL,
        expires_ts INTEGER NOT NULL
    );
    CREATE INDEX sso_flows_expiry ON sso_flows (expires_ts);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validations_kept_in_clear_are_dropped_by_migration_6() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute(
            "INSERT INTO threepid_validations
               (sid, client_secret, medium, address, token_hash, send_attempt, created_ts, expires_ts)
             VALUES ('s', 'clear-secret', 'email', 'a@example.org', x'00', 1, 1, 2)",
            [],
        )
        .unwrap();
        run(&mut conn).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM threepid_validations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 0, "the secret kept in clear is gone");
        let has_clear_column: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('threepid_validations') WHERE name = 'client_secret')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!has_clear_column);
    }
}
