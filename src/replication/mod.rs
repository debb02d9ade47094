//! Configuration database replication, master → slave (`xivo-ha db-replication <slave_ip>`, the
//! link `xivo-master-slave-db-replication`, and the monitor's hourly run through
//! [`run_hourly`]): the orchestration of one run, its errors, its report and the state it leaves
//! for `status`.
//!
//! One run: connect to both sides at once → lock on the master (advisory, session) → one slave
//! transaction with `session_replication_role = replica` and an advisory lock → guards
//! (encoding, same database, schema) → fingerprints decide which tables changed → TRUNCATE and
//! binary COPY of those tables from one REPEATABLE READ snapshot of the master → sequences →
//! bookkeeping → COMMIT. Any failure before the COMMIT leaves the slave as it was.
//!
//! - [`tables`]: the excluded-table constant and the catalog of each side.
//! - [`guards`]: encoding, same-database and schema checks.
//! - [`fingerprint`]: which tables need copying (master fingerprint, slave bookkeeping).
//! - [`copy`]: emptying, streaming COPY, sequences.
//! - [`target`]: the source and target databases (`XIVO_HA_SLAVE_DB_*`).
//! - [`progress`]: terminal output.
//! - [`command`]: `xivo-ha db-replication`'s arguments and output.

pub mod command;
pub mod copy;
pub mod fingerprint;
pub mod guards;
pub mod progress;
pub mod tables;
pub mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{Client, IsolationLevel, Transaction};

use crate::alert::{Event, Kind};
use crate::context::Context;
use crate::db::{DbError, DbTarget, error_reason};
use crate::ha::{HaConfig, HaError, NodeType};
use crate::settings::ConfigError;
use crate::status::documents::{Component, ReplicationDetails, ReplicationDoc};
use crate::status::store;
use copy::{CopyFailure, Plan, TableCopy};
use progress::{Progress, human_bytes};
pub use tables::EXCLUDED_TABLES;
pub use target::SlaveDbSettings;

/// The advisory lock key that serialises replications, taken on both the master and the slave
/// database ("xivohaRp" in ASCII).
pub const LOCK_KEY: i64 = 0x7869_766f_6861_5270;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ha(#[from] HaError),
    /// The command line's `<slave_ip>` is not an address `configure` would accept (exit 2).
    #[error(
        "<slave_ip>: {0}: give the slave's address (xivo-master-slave-db-replication <slave_ip>)"
    )]
    BadSlaveIp(#[source] HaError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "cannot connect to the slave database {target}: {reason}: {}",
        hint.as_deref().unwrap_or("check that the slave's PostgreSQL listens on that address (listen_addresses) and that its pg_hba.conf admits this master (docs/operations.md, 'The slave's PostgreSQL: password and TLS')")
    )]
    SlaveUnreachable {
        target: String,
        reason: String,
        /// The cause's own hint (no route, no CONNECT privilege), else the one above.
        hint: Option<String>,
    },
    #[error(
        "another replication is running (it holds the replication lock on the {side} database {target}): this run changed nothing; try again once it has finished"
    )]
    Busy { side: String, target: String },
    #[error(
        "the {side} database {target} is encoded {encoding}, not UTF8: recreate it in UTF-8 (dump it, `dropdb asterisk`, `createdb -E UTF8 -T template0 asterisk`, restore); nothing was changed on the slave"
    )]
    Encoding {
        side: String,
        target: String,
        encoding: String,
    },
    #[error(
        "the source and the target are the same database: give the slave's address (or --target-db); nothing was changed"
    )]
    SameDatabase,
    #[error(
        "schemas differ between master and slave: {detail}: upgrade both nodes to the same XiVO version; nothing was changed on the slave"
    )]
    SchemaMismatch { detail: String },
    #[error(
        "the slave role cannot set session_replication_role on {target} ({reason}): make it superuser, or on PostgreSQL 15+ `GRANT SET ON PARAMETER session_replication_role TO <role>`; nothing was changed"
    )]
    ReplicaRole { target: String, reason: String },
    #[error(
        "the slave database {target} failed: {reason}; the slave keeps its previous configuration (nothing was committed)"
    )]
    Slave { target: String, reason: String },
    #[error(
        "copying table `{table}` failed on the {side} ({target}): {reason}; the slave keeps its previous configuration"
    )]
    Copy {
        table: String,
        side: String,
        target: String,
        reason: String,
    },
}

/// How one run behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Ignore the fingerprints: copy every replicated table.
    pub full: bool,
    /// Per-table lines on stdout.
    pub progress: bool,
}

