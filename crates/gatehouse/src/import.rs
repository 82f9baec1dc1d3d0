//! `gatehouse import synapse`: brings a Synapse deployment's accounts over,
//! so that people keep their IDs, passwords, email addresses, devices and
//! (optionally) their logged-in sessions.
//!
//! Synapse's database is only read, in one read transaction (a consistent
//! snapshot even if Synapse is still running). Password hashes are carried
//! over as they are: Gatehouse verifies Synapse's bcrypt hashes and upgrades
//! them at the next login, so no password is ever recomputed here, which is
//! what makes the import fast.
//!
//! One thread reads Synapse's tables, four cursors ordered by user ID merged
//! like a join, and hashes the tokens; the caller writes each batch in one
//! store transaction meanwhile. Rows that already exist in Gatehouse are left
//! as they are, so the import can be run again (after an interruption, or to
//! pick up what changed on a Synapse still running) and adds only what is new.

use std::path::Path;
use tokio::time::Instant;

use clap::{Args, Subcommand};
use gatehouse_core::identifier::{Medium, canonical_threepid};
use gatehouse_core::user_id::UserId;
use gatehouse_core::{Clock, SystemClock, Timestamp};
use gatehouse_server::Database;
use gatehouse_server::config::Config;
use gatehouse_store::{ImportCounts, ImportedDevice, ImportedUser};
use rusqlite::fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::{Connection, OpenFlags, Row, Rows};

#[derive(Subcommand)]
pub enum ImportCommand {
    /// Import the accounts of a Synapse homeserver from its database
    /// (SQLite or PostgreSQL).
    ///
    /// Users keep their ID, password (Synapse's bcrypt hash, upgraded to
    /// Argon2id at their next login), admin, guest and deactivated flags,
    /// email addresses and phone numbers, and devices. If Synapse's
    /// `password_config.pepper` is set, set `passwords.bcrypt_pepper` to the
    /// same value. Gatehouse's `server_name` must be Synapse's. Existing
    /// rows are kept, so running it again only adds what is new.
    Synapse(SynapseArgs),
}

#[derive(Args)]
pub struct SynapseArgs {
    /// Synapse's database, only read: the path of its SQLite
    /// `homeserver.db`, or the `postgres://…` URL of its PostgreSQL one
    /// (read in one snapshot).
    #[arg(long, value_name = "PATH|URL")]
    database: String,
    /// Also import the live access tokens (`syt_…`), so that clients logged
    /// in to Synapse stay logged in. Tokens with an expiry are not imported.
    #[arg(long)]
    tokens: bool,
    /// Users written per transaction. A server using the same data
    /// directory waits for each transaction to end; into a data directory
    /// nothing else uses, larger batches import faster (fewer commits).
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_size: u32,
}

pub async fn run(config: &Config, command: ImportCommand) -> Result<(), String> {
    match command {
        ImportCommand::Synapse(args) => synapse(config, args).await,
    }
}

