//! The connection to the reporting database and its schema: creates the reporting tables and
//! the checkpoint table when missing (under an advisory lock, as both HA nodes and both table
//! workers may start at once), refuses a table of the same name without an `origin` column,
//! and creates the per-connection staging table.

use tokio_postgres::Client;

use super::config;
use super::retry::classify;
use crate::db::DbTarget;
use crate::dbreplic::retry::ErrorKind;
use crate::dbreplic::sink::SinkError;
use crate::dbreplic::source::EventTable;

/// An arbitrary constant that identifies DB Replic's schema changes among advisory locks.
const SCHEMA_LOCK: i64 = 0x5856_4f48_4144_4252;

pub struct PgService {
    pub target: DbTarget,
    client: Option<Client>,
}

impl PgService {
    pub fn new(target: DbTarget) -> Self {
        PgService {
            target,
            client: None,
        }
    }

    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// A statement failure as a sink error naming the database.
    pub fn error(&self, what: &str, error: &tokio_postgres::Error) -> SinkError {
        SinkError::new(
            classify(error),
            format!(
                "reporting database {}: {what}: {}",
                self.describe(),
                crate::db::error_reason(error)
            ),
        )
    }

    /// Connects (again) and makes sure `table`, the checkpoint table and the staging table exist.
    pub async fn start(&mut self, table: EventTable) -> Result<(), SinkError> {
        self.client = None;
        let mut client = self.target.connect().await.map_err(|e| {
            let message = match e.connect_hint() {
                Some(_) => e.to_string(),
                None => format!("{e} (check REPORTING_DB_HOST, REPORTING_DB_PORT and that XiVO CC's database is up)"),
            };
            SinkError::new(ErrorKind::Unavailable, message)
        })?;
        // "relation already exists, skipping" on every start is noise, not news.
        client
            .batch_execute("SET client_min_messages = warning")
            .await
            .map_err(|e| self.error("set up the session", &e))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("begin", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(|e| self.error("lock the schema", &e))?;
        tx.batch_execute(&config::create_table_sql(table))
            .await
            .map_err(|e| self.error(&format!("create table {table}"), &e))?;
        tx.batch_execute(&config::create_checkpoint_sql())
            .await
            .map_err(|e| self.error("create the checkpoint table", &e))?;
        let has_origin = tx
            .query_opt(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND table_name = $1 AND column_name = 'origin'",
                &[&table.name()],
            )
            .await
            .map_err(|e| self.error("inspect the schema", &e))?
            .is_some();
        if !has_origin {
            return Err(SinkError::new(
                ErrorKind::Rejected,
                format!(
                    "reporting database {}: table {table} exists without an `origin` column \
                     (another tool's layout): rename it so that DB Replic can create its own",
                    self.describe()
                ),
            ));
        }
        tx.commit()
            .await
            .map_err(|e| self.error("commit the schema", &e))?;
        client
            .batch_execute(&config::create_staging_sql(table))
            .await
            .map_err(|e| self.error("create the staging table", &e))?;
        self.client = Some(client);
        Ok(())
    }

    pub fn client(&mut self) -> Result<&mut Client, SinkError> {
        match self.client.as_mut() {
            Some(client) if !client.is_closed() => Ok(client),
            _ => Err(SinkError::new(
                ErrorKind::Unavailable,
                format!(
                    "reporting database {}: not connected",
                    self.target.describe()
                ),
            )),
        }
    }
}
