//! Configuration database replication, master → slave (`xivo-ha db-replication <slave_ip>`, the
//! link `xivo-master-slave-db-replication`, and the monitor's hourly run through
//! [`run_hourly`]): the orchestration of one run, its errors, its report and the state it leaves
//! for `status`.
//!
//! One run: connect to both sides at once → lock on the master (advisory, session) → one
//! REPEATABLE READ snapshot of the master and one slave transaction with
//! `session_replication_role = replica` and an advisory lock → guards (encoding, same database,
//! schema) → the master's fingerprints, and at the same time the tables the slave changed since
//! the last run (its bookkeeping) → the merge-back: the user statuses the slave changed written
//! into the master in one transaction of their own, committed, then a new snapshot (so that the
//! slave receives the merged values) → TRUNCATE and binary COPY of the tables that changed →
//! sequences → bookkeeping and the merge base → COMMIT. Any failure before the merge-back's
//! COMMIT leaves both sides as they were; after it, the master keeps the merged values (the
//! slave holds them already: the next run finds nothing left to merge) and the slave is as it
//! was.
//!
//! - [`tables`]: the excluded-table constant and the catalog of each side.
//! - [`guards`]: encoding, same-database and schema checks.
//! - [`fingerprint`]: which tables need copying (master fingerprint, slave bookkeeping), and
//!   which ones the slave changed.
//! - [`merge`]: what is merged back (the list, its setting) and the decision for each value.
//! - [`base`]: the merge base on the slave, the merged columns of either side, the writes.
//! - [`copy`]: emptying, streaming COPY, sequences.
//! - [`target`]: the source and target databases (`XIVO_HA_SLAVE_DB_*`).
//! - [`progress`]: terminal output.
//! - [`command`]: `xivo-ha db-replication`'s arguments and output.

pub mod base;
pub mod command;
pub mod copy;
pub mod fingerprint;
pub mod guards;
pub mod merge;
pub mod progress;
pub mod tables;
pub mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{Client, IsolationLevel, Transaction};

use crate::alert::{Event, Kind};
use crate::context::Context;
use crate::db::{DbError, DbTarget, error_reason};
use crate::ha::{HaConfig, HaError, NodeType};
use crate::settings::ConfigError;
use crate::status::documents::{
    Component, MergeConflict, MergedValue, ReplicationDetails, ReplicationDoc, SlaveChange,
};
use crate::status::store;
use copy::{CopyFailure, Plan, TableCopy};
use merge::{MergeList, Resolved};
use progress::{Progress, human_bytes};
pub use tables::EXCLUDED_TABLES;
pub use target::SlaveDbSettings;

/// How long a run waits for the master lock held by a run that has just ended.
const LOCK_GRACE: Duration = Duration::from_secs(2);

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
        "{}EXTRA: {reason}: name columns of the replicated tables (table.column); nothing was changed",
        merge::ENV_PREFIX
    )]
    MergeList { reason: String },
    #[error(
        "merging the slave's user statuses of `{table}` back failed on the {side} ({target}): {reason}; nothing was changed on the master nor on the slave"
    )]
    Merge {
        table: String,
        side: String,
        target: String,
        reason: String,
    },
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
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Ignore the fingerprints: copy every replicated table.
    pub full: bool,
    /// Per-table lines on stdout.
    pub progress: bool,
    /// What is merged back ([`merge::USER_STATUSES`] unless the settings add to it).
    pub merge: MergeList,
}

/// What the merge-back did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MergeOutcome {
    /// The values written into the master (committed there before the copy).
    pub merged_back: Vec<MergedValue>,
    pub conflicts: Vec<MergeConflict>,
    /// Why rows or tables were not merged.
    pub skipped: Vec<String>,
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
    pub merge: MergeOutcome,
    /// The tables the slave changed since the last run, overwritten by this one.
    pub slave_changes: Vec<SlaveChange>,
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
            "{} to {}: ok, {} of {} tables copied ({} rows, {}), {} unchanged, {} sequences set, {:.2} s{}",
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.slave,
            self.tables_copied.len(),
            self.tables_total,
            self.rows_copied(),
            human_bytes(self.bytes_copied()),
            self.tables_unchanged,
            self.sequences_set,
            self.seconds,
            slave_side_summary(&self.merge, &self.slave_changes)
        )
    }
}