/// What a successful run did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The slave, without password.
    pub slave: String,
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    /// Replicated tables (copied or not).
    pub tables_total: usize,
    pub tables_copied: Vec<TableCopy>,
    pub tables_unchanged: usize,
    pub sequences_set: usize,
}

impl Report {
    pub fn rows_copied(&self) -> u64 {
        self.tables_copied.iter().map(|t| t.rows).sum()
    }

    pub fn bytes_copied(&self) -> u64 {
        self.tables_copied.iter().map(|t| t.bytes).sum()
    }

    /// The one line printed at the end and shown by `status`.
    pub fn summary(&self) -> String {
        format!(
            "{} to {}: ok, {} of {} tables copied ({} rows, {}), {} unchanged, {} sequences set, {:.2} s",
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.slave,
            self.tables_copied.len(),
            self.tables_total,
            self.rows_copied(),
            human_bytes(self.bytes_copied()),
            self.tables_unchanged,
            self.sequences_set,
            self.seconds
        )
    }
}

/// The state document of the last run (`/var/lib/xivo-ha/replication.json`), built here.
impl ReplicationDoc {
    /// The document of a run that succeeded.
    pub fn success(report: &Report) -> ReplicationDoc {
        ReplicationDoc {
            summary: report.summary(),
            started_at: report.started_at,
            seconds: report.seconds,
            ok: true,
            error: None,
            last_success_at: Some(report.started_at),
            details: ReplicationDetails {
                slave: report.slave.clone(),
                tables_copied: report.tables_copied.len(),
                tables_unchanged: report.tables_unchanged,
                rows_copied: report.rows_copied(),
                bytes_copied: report.bytes_copied(),
                copied: report
                    .tables_copied
                    .iter()
                    .map(|t| t.table.clone())
                    .collect(),
            },
        }
    }

    /// The document of a run that failed (nothing was changed on the slave).
    pub fn failure(
        slave: &str,
        started_at: DateTime<Utc>,
        seconds: f64,
        error: &ReplicationError,
    ) -> ReplicationDoc {
        ReplicationDoc {
            summary: format!(
                "{} to {slave}: FAILED after {seconds:.2} s: {error}",
                started_at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            started_at,
            seconds,
            ok: false,
            error: Some(error.to_string()),
            last_success_at: None,
            details: ReplicationDetails {
                slave: slave.to_owned(),
                ..ReplicationDetails::default()
            },
        }
    }
}

/// The monitor's hourly job on a master: replicate to the slave named in ha.conf with the
/// `XIVO_HA_SLAVE_DB_*` settings, and record the state. `Ok(None)` when this node is not a
/// master (nothing is done). Errors are recorded in the state too before being returned.
pub async fn run_hourly(ctx: &Context) -> Result<Option<Report>, ReplicationError> {
    let ha = HaConfig::load(&ctx.paths)?;
    if ha.node_type != NodeType::Master {
        return Ok(None);
    }
    let Some(ip) = ha.peer_in(&ctx.paths)? else {
        return Ok(None);
    };
    let target = SlaveDbSettings::load(ctx)?.target(ip);
    let source = target::explicit("master", ctx.db_url.expose())?;
    let report = run_and_record(ctx, &source, &target, Options::default()).await?;
    tracing::info!("replication: {}", report.summary());
    Ok(Some(report))
}

/// One run, its state recorded for `status` (except when another run holds the lock: that
/// run's own result is the one to show).
pub async fn run_and_record(
    ctx: &Context,
    source: &DbTarget,
    target: &DbTarget,
    options: Options,
) -> Result<Report, ReplicationError> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = replicate(source, target, options).await;
    let mut state = match &result {
        Ok(report) => ReplicationDoc::success(report),
        Err(ReplicationError::Busy { .. }) => return result,
        Err(error) => ReplicationDoc::failure(
            &target.describe(),
            started_at,
            clock.elapsed().as_secs_f64(),
            error,
        ),
    };
    state.last_success_at =
        store::last_success(&ctx.paths, Component::Replication, state.last_success_at);
    if let Err(e) = store::save(&ctx.paths, Component::Replication, &state) {
        tracing::warn!("replication state not recorded: {e}");
    }
    crate::alert::raise(match &result {
        Ok(_) => Event::recovered(Kind::Replication, "", ""),
        Err(e) => Event::failing(Kind::Replication, "", one_line(&e.to_string())),
    });
    result
}

