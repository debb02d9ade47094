//! Fixtures shared by the black-box tests: a fresh XiVO `asterisk` database per test in the real
//! PostgreSQL (dropped afterwards, even when the test fails), temporary node roots, and the
//! `xivo-ha` binary.
//!
//! The PostgreSQL server is the one `scripts/start-test-postgres.sh` starts; override with
//! `XIVO_HA_TEST_PG` (TCP, key=value string without dbname) and `XIVO_HA_TEST_PG_SOCKET`
//! (the directory of its Unix socket).
#![allow(dead_code)]

pub mod sshd;
pub mod testhost;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub const SCHEMA_SQL: &str = include_str!("../fixtures/asterisk-schema.sql");
pub const DATA_SQL: &str = include_str!("../fixtures/asterisk-data.sql");

pub fn pg_base() -> String {
    std::env::var("XIVO_HA_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres".into())
}

/// The TCP port of the test PostgreSQL, as `XIVO_HA_TEST_PG` says (5432 by default).
pub fn pg_port() -> u16 {
    pg_base()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .map_or(5432, |port| {
            port.parse().expect("XIVO_HA_TEST_PG has a numeric port")
        })
}

/// Writes `text` as the node's settings file, `<root>/etc/docker/xivo/custom.env`.
pub fn write_custom_env(root: &Path, text: &str) {
    let path = root.join("etc/docker/xivo/custom.env");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn pg_socket_dir() -> String {
    std::env::var("XIVO_HA_TEST_PG_SOCKET").unwrap_or_else(|_| "/var/run/postgresql".into())
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL ({url}): {e}; run scripts/start-test-postgres.sh"));
    tokio::spawn(connection);
    client
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own for one test, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// A database loaded with the fixture schema and data.
    pub async fn create() -> TestDb {
        let db = TestDb::create_empty().await;
        let client = db.client().await;
        client
            .batch_execute(SCHEMA_SQL)
            .await
            .expect("fixture schema loads");
        client
            .batch_execute(DATA_SQL)
            .await
            .expect("fixture data loads");
        db
    }

    /// An empty database (UTF-8).
    pub async fn create_empty() -> TestDb {
        TestDb::create_with("ENCODING 'UTF8' TEMPLATE template0").await
    }

    /// An empty database created with `options` (e.g. another encoding).
    pub async fn create_with(options: &str) -> TestDb {
        let name = format!(
            "xivoha_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            rand_suffix()
        );
        let admin = connect(&pg_base()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .expect("test database can be created");
        TestDb { name }
    }

    /// TCP key=value connection string.
    pub fn url(&self) -> String {
        format!("{} dbname={}", pg_base(), self.name)
    }

    /// Connection string over the Unix socket: works inside a network namespace without routes.
    pub fn socket_url(&self) -> String {
        format!(
            "host={} user=postgres dbname={}",
            pg_socket_dir(),
            self.name
        )
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&pg_base(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100_000
}

/// The `xivo-ha` binary built for these tests.
pub fn xivo_ha_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xivo-ha"))
}

/// `xivo-ha --root <root> --db <db> <args>`, with a clean environment for xivo-ha's variables.
pub fn xivo_ha(root: &Path, db: &str, args: &[&str]) -> Output {
    let mut command = Command::new(xivo_ha_bin());
    clear_xivo_env(&mut command);
    command
        .arg("--root")
        .arg(root)
        .arg("--db")
        .arg(db)
        .args(args);
    command.output().expect("xivo-ha runs")
}

/// The same, inside a fresh network namespace without routes (`unshare -n`): for commands whose
/// arguments hold documentation addresses that must never be contacted.
pub fn xivo_ha_isolated(root: &Path, db: &str, args: &[&str]) -> Output {
    let mut command = Command::new("unshare");
    clear_xivo_env(&mut command);
    command
        .arg("-n")
        .arg(xivo_ha_bin())
        .arg("--root")
        .arg(root)
        .arg("--db")
        .arg(db)
        .args(args);
    command.output().expect("unshare runs (tests run as root)")
}

fn clear_xivo_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("XIVO_HA_") {
            command.env_remove(key);
        }
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails the test with the command's output when it did not exit 0.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
}