async fn synapse(config: &Config, args: SynapseArgs) -> Result<(), String> {
    let started = Instant::now();
    let lower = args.database.to_ascii_lowercase();
    let staged = if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        eprintln!("gatehouse import: copying Synapse's tables out of PostgreSQL");
        Some(crate::import_pg::stage(&args.database, &config.database).await?)
    } else {
        None
    };
    let path = staged
        .as_ref()
        .map_or_else(|| args.database.clone(), |s| s.path().display().to_string());
    let source = Source::open(&path, &config.server_name)?;
    let total = source.total_users;
    // Opened only once the source is known to be good: a wrong path must not
    // leave an empty data directory behind.
    let database = gatehouse_server::open_database(config)
        .await
        .map_err(|e| e.to_string())?;
    // SQLite stages the tokens to add them sorted at the end; PostgreSQL
    // takes each batch as it comes (one `unnest` insert per table).
    if let Database::Sqlite(sqlite) = &database {
        sqlite.tune_for_bulk_import().map_err(|e| e.to_string())?;
    }
    let store = database.store();

    // At most three batches in memory: one being written, one waiting, one
    // being read. More would only hold memory: the writer is the slower side.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(1);
    let options = ReadOptions {
        server_name: config.server_name.clone(),
        tokens: args.tokens,
        batch_size: args.batch_size as usize,
        now: SystemClock.now_ms(),
    };
    let reader = std::thread::Builder::new()
        .name("synapse-reader".into())
        .spawn(move || source.read(&options, &tx))
        .map_err(|e| format!("cannot start the reader thread: {e}"))?;

    let mut added = ImportCounts::default();
    let mut imported = 0u64;
    let mut written: Result<(), String> = Ok(());
    while let Some(batch) = rx.recv().await {
        let n = batch.users.len() as u64;
        match store.import_users(batch.users).await {
            Ok(counts) => {
                imported += n;
                added.users += counts.users;
                added.threepids += counts.threepids;
                added.devices += counts.devices;
                added.access_tokens += counts.access_tokens;
            }
            Err(e) => {
                written = Err(format!("writing to Gatehouse's store: {e}"));
                break;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "gatehouse import: {}/{total} users read, {imported} imported ({:.0} users/s)",
            batch.read,
            batch.read as f64 / secs.max(1e-9)
        );
    }
    // Closing the channel stops a reader that is still going (writer failed).
    drop(rx);
    let read = reader
        .join()
        .map_err(|_| "the reader thread panicked".to_owned())?;
    written?;
    // The staged tokens, added in hash order (a partial read keeps them too:
    // they belong to accounts already written).
    let tokens_started = Instant::now();
    if let Database::Sqlite(finishing) = database {
        if args.tokens {
            eprintln!("gatehouse import: adding the access tokens, sorted by hash");
        }
        added.access_tokens += tokio::task::spawn_blocking(move || finishing.finish_bulk_import())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("writing the access tokens to Gatehouse's store: {e}"))?;
    }
    if args.tokens {
        eprintln!(
            "gatehouse import: access tokens added in {:.1} s",
            tokens_started.elapsed().as_secs_f64()
        );
    }
    let report = read.map_err(|e| {
        format!(
            "reading the Synapse database stopped after {imported} users: {e}; \
             what was written is kept, run the import again to finish"
        )
    })?;
    // Closing the store checkpoints what is left in its WAL: part of the import.
    drop(store);
    report.warn();
    if report.password_hashes > 0 && config.passwords.bcrypt_pepper.is_empty() {
        eprintln!(
            "gatehouse import: note: if Synapse's password_config.pepper is set, set \
             passwords.bcrypt_pepper to the same value, or imported passwords will not verify"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {imported} users ({} new), {} threepids, {} devices, {} access tokens in {secs:.1} s ({:.0} users/s)",
        added.users,
        added.threepids,
        added.devices,
        added.access_tokens,
        imported as f64 / secs.max(1e-9),
    );
    Ok(())
}

/// One store transaction's worth of users, and how far the reader got.
struct Batch {
    users: Vec<ImportedUser>,
    /// Synapse users read so far, skipped ones included (progress is
    /// reported against the table's row count).
    read: u64,
}

struct ReadOptions {
    server_name: String,
    tokens: bool,
    batch_size: usize,
    now: Timestamp,
}

/// A Synapse database opened read-only, inside the read transaction that
/// every query of the import shares.
struct Source {
    conn: Connection,
    /// SQL expressions for columns that older Synapse schemas lack.
    columns: Columns,
    total_users: u64,
}

struct Columns {
    appservice: &'static str,
    locked: &'static str,
    approved: &'static str,
    hidden: &'static str,
    valid_until: &'static str,
    puppets: &'static str,
}