/// An error's text on one line (a reason in a mail subject, XiVO's stderr line).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Replicates `source` (the master) into `target` (the slave). Nothing is changed on the slave
/// unless the whole run succeeds. The phases, in order, are the functions below it: connect and
/// lock the master, begin both transactions, the guards, copy what changed, sequences and
/// bookkeeping, then COMMIT.
pub async fn replicate(
    source: &DbTarget,
    target: &DbTarget,
    options: Options,
) -> Result<Report, ReplicationError> {
    let started_at = Utc::now();
    let sides = Sides {
        source,
        target,
        clock: Instant::now(),
    };
    let (mut master, mut slave) = sides.connect().await?;
    sides.phase("connected");
    let (snapshot, tx) = sides.begin(&mut master, &mut slave).await?;
    let catalog = sides.guards(&snapshot, &tx).await?;
    sides.phase("guards");
    let replicated = catalog.copied_tables();
    let (fingerprints, copied) = sides
        .copy_changed(&snapshot, &tx, &catalog, &replicated, options)
        .await?;
    sides.phase("copied");
    let sequences_set = sides.set_sequences(&snapshot, &tx, &catalog).await?;
    sides
        .record_fingerprints(&tx, &copied, &fingerprints, &replicated)
        .await?;
    sides.phase("sequences");
    tx.commit().await.map_err(|e| sides.on_slave(e))?;
    sides.phase("committed");
    // The snapshot only read: ending it cannot lose anything, and a failure here is harmless.
    let _ = snapshot.rollback().await;

    Ok(Report {
        slave: target.describe(),
        started_at,
        seconds: sides.clock.elapsed().as_secs_f64(),
        tables_total: replicated.len(),
        tables_unchanged: replicated.len() - copied.len(),
        tables_copied: copied,
        sequences_set,
    })
}

/// The master's fingerprints, by table name.
type Fingerprints = BTreeMap<String, String>;

/// The two databases of one run, the errors of each side, and the run's clock.
struct Sides<'a> {
    source: &'a DbTarget,
    target: &'a DbTarget,
    clock: Instant,
}

