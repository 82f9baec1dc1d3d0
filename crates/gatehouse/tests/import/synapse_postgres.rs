//! The import test's Synapse on PostgreSQL: the fixture's SQLite database
//! ported by Synapse's own `synapse_port_db`.

use std::path::Path;
use std::process::Command;

/// The fixture's Synapse database, ported to PostgreSQL by Synapse's own
/// `synapse_port_db` into a new database of the test cluster; its URL.
pub async fn port(sqlite: &str, dir: &Path) -> String {
    let cluster = gatehouse_store::postgres::testing::cluster_url();
    let name = format!("synapse_{}", std::process::id());
    let (client, connection) = tokio_postgres::connect(&cluster, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .await
        .unwrap();
    let url = format!("{}/{name}", &cluster[..cluster.rfind('/').unwrap()]);
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let (user, host_port) = authority.split_once('@').unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let config = dir.join("port-db.yaml");
    // The tool loads a homeserver configuration, signing key included.
    let key = dir.join("port-db.signing.key");
    std::fs::write(
        &key,
        "ed25519 a_port AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "server_name: localhost\nsigning_key_path: {key:?}\nreport_stats: false\ndatabase:\n  name: psycopg2\n  args:\n    user: {user}\n    host: {host}\n    port: {port}\n    database: {name}\n"
        ),
    )
    .unwrap();
    let venv = std::env::var("GATEHOUSE_SYNAPSE_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/gatehouse-synapse-venv",
            std::env::var("HOME").unwrap()
        )
    });
    let out = Command::new(format!("{venv}/bin/synapse_port_db"))
        .arg("--sqlite-database")
        .arg(sqlite)
        .arg("--postgres-config")
        .arg(&config)
        .current_dir(dir)
        .output()
        .expect("run synapse_port_db (scripts/test installs it with Synapse)");
    assert!(
        out.status.success(),
        "synapse_port_db: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    url
}