impl Source {
    fn open(database: &str, server_name: &str) -> Result<Self, String> {
        let path = Path::new(database);
        if !path.is_file() {
            return Err(format!(
                "{database}: no such file (Synapse's homeserver.db)"
            ));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("{database}: cannot open: {e}"))?;
        let fail = |e: rusqlite::Error| format!("{database}: {e}");
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(fail)?;
        // Reading through a memory map saves a system call and a copy per
        // page; the lookups from index to table rows jump all over the file.
        conn.pragma_update(None, "mmap_size", 2i64 << 30)
            .map_err(fail)?;
        // One snapshot for every query below, even if Synapse is writing.
        conn.execute_batch("BEGIN").map_err(fail)?;

        let users = column_names(&conn, "users").map_err(fail)?;
        if users.is_empty() {
            return Err(format!(
                "{database} is not a Synapse database (it has no users table)"
            ));
        }
        for required in [
            "name",
            "password_hash",
            "creation_ts",
            "admin",
            "is_guest",
            "deactivated",
        ] {
            if !users.iter().any(|c| c == required) {
                return Err(format!(
                    "{database}: the users table has no column {required}; is this a Synapse database?"
                ));
            }
        }
        let devices = column_names(&conn, "devices").map_err(fail)?;
        let tokens = column_names(&conn, "access_tokens").map_err(fail)?;
        let threepids = column_names(&conn, "user_threepids").map_err(fail)?;
        if devices.is_empty() || tokens.is_empty() || threepids.is_empty() {
            return Err(format!(
                "{database}: tables devices, access_tokens and user_threepids are expected in a Synapse database"
            ));
        }
        let has = |cols: &[String], name: &str| cols.iter().any(|c| c == name);
        let columns = Columns {
            appservice: if has(&users, "appservice_id") {
                "appservice_id IS NOT NULL"
            } else {
                "0"
            },
            locked: if has(&users, "locked") {
                "COALESCE(locked, 0) != 0"
            } else {
                "0"
            },
            // NULL: the account predates approval (or it is off): approved.
            approved: if has(&users, "approved") {
                "COALESCE(approved, 1) != 0"
            } else {
                "1"
            },
            hidden: if has(&devices, "hidden") {
                "COALESCE(hidden, 0) != 0"
            } else {
                "0"
            },
            valid_until: if has(&tokens, "valid_until_ms") {
                "valid_until_ms"
            } else {
                "NULL"
            },
            puppets: if has(&tokens, "puppets_user_id") {
                "puppets_user_id IS NOT NULL"
            } else {
                "0"
            },
        };

        // Every local user of a Synapse is on its server_name, and user IDs
        // cannot be renamed: a different server_name is a configuration
        // mistake, caught before anything is written.
        let suffix = format!(":{server_name}");
        let (foreign, example): (i64, Option<String>) = conn
            .query_row(
                "SELECT count(*), min(name) FROM users
                 WHERE substr(name, -length(?1)) != ?1 OR instr(name, ':') != length(name) - length(?1) + 1",
                [&suffix],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(fail)?;
        if foreign > 0 {
            let example = example.unwrap_or_default();
            let theirs = example.split_once(':').map_or("?", |(_, s)| s);
            return Err(format!(
                "{foreign} Synapse users are not on this server's server_name '{server_name}' \
                 (e.g. {example}, server name '{theirs}'): set Gatehouse's server_name \
                 (--server-name, or server_name in the configuration) to Synapse's before importing"
            ));
        }
        let total_users: i64 = conn
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .map_err(fail)?;
        let total_users = u64::try_from(total_users).unwrap_or_default();
        Ok(Self {
            conn,
            columns,
            total_users,
        })
    }

    /// Reads every user with its 3PIDs, devices and tokens, in batches.
    /// Returns early (and fine) if the writer hung up.
    fn read(
        self,
        options: &ReadOptions,
        out: &tokio::sync::mpsc::Sender<Batch>,
    ) -> rusqlite::Result<Report> {
        let c = &self.columns;
        let mut report = Report::default();
        let mut users_stmt = self.conn.prepare(&format!(
            "SELECT name, password_hash, creation_ts, admin != 0, is_guest != 0, deactivated != 0,
                    {}, {}, {}
             FROM users ORDER BY name",
            c.appservice, c.locked, c.approved
        ))?;
        let mut threepid_stmt = self
            .conn
            .prepare("SELECT user_id, medium, address FROM user_threepids ORDER BY user_id")?;
        let mut device_stmt = self.conn.prepare(&format!(
            "SELECT user_id, device_id, display_name, ip, last_seen, {}
             FROM devices ORDER BY user_id",
            c.hidden
        ))?;
        // Without --tokens the table is not read at all.
        let token_sql = if options.tokens {
            format!(
                "SELECT user_id, device_id, token, {}, {} FROM access_tokens ORDER BY user_id",
                c.valid_until, c.puppets
            )
        } else {
            "SELECT user_id, device_id, token, NULL, 0 FROM access_tokens WHERE 0".to_owned()
        };
        let mut token_stmt = self.conn.prepare(&token_sql)?;

        let mut users = users_stmt.query([])?;
        let mut threepids = Side::new(&mut threepid_stmt)?;
        let mut devices = Side::new(&mut device_stmt)?;
        let mut tokens = Side::new(&mut token_stmt)?;

        let mut batch = Vec::with_capacity(options.batch_size);
        let mut read = 0u64;
        while let Some(row) = users.next()? {
            read += 1;
            let name: String = row.get(0)?;
            let Some(mut user) = report.user(row, &name, options)? else {
                // Its rows in the other tables are passed over below.
                continue;
            };
            if !user.deactivated {
                // (A deactivated account keeps nothing but its name.)
                threepids.for_user(&name, |r| report.threepid(r, &name, &mut user))?;
                devices.for_user(&name, |r| report.device(r, &mut user))?;
                tokens.for_user(&name, |r| report.token(r, &mut user, options.now))?;
            }
            batch.push(user);
            if batch.len() >= options.batch_size {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(options.batch_size));
                if out.blocking_send(Batch { users: full, read }).is_err() {
                    return Ok(report);
                }
            }
        }
        if !batch.is_empty() || read == 0 {
            let _ = out.blocking_send(Batch { users: batch, read });
        }
        Ok(report)
    }
}

