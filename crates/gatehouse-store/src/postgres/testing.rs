//! Throwaway PostgreSQL databases for tests (this crate's and the
//! end-to-end suites'): one cluster per test process, one database per test.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The cluster's URL: `GATEHOUSE_TEST_POSTGRES_URL` (the README's test
/// command starts one cluster for the whole run), otherwise a cluster of
/// this process's own, started with `interop/postgres/pg.sh` on a free
/// port and stopped once the process has ended.
pub fn cluster_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("GATEHOUSE_TEST_POSTGRES_URL") {
            return url;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../interop/postgres/pg.sh");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("gatehouse-pg-{}-{port}", std::process::id()));
        let out = std::process::Command::new("bash")
            .args([script, "start"])
            .arg(&dir)
            .arg(port.to_string())
            .output()
            .expect("run interop/postgres/pg.sh");
        assert!(
            out.status.success(),
            "no PostgreSQL for the tests: set GATEHOUSE_TEST_POSTGRES_URL, or install it \
             (interop/postgres/pg.sh install): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let watch = std::process::Command::new("bash")
            .args([script, "watch", &std::process::id().to_string()])
            .arg(&dir)
            .status();
        assert!(watch.is_ok_and(|s| s.success()), "pg.sh watch failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("POSTGRES_URL="))
            .expect("pg.sh prints POSTGRES_URL=")
            .to_owned()
    })
    .clone()
}

/// A new, empty database on the test cluster, as its URL: a schema of its
/// own in the cluster's database, chosen by the URL's `search_path` (a
/// schema costs a catalog row; a database, megabytes of files).
pub async fn fresh_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = cluster_url();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    let task = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create a test schema");
    drop(client);
    let _ = task.await;
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{name}")
}