/// `; 2 user statuses merged back, 1 conflict (the master's value kept), the slave's changes to
/// 2 tables overwritten: extensions (1 row), userfeatures (2 rows)`, or nothing when the slave
/// changed nothing.
pub fn slave_side_summary(merge: &MergeOutcome, changes: &[SlaveChange]) -> String {
    let mut parts = Vec::new();
    if !merge.merged_back.is_empty() {
        parts.push(format!(
            "{} merged back",
            plural(merge.merged_back.len(), "user status", "user statuses")
        ));
    }
    if !merge.conflicts.is_empty() {
        parts.push(format!(
            "{} (the master's value kept)",
            plural(merge.conflicts.len(), "conflict", "conflicts")
        ));
    }
    if !changes.is_empty() {
        parts.push(format!(
            "the slave's changes to {} overwritten: {}",
            plural(changes.len(), "table", "tables"),
            changed_tables(changes)
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

/// `extensions (1 row), userfeatures (2 rows)`.
pub fn changed_tables(changes: &[SlaveChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{} ({})", c.table, plural(c.rows as usize, "row", "rows")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value for people: `'1'`, or `NULL`.
fn show_value(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("'{v}'"),
        None => "NULL".to_owned(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The mail about what a run did with the slave's changes (a one-off [`Kind::SlaveChanges`]):
/// the headline, then one line per merged value, conflict and table overwritten. `None` when
/// the slave changed nothing.
pub fn slave_changes_mail(merge: &MergeOutcome, changes: &[SlaveChange]) -> Option<String> {
    if merge.merged_back.is_empty() && merge.conflicts.is_empty() && changes.is_empty() {
        return None;
    }
    let show = show_value;
    let mut text = format!(
        "the slave's changes to {} were overwritten: {} (merged back: {})",
        plural(changes.len(), "table", "tables"),
        if changes.is_empty() {
            "none".to_owned()
        } else {
            changed_tables(changes)
        },
        plural(merge.merged_back.len(), "user status", "user statuses")
    );
    for m in &merge.merged_back {
        text.push_str(&format!(
            "\nmerged back: {} {} {}: {} (was {})",
            m.table,
            m.key,
            m.column,
            show(&m.value),
            show(&m.was)
        ));
    }
    for c in &merge.conflicts {
        text.push_str(&format!(
            "\nconflict: {} {} {}: the master's {} kept, the slave's {} overwritten (both were {})",
            c.table,
            c.key,
            c.column,
            show(&c.master),
            show(&c.slave),
            show(&c.base)
        ));
    }
    for note in &merge.skipped {
        text.push_str(&format!("\nnot merged: {note}"));
    }
    Some(text)
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
                merged_back: report.merge.merged_back.clone(),
                conflicts: report.merge.conflicts.clone(),
                slave_changes_overwritten: report.slave_changes.clone(),
                merge_skipped: report.merge.skipped.clone(),
            },
        }
    }

    /// The document of a run that failed (nothing was changed on the slave; the values of
    /// `merge`, when its merge-back was committed, were written into the master).
    pub fn failure(
        slave: &str,
        started_at: DateTime<Utc>,
        seconds: f64,
        error: &ReplicationError,
        merge: &MergeOutcome,
    ) -> ReplicationDoc {
        ReplicationDoc {
            summary: format!(
                "{} to {slave}: FAILED after {seconds:.2} s: {error}{}",
                started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                slave_side_summary(merge, &[])
            ),
            started_at,
            seconds,
            ok: false,
            error: Some(error.to_string()),
            last_success_at: None,
            details: ReplicationDetails {
                slave: slave.to_owned(),
                merged_back: merge.merged_back.clone(),
                conflicts: merge.conflicts.clone(),
                merge_skipped: merge.skipped.clone(),
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
    let options = Options {
        merge: MergeList::load(ctx)?,
        ..Options::default()
    };
    let report = run_and_record(ctx, &source, &target, options).await?;
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
    let mut merged = MergeOutcome::default();
    let result = replicate_merging(source, target, options, &mut merged).await;
    let mut state = match &result {
        Ok(report) => ReplicationDoc::success(report),
        Err(ReplicationError::Busy { .. }) => return result,
        Err(error) => ReplicationDoc::failure(
            &target.describe(),
            started_at,
            clock.elapsed().as_secs_f64(),
            error,
            &merged,
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
    let changes = result.as_ref().map_or(&[][..], |r| &r.slave_changes);
    if let Some(text) = slave_changes_mail(&merged, changes) {
        crate::alert::raise(Event::happened(Kind::SlaveChanges, "", text));
    }
    result
}

/// An error's text on one line (a reason in a mail subject, XiVO's stderr line).
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Replicates `source` (the master) into `target` (the slave). Nothing is changed on the slave
/// unless the whole run succeeds, nor on the master unless the merge-back succeeds.
pub async fn replicate(
    source: &DbTarget,
    target: &DbTarget,
    options: Options,
) -> Result<Report, ReplicationError> {
    replicate_merging(source, target, options, &mut MergeOutcome::default()).await
}

/// [`replicate`], leaving in `merged` what the merge-back committed on the master (also when a
/// later phase fails). The phases, in order, are the functions below it: connect and lock the
/// master, begin both transactions, the guards, the fingerprints with the slave's changes, the
/// merge-back (and a new snapshot when it wrote), copy what changed, sequences and bookkeeping,
/// then COMMIT.
pub async fn replicate_merging(
    source: &DbTarget,
    target: &DbTarget,
    options: Options,
    merged: &mut MergeOutcome,
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
    let recorded = fingerprint::recorded(&tx)
        .await
        .map_err(|e| sides.on_slave(e))?;
    // What to compare the master's fingerprints with: nothing on a first run or with --full,
    // which copy everything.
    let recorded_for_copy = if options.full {
        Default::default()
    } else {
        recorded.clone()
    };
    // The slave check runs while the master fingerprints (a run that copies everything
    // computes them beside the copy instead).
    let (slave_side, fingerprints) =
        tokio::join!(sides.slave_changes(&tx, &replicated, &recorded), async {
            if recorded_for_copy.is_empty() {
                return Ok(None);
            }
            fingerprint::master_fingerprints(&snapshot, &replicated)
                .await
                .map(Some)
                .map_err(|e| sides.on_master(e))
        });
    let (untouched, slave_changes) = slave_side?;
    let fingerprints = fingerprints?;
    sides.phase("fingerprints");
    let changed_on_slave: BTreeSet<&str> = slave_changes.iter().map(|c| c.table.as_str()).collect();
    let (merge, resolved) = sides
        .merge_back(
            &snapshot,
            &tx,
            &catalog,
            &recorded,
            &changed_on_slave,
            &options.merge,
        )
        .await?;
    sides.phase("merged back");
    // Values written into the master: a new snapshot, taken after their commit, carries them
    // to the slave (and its fingerprints).
    let wrote = !merge.merged_back.is_empty();
    *merged = merge;
    let (snapshot, fingerprints) = if wrote {
        let _ = snapshot.rollback().await;
        (sides.snapshot(&mut master).await?, None)
    } else {
        (snapshot, fingerprints)
    };
    let (fingerprints, copied) = sides
        .copy_changed(
            &snapshot,
            &tx,
            &catalog,
            &replicated,
            &recorded_for_copy,
            &untouched,
            fingerprints,
            options.progress,
        )
        .await?;
    sides.phase("copied");
    let sequences_set = sides.set_sequences(&snapshot, &tx, &catalog).await?;
    sides
        .record_fingerprints(&tx, &copied, &fingerprints, &replicated)
        .await?;
    sides.record_bases(&tx, &resolved, &copied).await?;
    sides.phase("sequences");
    tx.commit().await.map_err(|e| sides.on_slave(e))?;
    sides.phase("committed");
    if !slave_changes.is_empty() {
        tracing::warn!(
            "the slave had changed {} since the last replication: overwritten by the master's (after the merge-back of the user statuses)",
            changed_tables(&slave_changes)
        );
    }
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
        merge: merged.clone(),
        slave_changes,
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
        // A run that has just ended frees the lock only once the server has seen its
        // connection close, a moment after its client was dropped: wait that moment before
        // saying another replication is running.
        let deadline = Instant::now() + LOCK_GRACE;
        let locked = loop {
            let locked: bool = master
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
                .await
                .map_err(|e| self.on_master(e))?
                .get(0);
            if locked || Instant::now() >= deadline {
                break locked;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
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
        let snapshot = self.snapshot(master).await?;
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

    /// A REPEATABLE READ, read-only transaction of the master: what the slave receives.
    async fn snapshot<'m>(
        &self,
        master: &'m mut Client,
    ) -> Result<Transaction<'m>, ReplicationError> {
        master
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.on_master(e))
    }

    /// The guards, before anything is written; returns the master's catalog. The same-database check comes before the slave lock,
    /// which the master's own lock would otherwise hold in that case. The two servers work at
    /// the same time wherever both sides are asked the same thing.
    async fn guards(
        &self,
        master: &Transaction<'_>,
        tx: &Transaction<'_>,
    ) -> Result<tables::Catalog, ReplicationError> {
        let (master_id, slave_id) =
            tokio::join!(guards::Identity::read(master), guards::Identity::read(tx));
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
            tokio::join!(tables::Catalog::read(master), tables::Catalog::read(tx));
        let master_catalog = master_catalog.map_err(|e| self.on_master(e))?;
        let slave_catalog = slave_catalog.map_err(|e| self.on_slave(e))?;
        guards::compare_schemas(&master_id, &slave_id, &master_catalog, &slave_catalog)?;
        Ok(master_catalog)
    }

    /// The tables the slave changed since the last run (its bookkeeping against its rows),
    /// with their rows; and the recorded tables it left untouched.
    async fn slave_changes(
        &self,
        tx: &Transaction<'_>,
        replicated: &[&str],
        recorded: &BTreeMap<String, fingerprint::Recorded>,
    ) -> Result<(BTreeSet<String>, Vec<SlaveChange>), ReplicationError> {
        let recorded_tables: Vec<(&str, &fingerprint::Recorded)> = replicated
            .iter()
            .filter_map(|t| Some((*t, recorded.get(*t)?)))
            .collect();
        let sides = fingerprint::slave_side(tx, &recorded_tables)
            .await
            .map_err(|e| self.on_slave(e))?;
        let mut untouched = BTreeSet::new();
        let mut changes = Vec::new();
        for (table, rec) in recorded_tables {
            let Some(side) = sides.get(table) else {
                continue;
            };
            if side.untouched(rec) {
                untouched.insert(table.to_owned());
            } else {
                changes.push(SlaveChange {
                    table: table.to_owned(),
                    rows: side.rows_changed(rec),
                });
            }
        }
        Ok((untouched, changes))
    }

    /// The merge-back: for each table of the list the slave changed, its base, the slave's
    /// values and the master's (from `snapshot`) read, and the decision; then the writes, in
    /// one transaction on a connection of their own to the master, committed. Returns the
    /// outcome and the tables merged (whose base the run records). Nothing is merged on a
    /// first run (no base yet), said once.
    #[allow(clippy::too_many_arguments)]
    async fn merge_back(
        &self,
        snapshot: &Transaction<'_>,
        tx: &Transaction<'_>,
        catalog: &tables::Catalog,
        recorded: &BTreeMap<String, fingerprint::Recorded>,
        changed_on_slave: &BTreeSet<&str>,
        list: &MergeList,
    ) -> Result<(MergeOutcome, Vec<Resolved>), ReplicationError> {
        let (resolved, notes) = merge::resolve(list, catalog)
            .map_err(|reason| ReplicationError::MergeList { reason })?;
        let mut outcome = MergeOutcome::default();
        if recorded.is_empty() {
            let note = "first replication to this slave (no base recorded yet): nothing merged back, the slave's data is replaced".to_owned();
            tracing::info!("merge-back: {note}");
            outcome.skipped.push(note);
            return Ok((outcome, resolved));
        }
        for (table, table_notes) in &notes {
            if changed_on_slave.contains(table.as_str()) {
                outcome.skipped.extend(table_notes.iter().cloned());
            }
        }
        let failed = |table: &str, side: &str, target: &DbTarget, e: tokio_postgres::Error| {
            ReplicationError::Merge {
                table: table.to_owned(),
                side: side.into(),
                target: target.describe(),
                reason: error_reason(&e),
            }
        };
        let bases = base::recorded(tx).await.map_err(|e| self.on_slave(e))?;
        let mut decisions = Vec::new();
        for table in resolved
            .iter()
            .filter(|r| changed_on_slave.contains(r.table.as_str()))
        {
            let Some((key, columns)) = bases.get(&table.table) else {
                outcome.skipped.push(format!(
                    "no merge for `{}`: no base recorded yet (the next replication records it)",
                    table.table
                ));
                continue;
            };
            if key != &table.key {
                outcome.skipped.push(format!(
                    "no merge for `{}`: its base was recorded for another key",
                    table.table
                ));
                continue;
            }
            let (base_rows, slave_values, master_values) = tokio::join!(
                base::read(tx, &table.table, key.clone(), columns.clone()),
                base::values(tx, table),
                base::values(snapshot, table)
            );
            let on_slave = |e| failed(&table.table, "slave", self.target, e);
            let base_rows = base_rows.map_err(on_slave)?;
            let slave_values = slave_values.map_err(on_slave)?;
            let master_values =
                master_values.map_err(|e| failed(&table.table, "master", self.source, e))?;
            let decision = merge::decide(table, &base_rows, &slave_values, &master_values);
            outcome.conflicts.extend(decision.conflicts);
            outcome.skipped.extend(decision.skipped);
            if !decision.writes.is_empty() {
                decisions.push((table, decision.writes));
            }
        }
        if let Some((first, _)) = decisions.first() {
            let on_master = |e| failed(&first.table, "master", self.source, e);
            let mut writer = self.source.connect().await?;
            let writes = writer.transaction().await.map_err(on_master)?;
            let mut merged = Vec::new();
            for (table, rows) in decisions {
                let (done, missed) = base::write(&writes, catalog, table, rows)
                    .await
                    .map_err(|e| failed(&table.table, "master", self.source, e))?;
                for write in missed {
                    outcome.skipped.push(format!(
                        "no merge for `{}` {}: changed on the master during the merge-back: the master's value is kept",
                        table.table,
                        merge::show_key(&table.key, &write.key)
                    ));
                }
                merged.extend(merge::merged_values(table, &done));
            }
            writes.commit().await.map_err(on_master)?;
            outcome.merged_back = merged;
        }
        for m in &outcome.merged_back {
            tracing::info!(
                "merge-back: {} {} {} = {} (was {}): changed on the slave, now on the master",
                m.table,
                m.key,
                m.column,
                show_value(&m.value),
                show_value(&m.was)
            );
        }
        for c in &outcome.conflicts {
            tracing::warn!(
                "merge-back conflict: {} {} {} changed on both sides (was {}): the master's {} kept, the slave's {} overwritten",
                c.table,
                c.key,
                c.column,
                show_value(&c.base),
                show_value(&c.master),
                show_value(&c.slave)
            );
        }
        for note in &outcome.skipped {
            tracing::info!("merge-back: {note}");
        }
        Ok((outcome, resolved))
    }

    /// What changed, copied: everything on a first run or with `--full` (`recorded` empty),
    /// otherwise the tables whose fingerprint changed or that the slave changed (not in
    /// `untouched`). `fingerprints` are the snapshot's, when already computed. Returns the
    /// master's fingerprints (to record) and the copies.
    #[allow(clippy::too_many_arguments)]
    async fn copy_changed(
        &self,
        snapshot: &Transaction<'_>,
        tx: &Transaction<'_>,
        catalog: &tables::Catalog,
        replicated: &[&str],
        recorded: &BTreeMap<String, fingerprint::Recorded>,
        untouched: &BTreeSet<String>,
        fingerprints: Option<Fingerprints>,
        progress: bool,
    ) -> Result<(Fingerprints, Vec<TableCopy>), ReplicationError> {
        let mut progress = Progress::new(progress);
        if recorded.is_empty() {
            self.copy_all(snapshot, tx, catalog, replicated, &mut progress)
                .await
        } else {
            let fingerprints = match fingerprints {
                Some(fingerprints) => fingerprints,
                None => fingerprint::master_fingerprints(snapshot, replicated)
                    .await
                    .map_err(|e| self.on_master(e))?,
            };
            let changed: BTreeSet<String> = replicated
                .iter()
                .filter(|t| {
                    !(untouched.contains(**t)
                        && fingerprints.get(**t) == recorded.get(**t).map(|r| &r.fingerprint))
                })
                .map(|t| t.to_string())
                .collect();
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

    /// The merge base of the tables just copied, and of those whose base is missing or stale;
    /// nothing written when none is (a run with no change writes nothing).
    async fn record_bases(
        &self,
        tx: &Transaction<'_>,
        resolved: &[Resolved],
        copied: &[TableCopy],
    ) -> Result<(), ReplicationError> {
        let recorded = base::recorded(tx).await.map_err(|e| self.on_slave(e))?;
        let copied: BTreeSet<String> = copied.iter().map(|c| c.table.clone()).collect();
        let to_write = merge::bases_to_write(resolved, &recorded, &copied);
        let stale = recorded
            .keys()
            .any(|t| !resolved.iter().any(|r| &r.table == t));
        if to_write.is_empty() && !stale {
            return Ok(());
        }
        base::record(tx, &to_write, resolved)
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
