//! The connection to the reporting database and its schema: creates the reporting tables and
//! the checkpoint table when missing (under an advisory lock, as both HA nodes and both table
//! workers may start at once), refuses a table of the same name without an `origin` column,
//! claims the origin for this node in the same transaction (see `dbreplic::claim`), and creates
//! the per-connection staging table.

use tokio_postgres::{Client, GenericClient};

use super::config;
use super::retry::classify;
use crate::db::DbTarget;
use crate::dbreplic::claim::{self, Claim, Claimant};
use crate::dbreplic::retry::ErrorKind;
use crate::dbreplic::sink::SinkError;
use crate::dbreplic::source::EventTable;

/// An arbitrary constant that identifies DB Replic's schema changes among advisory locks.
const SCHEMA_LOCK: i64 = 0x5856_4f48_4144_4252;

pub struct PgService {
    pub target: DbTarget,
    client: Option<Client>,
    /// The origin this service's writes go under, and this node: claimed at every start.
    claim: Option<(String, Claimant)>,
}

impl PgService {
    pub fn new(target: DbTarget) -> Self {
        PgService {
            target,
            client: None,
            claim: None,
        }
    }

    /// A service whose every [`start`](Self::start) claims `origin` for `me` first.
    pub fn claiming(mut self, origin: String, me: Claimant) -> Self {
        self.claim = Some((origin, me));
        self
    }

    /// Where the claim is kept, for messages.
    pub fn claim_store(&self) -> String {
        format!("the reporting database {}", self.describe())
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

    /// A new session.
    async fn connect(&self) -> Result<Client, SinkError> {
        let client = self.target.connect().await.map_err(|e| {
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
        Ok(client)
    }

    /// The claim kept for `origin` (`None`: none, or no claim table yet). Writes nothing.
    pub async fn read_claim(&mut self, origin: &str) -> Result<Option<Claim>, SinkError> {
        let client = self.connect().await?;
        let exists = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&config::CLAIM_TABLE],
            )
            .await
            .map_err(|e| self.error("look for the origin claims", &e))?
            .get::<_, bool>(0);
        if !exists {
            return Ok(None);
        }
        self.select_claim(&client, origin).await
    }

    async fn select_claim(
        &self,
        client: &impl GenericClient,
        origin: &str,
    ) -> Result<Option<Claim>, SinkError> {
        let row = client
            .query_opt(&config::claim_select_sql(), &[&origin])
            .await
            .map_err(|e| self.error("read the origin claim", &e))?;
        Ok(row.map(|row| Claim {
            node_id: row.get(0),
            hostname: row.get(1),
            claimed_at: row.get(2),
        }))
    }

    /// Claims the origin in `tx` (whose claims table exists): the first claim wins (unless
    /// `take_over`: this node's claim replaces any), then whoever won is read back and judged.
    async fn claim_in(&self, tx: &impl GenericClient, take_over: bool) -> Result<(), SinkError> {
        let Some((origin, me)) = &self.claim else {
            return Ok(());
        };
        let sql = if take_over {
            config::claim_take_over_sql()
        } else {
            config::claim_insert_sql()
        };
        tx.execute(&sql, &[origin, &me.node_id.as_str(), &me.hostname])
            .await
            .map_err(|e| self.error("claim the origin", &e))?;
        let found = self.select_claim(tx, origin).await?.ok_or_else(|| {
            SinkError::new(
                ErrorKind::Server,
                format!(
                    "{}: the origin claim just made is not there",
                    self.claim_store()
                ),
            )
        })?;
        claim::judge(origin, &self.claim_store(), me, &found)
    }

    /// A transaction holding the schema's advisory lock.
    async fn begin_locked<'a>(
        &self,
        client: &'a mut Client,
    ) -> Result<tokio_postgres::Transaction<'a>, SinkError> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.error("begin", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(|e| self.error("lock the schema", &e))?;
        Ok(tx)
    }

    /// Only the claim, in a transaction of its own: for a writer that is not a sink (the
    /// configuration tables' refresh), and for `--take-over-origin` (`take_over`).
    pub async fn claim_origin(&mut self, take_over: bool) -> Result<(), SinkError> {
        let mut client = self.connect().await?;
        let tx = self.begin_locked(&mut client).await?;
        tx.batch_execute(&config::create_claim_sql())
            .await
            .map_err(|e| self.error("create the origin claims table", &e))?;
        self.claim_in(&tx, take_over).await?;
        tx.commit()
            .await
            .map_err(|e| self.error("commit the origin claim", &e))
    }

    /// Connects (again), makes sure `table`, the checkpoint table, the claims table and the
    /// staging table exist, and claims the origin (refused when another node holds it).
    pub async fn start(&mut self, table: EventTable) -> Result<(), SinkError> {
        self.client = None;
        let mut client = self.connect().await?;
        let tx = self.begin_locked(&mut client).await?;
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
        tx.batch_execute(&config::create_claim_sql())
            .await
            .map_err(|e| self.error("create the origin claims table", &e))?;
        // A refusal returns before the commit: nothing of this start is kept.
        self.claim_in(&tx, false).await?;
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