fn column_names(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    stmt.query_map([table], |r| r.get(0))?.collect()
}

/// The rows of a table that refers to users, ordered by user ID (column 0),
/// consumed alongside the users as in a merge join. User IDs are compared
/// as SQLite ordered them: BINARY collation is byte order, as for `str`.
struct Side<'s> {
    rows: Rows<'s>,
}

impl<'s> Side<'s> {
    fn new(stmt: &'s mut rusqlite::Statement<'_>) -> rusqlite::Result<Self> {
        let mut rows = stmt.query([])?;
        rows.advance()?;
        Ok(Self { rows })
    }

    /// Calls `f` with each row of `user`, passing over the rows of users
    /// that sort before it (users skipped, or rows whose user is gone).
    fn for_user(
        &mut self,
        user: &str,
        mut f: impl FnMut(&Row<'_>) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        while let Some(row) = self.rows.get() {
            match row.get_ref(0)?.as_str()?.cmp(user) {
                std::cmp::Ordering::Greater => break,
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => f(row)?,
            }
            self.rows.advance()?;
        }
        Ok(())
    }
}

/// The spec's grammar for historical user IDs: any printable ASCII but ':'.
fn is_historical_localpart(localpart: &str) -> bool {
    !localpart.is_empty()
        && localpart
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b':')
}

/// The token shape Gatehouse accepts from another server (Synapse's
/// `syt_…`, see gatehouse-server's sessions): anything else, such as the
/// macaroons of old Synapse versions, would never authenticate.
fn is_synapse_token(token: &str) -> bool {
    token.len() <= 255
        && token.starts_with("syt_")
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What was left behind and why, for the operator.
#[derive(Default)]
struct Report {
    password_hashes: u64,
    appservice_users: u64,
    historical_ids: Examples,
    invalid_ids: Examples,
    /// Locked or awaiting approval on Synapse: they could not log in there.
    locked: u64,
    unapproved: u64,
    unknown_media: Examples,
    invalid_threepids: Examples,
    hidden_devices: u64,
    tokens_without_device: u64,
    tokens_puppeting: u64,
    tokens_expired: u64,
    tokens_expiring: u64,
    tokens_other_format: u64,
}

/// A count and the first few cases, to show without flooding the terminal.
#[derive(Default)]
struct Examples {
    count: u64,
    first: Vec<String>,
}

impl Examples {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.len() < 3 {
            self.first.push(example());
        }
    }
}