impl Sides<'_> {
    /// Phase timings, for `XIVO_HA_LOG=xivo_ha::replication=debug`.
    fn phase(&self, name: &str) {
        tracing::debug!(phase = name, ms = self.clock.elapsed().as_millis() as u64);
    }

    fn on_master(&self, e: tokio_postgres::Error) -> ReplicationError {
        ReplicationError::Db(self.source.query_error(error_reason(&e)))
    }

    fn on_slave(&self, e: tokio_postgres::Error) -> ReplicationError {
        ReplicationError::Slave {
            target: self.target.describe(),
            reason: error_reason(&e),
        }
    }

    /// Both connections open at once, and the master lock. The master lock lives as long as
    /// its connection: a killed run frees it.
    async fn connect(&self) -> Result<(Client, Client), ReplicationError> {
        let (master, slave) = tokio::join!(self.source.connect(), self.target.connect());
        let master = master?;
        let locked: bool = master
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(|e| self.on_master(e))?
            .get(0);
        if !locked {
            return Err(ReplicationError::Busy {
                side: "master".into(),
                target: self.source.describe(),
            });
        }
        let slave = slave.map_err(|e| match e {
            DbError::Connect {
                target,
                reason,
                hint,
                ..
            } => ReplicationError::SlaveUnreachable {
                target,
                reason,
                hint,
            },
            other => other.into(),
        })?;
        // Before anything is locked on the slave: its server drops this session, and with it
        // the locks, soon after this master vanished.
        target::detect_vanished_master(&slave)
            .await
            .map_err(|e| self.on_slave(e))?;
        Ok((master, slave))
    }

    /// The master's snapshot (one for fingerprints and data: the slave receives a consistent
    /// configuration) and the slave's transaction, in replica role.
    async fn begin<'m, 's>(
        &self,
        master: &'m mut Client,
        slave: &'s mut Client,
    ) -> Result<(Transaction<'m>, Transaction<'s>), ReplicationError> {
        let snapshot = master
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.on_master(e))?;
        let tx = slave.transaction().await.map_err(|e| self.on_slave(e))?;
        tx.batch_execute("SET LOCAL session_replication_role = replica")
            .await
            .map_err(|e| ReplicationError::ReplicaRole {
                target: self.target.describe(),
                reason: error_reason(&e),
            })?;
        // A slave whose tables stay locked by a long transaction fails the run instead of
        // hanging it; the bookkeeping's "already exists" notices are not worth a log line. The
        // commit need not wait for the slave's disk: a slave crashing right after it loses the
        // whole transaction, bookkeeping included, so the next run simply copies again.
        tx.batch_execute(
            "SET LOCAL lock_timeout = '60s'; SET LOCAL client_min_messages = warning;
             SET LOCAL synchronous_commit = off",
        )
        .await
        .map_err(|e| self.on_slave(e))?;
        Ok((snapshot, tx))
    }

    /// The guards, before anything is written; returns the master's catalog. The same-database
    /// check comes before the slave lock, which the master's own lock would otherwise hold in
    /// that case. The two servers work at the same time wherever both sides are asked the same
    /// thing.
    async fn guards(
        &self,
        snapshot: &Transaction<'_>,
        tx: &Transaction<'_>,
    ) -> Result<tables::Catalog, ReplicationError> {
        let (master_id, slave_id) =
            tokio::join!(guards::Identity::read(snapshot), guards::Identity::read(tx));
        let master_id = master_id.map_err(|e| self.on_master(e))?;
        let slave_id = slave_id.map_err(|e| self.on_slave(e))?;
        guards::check_distinct(&master_id, &slave_id)?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(|e| self.on_slave(e))?
            .get(0);
        if !locked {
            return Err(ReplicationError::Busy {
                side: "slave".into(),
                target: self.target.describe(),
            });
        }
        guards::check_encoding("master", &self.source.describe(), &master_id)?;
        guards::check_encoding("slave", &self.target.describe(), &slave_id)?;
        let (master_catalog, slave_catalog) =
            tokio::join!(tables::Catalog::read(snapshot), tables::Catalog::read(tx));
        let master_catalog = master_catalog.map_err(|e| self.on_master(e))?;
        let slave_catalog = slave_catalog.map_err(|e| self.on_slave(e))?;
        guards::compare_schemas(&master_id, &slave_id, &master_catalog, &slave_catalog)?;
        Ok(master_catalog)
    }

    /// What changed, copied: everything on a first run or with `--full`, otherwise the tables
    /// whose fingerprint or slave side changed. Returns the master's fingerprints (to record)
    /// and the copies.
    async fn copy_changed(
        &self,
        snapshot: &Transaction<'_>,
        tx: &Transaction<'_>,
        catalog: &tables::Catalog,
        replicated: &[&str],
        options: Options,
    ) -> Result<(Fingerprints, Vec<TableCopy>), ReplicationError> {
        let recorded = if options.full {
            Default::default()
        } else {
            fingerprint::recorded(tx)
                .await
                .map_err(|e| self.on_slave(e))?
        };
        let mut progress = Progress::new(options.progress);
        if recorded.is_empty() {
            self.copy_all(snapshot, tx, catalog, replicated, &mut progress)
                .await
        } else {
            let (fingerprints, changed) = self
                .changed_tables(snapshot, tx, replicated, &recorded)
                .await?;
            self.phase("fingerprints");
            let plan = Plan::new(catalog, &changed);
            progress.plan(plan.copy.len(), replicated.len() - plan.copy.len());
            let copied = copy_plan(
                snapshot,
                tx,
                catalog,
                &plan,
                &mut progress,
                self.source,
                self.target,
            )
            .await?;
            Ok((fingerprints, copied))
        }
    }

    /// Everything is copied (first run, or --full): the fingerprints to record are computed on
    /// a second master connection sharing the snapshot, while the data streams.
    async fn copy_all(
        &self,
        snapshot: &Transaction<'_>,
        tx: &Transaction<'_>,
        catalog: &tables::Catalog,
        replicated: &[&str],
        progress: &mut Progress,
    ) -> Result<(Fingerprints, Vec<TableCopy>), ReplicationError> {
        let all: BTreeSet<String> = replicated.iter().map(|t| t.to_string()).collect();
        let plan = Plan::new(catalog, &all);
        progress.plan(plan.copy.len(), 0);
        let mut helper = self.source.connect().await?;
        let shared = snapshot_twin(snapshot, &mut helper)
            .await
            .map_err(|e| self.on_master(e))?;
        let (fingerprints, copied) = tokio::join!(
            fingerprint::master_fingerprints(&shared, replicated),
            copy_plan(
                snapshot,
                tx,
                catalog,
                &plan,
                progress,
                self.source,
                self.target
            )
        );
        let fingerprints = fingerprints.map_err(|e| self.on_master(e))?;
        let copied = copied?;
        debug_assert_eq!(plan.copy.len(), copied.len());
        Ok((fingerprints, copied))
    }

    /// The master's fingerprints and the tables to copy. The slave check runs on every
    /// recorded table while the master fingerprints: a table whose master side changed is
    /// copied anyway, and the overlap saves a round of waiting.
    async fn changed_tables(
        &self,
        snapshot: &Transaction<'_>,
        tx: &Transaction<'_>,
        replicated: &[&str],
        recorded: &BTreeMap<String, fingerprint::Recorded>,
    ) -> Result<(Fingerprints, BTreeSet<String>), ReplicationError> {
        let recorded_tables: Vec<(&str, &fingerprint::Recorded)> = replicated
            .iter()
            .filter_map(|t| Some((*t, recorded.get(*t)?)))
            .collect();
        let (fingerprints, untouched) = tokio::join!(
            fingerprint::master_fingerprints(snapshot, replicated),
            fingerprint::untouched_on_slave(tx, &recorded_tables)
        );
        let fingerprints = fingerprints.map_err(|e| self.on_master(e))?;
        let untouched = untouched.map_err(|e| self.on_slave(e))?;
        let unchanged: BTreeSet<&str> = untouched
            .iter()
            .map(String::as_str)
            .filter(|t| fingerprints.get(*t) == recorded.get(*t).map(|r| &r.fingerprint))
            .collect();
        let changed: BTreeSet<String> = replicated
            .iter()
            .filter(|t| !unchanged.contains(**t))
            .map(|t| t.to_string())
            .collect();
        Ok((fingerprints, changed))
    }

    /// Sequences: only those that differ are rewritten, so an unchanged run writes nothing.
    /// Returns how many were set.
    async fn set_sequences(
        &self,
        snapshot: &Transaction<'_>,
        tx: &Transaction<'_>,
        catalog: &tables::Catalog,
    ) -> Result<usize, ReplicationError> {
        let sequences = catalog.copied_sequences();
        let (master_values, slave_values) = tokio::join!(
            copy::sequence_values(snapshot, &sequences),
            copy::sequence_values(tx, &sequences)
        );
        let master_values = master_values.map_err(|e| self.on_master(e))?;
        let slave_values = slave_values.map_err(|e| self.on_slave(e))?;
        let differing: Vec<(&str, (i64, bool))> = master_values
            .iter()
            .filter(|(sequence, value)| slave_values.get(*sequence) != Some(*value))
            .map(|(sequence, value)| (sequence.as_str(), *value))
            .collect();
        copy::set_sequences(tx, &differing)
            .await
            .map_err(|e| self.on_slave(e))?;
        Ok(differing.len())
    }

    /// The bookkeeping: what the slave now holds for the tables just copied.
    async fn record_fingerprints(
        &self,
        tx: &Transaction<'_>,
        copied: &[TableCopy],
        fingerprints: &Fingerprints,
        replicated: &[&str],
    ) -> Result<(), ReplicationError> {
        if copied.is_empty() {
            return Ok(());
        }
        let records: Vec<(String, String, i64)> = copied
            .iter()
            .map(|c| {
                (
                    c.table.clone(),
                    fingerprints[&c.table].clone(),
                    c.rows as i64,
                )
            })
            .collect();
        fingerprint::record(tx, &records, replicated)
            .await
            .map_err(|e| self.on_slave(e))
    }
}

