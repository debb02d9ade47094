//! A fresh XiVO `asterisk` database per test in the real PostgreSQL (dropped afterwards, even
//! when the test fails).
//!
//! The PostgreSQL server is the one `scripts/start-test-postgres.sh` starts; override with
//! `XIVO_HA_TEST_PG` (TCP, key=value string without dbname) and `XIVO_HA_TEST_PG_SOCKET`
//! (the directory of its Unix socket).

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

    /// Runs `sql` (one statement or several) in this database.
    pub async fn execute(&self, sql: &str) {
        self.client()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The one value that the query `sql` gives (first column of its one row).
    pub async fn value<T>(&self, sql: &str) -> T
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
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