impl Report {
    /// A row of `users` (named `name`) as Gatehouse imports it, without its
    /// 3PIDs and devices yet; `None` if it is skipped.
    fn user(
        &mut self,
        row: &Row<'_>,
        name: &str,
        options: &ReadOptions,
    ) -> rusqlite::Result<Option<ImportedUser>> {
        if row.get::<_, bool>(6)? {
            // Application services own their users and authenticate with
            // their own token, which Gatehouse does not handle.
            self.appservice_users += 1;
            return Ok(None);
        }
        let localpart = name
            .strip_prefix('@')
            .and_then(|rest| rest.strip_suffix(options.server_name.as_str()))
            .and_then(|rest| rest.strip_suffix(':'));
        let user_id = match localpart.map(|l| (l, UserId::new(l, &options.server_name))) {
            Some((_, Ok(id))) => id,
            Some((l, Err(_))) if is_historical_localpart(l) && name.len() <= 255 => {
                // An ID from before today's grammar (capitals, other
                // punctuation) that Synapse kept: the account stays itself,
                // reachable by its email, phone and sessions.
                self.historical_ids.add(|| name.to_owned());
                UserId::from_trusted(name.to_owned())
            }
            _ => {
                self.invalid_ids.add(|| name.to_owned());
                return Ok(None);
            }
        };
        // An account that could not log in on Synapse must not be able to
        // here: Gatehouse has no lock or approval, so it arrives deactivated.
        let mut deactivated: bool = row.get(5)?;
        if !deactivated && row.get::<_, bool>(7)? {
            self.locked += 1;
            deactivated = true;
        } else if !deactivated && !row.get::<_, bool>(8)? {
            self.unapproved += 1;
            deactivated = true;
        }
        // Synapse writes an empty string for "no password" in places.
        let password_hash = row.get::<_, Option<String>>(1)?.filter(|h| !h.is_empty());
        if password_hash.is_some() {
            self.password_hashes += 1;
        }
        // Seconds in Synapse; NULL on very old accounts.
        let created_at = row
            .get::<_, Option<i64>>(2)?
            .and_then(|s| u64::try_from(s).ok())
            .map_or(options.now, |s| s.saturating_mul(1000));
        Ok(Some(ImportedUser {
            user_id,
            password_hash,
            is_admin: row.get(3)?,
            is_guest: row.get(4)?,
            deactivated,
            created_at,
            threepids: Vec::new(),
            devices: Vec::new(),
        }))
    }

    /// A row of `user_threepids` (user_id, medium, address).
    fn threepid(
        &mut self,
        row: &Row<'_>,
        name: &str,
        user: &mut ImportedUser,
    ) -> rusqlite::Result<()> {
        let medium = row.get_ref(1)?.as_str()?;
        let Some(known) = Medium::parse(medium) else {
            self.unknown_media.add(|| format!("{name} ({medium})"));
            return Ok(());
        };
        match canonical_threepid(known, row.get_ref(2)?.as_str()?) {
            Ok(tp) => user.threepids.push(tp),
            Err(e) => self
                .invalid_threepids
                .add(|| format!("{name} ({medium}: {e})")),
        }
        Ok(())
    }

    /// A row of `devices` (user_id, device_id, display_name, ip, last_seen, hidden).
    fn device(&mut self, row: &Row<'_>, user: &mut ImportedUser) -> rusqlite::Result<()> {
        if row.get(5)? {
            // Not a client: cross-signing keys and dehydrated devices have
            // rows in Synapse's devices table too.
            self.hidden_devices += 1;
            return Ok(());
        }
        user.devices.push(ImportedDevice {
            device_id: row.get(1)?,
            display_name: row.get(2)?,
            last_seen_ip: row.get(3)?,
            last_seen_at: row
                .get::<_, Option<i64>>(4)?
                .and_then(|t| u64::try_from(t).ok()),
            access_tokens: Vec::new(),
        });
        Ok(())
    }

    /// A row of `access_tokens` (user_id, device_id, token, valid_until_ms,
    /// puppets), attached to its device read just before.
    fn token(
        &mut self,
        row: &Row<'_>,
        user: &mut ImportedUser,
        now: Timestamp,
    ) -> rusqlite::Result<()> {
        if row.get(4)? {
            // An admin acting as another user: not this user's session.
            self.tokens_puppeting += 1;
            return Ok(());
        }
        if let Some(until) = row.get::<_, Option<i64>>(3)? {
            // Gatehouse's import has no per-token expiry: an expiring token
            // (refreshable sessions, session_lifetime) would live forever
            // here, so it stays behind and its client logs in again.
            if u64::try_from(until).is_ok_and(|u| u > now) {
                self.tokens_expiring += 1;
            } else {
                self.tokens_expired += 1;
            }
            return Ok(());
        }
        let token = row.get_ref(2)?.as_str()?;
        if !is_synapse_token(token) {
            self.tokens_other_format += 1;
            return Ok(());
        }
        let device_id = row.get_ref(1)?.as_str_or_null()?;
        let device = device_id.and_then(|id| user.devices.iter_mut().find(|d| d.device_id == id));
        match device {
            Some(device) => device
                .access_tokens
                .push(gatehouse_core::token::hash(token)),
            None => self.tokens_without_device += 1,
        }
        Ok(())
    }