/// A second transaction on `helper` that sees exactly the snapshot of `snapshot`
/// (`pg_export_snapshot` / `SET TRANSACTION SNAPSHOT`), so that two queries of the same
/// consistent master state run at once.
async fn snapshot_twin<'a>(
    snapshot: &tokio_postgres::Transaction<'_>,
    helper: &'a mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'a>, tokio_postgres::Error> {
    let id: String = snapshot
        .query_one("SELECT pg_export_snapshot()", &[])
        .await?
        .get(0);
    let twin = helper
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    twin.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT {}",
        tables::quote_literal(&id)
    ))
    .await?;
    Ok(twin)
}

/// Empties the tables of `plan` on the slave and streams each one from the master.
async fn copy_plan(
    snapshot: &tokio_postgres::Transaction<'_>,
    tx: &tokio_postgres::Transaction<'_>,
    catalog: &tables::Catalog,
    plan: &Plan,
    progress: &mut Progress,
    source: &DbTarget,
    target: &DbTarget,
) -> Result<Vec<TableCopy>, ReplicationError> {
    plan.empty(tx).await.map_err(|e| ReplicationError::Slave {
        target: target.describe(),
        reason: error_reason(&e),
    })?;
    let mut copied = Vec::new();
    for table in &plan.copy {
        let copy = copy::copy_table(snapshot, tx, catalog, table, |bytes| {
            progress.tick(table, bytes)
        })
        .await
        .map_err(|failure| {
            let (side, target, e) = match failure {
                CopyFailure::Master(e) => ("master", source.describe(), e),
                CopyFailure::Slave(e) => ("slave", target.describe(), e),
            };
            ReplicationError::Copy {
                table: table.clone(),
                side: side.into(),
                target,
                reason: error_reason(&e),
            }
        })?;
        progress.table_done(&copy);
        copied.push(copy);
    }
    Ok(copied)
}