    /// Prints, on stderr, each kind of row that was not imported.
    fn warn(&self) {
        let say = |n: u64, what: &str| {
            if n > 0 {
                eprintln!("gatehouse import: {n} {what}");
            }
        };
        let say_examples = |e: &Examples, what: &str| {
            if e.count > 0 {
                eprintln!(
                    "gatehouse import: {} {what} (e.g. {})",
                    e.count,
                    e.first.join(", ")
                );
            }
        };
        say(
            self.appservice_users,
            "application-service users skipped (their service authenticates them)",
        );
        say_examples(
            &self.historical_ids,
            "users with historical IDs imported: they log in by email or phone, or keep \
             their imported sessions; a user name typed at login is lower-cased to today's \
             grammar and does not find them",
        );
        say_examples(
            &self.invalid_ids,
            "users skipped: their IDs are not valid Matrix user IDs, even historical ones",
        );
        say(
            self.locked,
            "locked users imported as deactivated (they could not log in on Synapse either; \
             `gatehouse user reactivate` lets one in)",
        );
        say(
            self.unapproved,
            "users awaiting approval imported as deactivated (they could not log in on Synapse \
             either; `gatehouse user reactivate` approves one)",
        );
        say_examples(
            &self.unknown_media,
            "third-party IDs of a medium Gatehouse does not know skipped",
        );
        say_examples(
            &self.invalid_threepids,
            "third-party IDs that do not canonicalise skipped",
        );
        say(
            self.hidden_devices,
            "hidden devices skipped (cross-signing keys, dehydrated devices)",
        );
        say(
            self.tokens_puppeting,
            "access tokens of admins acting as another user skipped",
        );
        say(self.tokens_expired, "expired access tokens skipped");
        say(
            self.tokens_expiring,
            "access tokens with an expiry skipped (refreshable sessions, session_lifetime): \
             Gatehouse cannot carry the expiry over; their clients log in again",
        );
        say(
            self.tokens_other_format,
            "access tokens not in Synapse's syt_ format skipped",
        );
        say(
            self.tokens_without_device,
            "access tokens without an imported device skipped",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_rows_are_merged_by_user_and_orphans_passed_over() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (user_id TEXT, n INTEGER);
             INSERT INTO t VALUES ('@d:x', 4), ('@b:x', 2), ('@a:x', 1), ('@b:x', 3);",
        )
        .unwrap();
        let mut stmt = conn
            .prepare("SELECT user_id, n FROM t ORDER BY user_id, n")
            .unwrap();
        let mut side = Side::new(&mut stmt).unwrap();
        let mut take = |user: &str| {
            let mut got = Vec::new();
            side.for_user(user, |r| {
                got.push(r.get::<_, i64>(1)?);
                Ok(())
            })
            .unwrap();
            got
        };
        assert_eq!(take("@b:x"), [2, 3]);
        assert!(take("@c:x").is_empty());
        assert_eq!(take("@d:x"), [4]);
        assert!(take("@e:x").is_empty());
    }

    #[test]
    fn historical_localparts_are_printable_ascii_without_colons() {
        assert!(is_historical_localpart("Alice"));
        assert!(is_historical_localpart("bob!#$%"));
        assert!(!is_historical_localpart(""));
        assert!(!is_historical_localpart("a:b"));
        assert!(!is_historical_localpart("a b"));
        assert!(!is_historical_localpart("café"));
    }

    #[test]
    fn only_synapse_tokens_are_carried_over() {
        assert!(is_synapse_token("syt_YWxpY2U_aAaanjfDrzLFbgSLogtz_3UyxPJ"));
        assert!(!is_synapse_token("MDAxY2xvY2F0aW9uIGxvY2FsaG9zdAo"));
        assert!(!is_synapse_token("syt_a b"));
    }
}
