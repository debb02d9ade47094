//! DB Replic (`xivo-ha db-replic`): forwards XiVO's call events (`cel`, `queue_log`) to XiVO
//! CC's reporting PostgreSQL and to Elasticsearch, with no row lost or duplicated, and, unless
//! the node is an HA slave, refreshes XiVO CC's configuration tables every 5 minutes.
//!
//! This file owns the runner: one task per (table, sink), each with its own source connection
//! and checkpoint, so that a sink that is down never holds back the other, nor one table the
//! other; and the retry loop that applies the policy of [`retry`]. The command's checks
//! (xc_enabled flag, settings) are in [`command`].
//!
//! Layout, after vector's sinks and supabase/etl: [`settings`] (custom.env), [`source`]
//! (incremental reads), [`heads`] (the idle watch every task waits on), [`holes`] (when a
//! hole in the ids may be passed), [`reconcile`] (the pass that delivers rows a sink lacks
//! below its checkpoint), [`sink`] (the trait and its delivery contract), [`pg`] and [`es`] (the two sinks), [`retry`] (the one retry table),
//! [`claim`] (which node owns the origin), [`config_tables`], [`logfile`], `board` (the status
//! board the tasks report to, saved for `xivo-ha status`).

mod board;
pub mod claim;
pub mod command;
pub mod config_tables;
pub mod es;
pub mod heads;
pub mod holes;
pub mod logfile;
pub mod pg;
pub mod reconcile;
pub mod retry;
pub mod settings;
pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::db::DbTarget;
use crate::node_id::{NodeId, NodeIdError};
use crate::paths::Paths;
use board::Board;
use claim::Claimant;
use heads::Heads;
use logfile::{LogDirError, LogFile};
use retry::{Decision, ErrorKind};
use settings::DbReplicSettings;
use sink::{Sink, SinkError};
use source::{EventTable, Source};

/// XiVO CC's log directory for DB Replic.
pub const LOG_DIR: &str = "/var/log/xivo-db-replication";

#[derive(Debug, thiserror::Error)]
pub enum DbReplicError {
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
    #[error(transparent)]
    LogDir(#[from] LogDirError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    NodeId(#[from] NodeIdError),
    #[error("DB Replic stopped: {0}")]
    SinkStopped(String),
    /// The origin belongs to another node: nothing was written (see [`claim`]).
    #[error("DB Replic refused: {0}")]
    OriginClaimed(String),
    #[error("cannot take over the origin: {0} (nothing started; run it again once it answers)")]
    TakeOver(String),
}

/// What the runner needs besides the settings.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The local XiVO database (`--db`).
    pub source: DbTarget,
    pub paths: Paths,
    /// Return once every (table, sink) has nothing left to deliver.
    pub exit_when_idle: bool,
}

/// Runs DB Replic until `shutdown` completes (or, with `exit_when_idle`, until caught up).
/// Returns an error when every sink task has stopped on an error that retrying cannot fix.
/// Dropping the returned future mid-way is safe: deliveries are idempotent and checkpoints
/// only advance with durable writes (see [`sink`]). The phases: announce, start a delivery
/// task per (table, sink) ([`spawn_deliveries`]) and the configuration refresh, wait
/// ([`wait_for_tasks`]), then wind down and record the last status.
pub async fn run(
    settings: DbReplicSettings,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DbReplicError> {
    let log = Arc::new(LogFile::open(&options.paths.under(LOG_DIR))?);
    let me = Claimant::new(NodeId::load_or_create(&options.paths)?);
    let reporting = settings.reporting.target();
    announce(&settings, &options, &reporting, &me, &log);
    if let Err(e) = claim::check_before_start(&settings, &me).await {
        return Err(refused(&log, e));
    }
    let board = Board::new(&settings, log.clone(), options.paths.clone());

    let (heads, watch) = Heads::spawn(
        Source::new(options.source.clone(), 1, 1, Duration::ZERO),
        settings.poll,
    );
    let mut tasks: JoinSet<Result<(), SinkError>> = JoinSet::new();
    let savers = spawn_deliveries(
        &settings, &options, &reporting, &me, &board, &heads, &mut tasks,
    )?;
    if !settings.ha_slave {
        let claims = pg::service::PgService::new(reporting.clone())
            .claiming(settings.origin.clone(), me.clone());
        tasks.spawn(refresh_config_tables(
            options.source.clone(),
            reporting.clone(),
            claims,
            settings.config_interval,
            settings.retry_initial,
            board.clone(),
            options.exit_when_idle,
        ));
    }
    let reporter = tokio::spawn(report_status(board.clone(), heads));

    let fatal = wait_for_tasks(&mut tasks, shutdown).await;
    tasks.shutdown().await;
    // The sinks are gone: their checkpoint writers finish their last write and end.
    for saver in savers {
        let _ = tokio::time::timeout(Duration::from_secs(10), saver).await;
    }
    reporter.abort();
    watch.abort();
    if let Ok(heads) = Source::new(options.source.clone(), 1, 1, Duration::ZERO)
        .heads()
        .await
    {
        board.behind(&heads);
    }
    board.save();
    if let Some(claimed) = fatal.iter().find(|e| e.kind == ErrorKind::OriginClaimed) {
        return Err(refused(&log, claimed.clone()));
    }
    let message = match fatal.first() {
        Some(first) => format!("DB Replic stopped: {first}"),
        None => "DB Replic stopped".to_owned(),
    };
    tracing::info!("{message}");
    log.line("INFO", &message);
    match fatal.into_iter().next() {
        Some(first) => Err(DbReplicError::SinkStopped(first.message)),
        None => Ok(()),
    }
}

/// The origin is another node's: said in DB Replic's log, and the command's error.
fn refused(log: &LogFile, error: SinkError) -> DbReplicError {
    log.line("ERROR", &format!("DB Replic refused: {}", error.message));
    DbReplicError::OriginClaimed(error.message)
}

/// The start-up line, in the log and DB Replic's own log file.
fn announce(
    settings: &DbReplicSettings,
    options: &RunOptions,
    reporting: &DbTarget,
    me: &Claimant,
    log: &LogFile,
) {
    let mode = if settings.ha_slave {
        "HA mode (cel and queue_log only)"
    } else {
        "normal mode (cel, queue_log and configuration tables)"
    };
    let message = format!(
        "DB Replic starting in {mode}: origin {} (node {}), from {} to PostgreSQL {} and Elasticsearch {}",
        settings.origin,
        me.node_id,
        options.source.describe(),
        reporting.describe(),
        settings.elasticsearch.url
    );
    tracing::info!("{message}");
    log.line("INFO", &message);
}

/// One delivery task per (event table, sink) into `tasks`; returns the Elasticsearch sinks'
/// checkpoint writers, to be awaited once the sinks are gone.
fn spawn_deliveries(
    settings: &DbReplicSettings,
    options: &RunOptions,
    reporting: &DbTarget,
    me: &Claimant,
    board: &Board,
    heads: &Heads,
    tasks: &mut JoinSet<Result<(), SinkError>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, DbReplicError> {
    let checkpoint_dir = options.paths.state_dir().join("dbreplic");
    let mut savers = Vec::new();
    for table in EventTable::ALL {
        let source = || {
            Source::new(
                options.source.clone(),
                settings.batch_rows,
                settings.batch_bytes,
                settings.gap_wait,
            )
        };
        let knobs = Drive::new(settings, options);
        let pg = pg::PgSink::new(
            reporting.clone(),
            settings.origin.clone(),
            me.clone(),
            table,
        );
        tasks.spawn(drive(
            pg,
            table,
            source(),
            board.clone(),
            heads.clone(),
            knobs,
        ));
        let index = match table {
            EventTable::Cel => settings.cel_index.clone(),
            EventTable::QueueLog => settings.queue_log_index.clone(),
        };
        let service = es::service::EsService::new(&settings.elasticsearch)
            .map_err(|e| DbReplicError::SinkStopped(e.message))?;
        let mut es = es::EsSink::new(
            service,
            settings.origin.clone(),
            me.clone(),
            table,
            index,
            checkpoint_dir.clone(),
            settings.retry_initial,
        );
        savers.extend(es.take_saver_task());
        tasks.spawn(drive(
            es,
            table,
            source(),
            board.clone(),
            heads.clone(),
            knobs,
        ));
    }
    Ok(savers)
}

/// Waits until `shutdown` completes, every task has ended, or one has stopped on an error
/// that stops them all ([`Decision::StopAll`]); returns the errors of the tasks that stopped
/// on one.
async fn wait_for_tasks(
    tasks: &mut JoinSet<Result<(), SinkError>>,
    shutdown: impl Future<Output = ()>,
) -> Vec<SinkError> {
    let mut fatal = Vec::new();
    tokio::select! {
        _ = shutdown => {}
        _ = async {
            while let Some(result) = tasks.join_next().await {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let all = retry::decide(e.kind) == Decision::StopAll;
                        fatal.push(e);
                        if all {
                            break;
                        }
                    }
                    Err(e) if e.is_panic() => fatal.push(SinkError::new(
                        ErrorKind::Rejected,
                        format!("a delivery task panicked: {e}"),
                    )),
                    Err(_) => {}
                }
            }
        } => {}
    }
    fatal
}

/// Per-task knobs.
#[derive(Clone, Copy)]
struct Drive {
    poll: Duration,
    reconcile: Duration,
    batch_rows: usize,
    retry_initial: Duration,
    exit_when_idle: bool,
}

impl Drive {
    fn new(settings: &DbReplicSettings, options: &RunOptions) -> Self {
        Drive {
            poll: settings.poll,
            reconcile: settings.reconcile,
            batch_rows: settings.batch_rows,
            retry_initial: settings.retry_initial,
            exit_when_idle: options.exit_when_idle,
        }
    }
}

enum Step {
    /// Nothing new: wait until the idle watch sees a new row ([`heads`]).
    Idle,
    /// Nothing deliverable before a hole that may still be filled: wait a poll interval.
    Waiting,
    /// A partial batch: more rows are arriving, look again soon.
    Some,
    /// A full batch: there is a backlog, go on at once.
    Full,
}

/// Delivers `table` to `sink` forever: read after the checkpoint, write, repeat
/// ([`Delivery::step`]); with nothing new, wait on the idle watch (`heads`); on errors, apply
/// the retry policy ([`Delivery::failed`]) and back off. Returns only when the sink must stop
/// (or idle, if asked).
async fn drive<S: Sink>(
    sink: S,
    table: EventTable,
    source: Source,
    board: Board,
    mut heads: Heads,
    knobs: Drive,
) -> Result<(), SinkError> {
    let mut delivery = Delivery::new(sink, table, source, board, knobs.reconcile);
    let mut attempt = 0u32;
    loop {
        match delivery.step(knobs.batch_rows).await {
            Ok(step) => {
                // Also after a write that reported errors while it retried them itself.
                delivery.board.recovered(delivery.key);
                attempt = 0;
                match step {
                    Step::Idle if knobs.exit_when_idle => return Ok(()),
                    Step::Idle => {
                        let after = delivery.checkpoint.unwrap_or(0);
                        heads.wait_beyond(table, after, heads::IDLE_READ).await;
                    }
                    Step::Waiting => tokio::time::sleep(knobs.poll).await,
                    Step::Some => tokio::time::sleep(knobs.poll / 2).await,
                    Step::Full => tokio::task::yield_now().await,
                }
            }
            Err(error) => {
                delivery.failed(error)?;
                tokio::time::sleep(retry::backoff(knobs.retry_initial, attempt)).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// One (table, sink) pair being delivered, and where it stands.
struct Delivery<S> {
    sink: S,
    table: EventTable,
    source: Source,
    board: Board,
    key: (EventTable, &'static str),
    started: bool,
    /// The sink's durable checkpoint, once read (`None`: read it again).
    checkpoint: Option<i64>,
    /// A batch read while the previous one was being written, and the id it was read after.
    prefetched: Option<(i64, source::Batch)>,
    /// The period of the reconciliation pass (see [`reconcile`]) and when the next is due.
    reconcile_every: Duration,
    next_reconcile: Instant,
}

impl<S: Sink> Delivery<S> {
    fn new(sink: S, table: EventTable, source: Source, board: Board, reconcile: Duration) -> Self {
        let key = (table, sink.name());
        board.register(key, sink.describe());
        Delivery {
            sink,
            table,
            source,
            board,
            key,
            started: false,
            checkpoint: None,
            prefetched: None,
            reconcile_every: reconcile,
            next_reconcile: Instant::now() + reconcile,
        }
    }

    /// One batch: (re)start the sink and read its checkpoint if needed, reconcile when due,
    /// read after the checkpoint, write.
    async fn step(&mut self, batch_rows: usize) -> Result<Step, SinkError> {
        let after = self.resume().await?;
        if Instant::now() >= self.next_reconcile {
            self.reconcile(after).await?;
            self.next_reconcile = Instant::now() + self.reconcile_every;
        }
        let batch = self.read(after).await?;
        self.board.holes(self.key, self.source.holes());
        let Some(last) = batch.last_id() else {
            // Not idle while a hole may still be filled: a backfill waits for it too.
            return Ok(if self.source.holes().waiting > 0 {
                Step::Waiting
            } else {
                Step::Idle
            });
        };
        let full = batch.rows.len() >= batch_rows;
        let report = |e: &SinkError| self.board.error(self.key, e);
        if full {
            // A backlog: read the next batch while this one is written, so that the source
            // query and the sink's work overlap.
            let (written, next) = tokio::join!(
                self.sink.write(&batch, &report),
                self.source.read(self.table, last)
            );
            written?;
            self.prefetched = next.ok().map(|next| (last, next));
        } else {
            self.sink.write(&batch, &report).await?;
        }
        self.checkpoint = Some(last);
        self.board.delivered(self.key, last);
        Ok(if full { Step::Full } else { Step::Some })
    }

    /// Starts the sink and reads its checkpoint when they are not known; returns the id to
    /// read after.
    async fn resume(&mut self) -> Result<i64, SinkError> {
        if !self.started {
            self.sink.start().await?;
            self.started = true;
        }
        if let Some(after) = self.checkpoint {
            return Ok(after);
        }
        let after = self.sink.checkpoint(self.table).await?;
        self.checkpoint = Some(after);
        self.board.delivered(self.key, after);
        Ok(after)
    }

    /// The batch after `after`: the prefetched one if it starts there (it does unless the
    /// write that ran beside it failed), else read now.
    async fn read(&mut self, after: i64) -> Result<source::Batch, SinkError> {
        match self.prefetched.take() {
            Some((read_after, batch)) if read_after == after => Ok(batch),
            _ => self
                .source
                .read(self.table, after)
                .await
                .map_err(source_error),
        }
    }

    /// The reconciliation pass over the ids up to the checkpoint `after`.
    async fn reconcile(&mut self, after: i64) -> Result<(), SinkError> {
        let (board, key) = (&self.board, self.key);
        let report = |e: &SinkError| board.error(key, e);
        let recovered =
            reconcile::pass(&mut self.sink, &mut self.source, self.table, after, &report).await?;
        self.board.reconciled(self.key, recovered);
        Ok(())
    }

    /// A failed step, shown and judged by the retry policy: `Err` when the sink must stop,
    /// `Ok` to retry after the backoff.
    fn failed(&mut self, error: SinkError) -> Result<(), SinkError> {
        self.board.error(self.key, &error);
        let decision = retry::decide(error.kind);
        if decision == Decision::StopAll {
            self.board.stopped(self.key);
            return Err(error);
        }
        if decision == Decision::Stop {
            self.board.stopped(self.key);
            return Err(SinkError::new(
                error.kind,
                format!(
                    "{} sink for {} stopped: {}",
                    self.sink.name(),
                    self.table,
                    error.message
                ),
            ));
        }
        if error.kind != ErrorKind::Source {
            // Reconnect and re-read the durable checkpoint: whatever the failed write did or
            // did not commit, the sink's own record is the truth.
            self.started = false;
            self.checkpoint = None;
        }
        Ok(())
    }
}

/// A failure of the local XiVO database, as the runner's error.
fn source_error(e: crate::db::DbError) -> SinkError {
    SinkError::new(
        ErrorKind::Source,
        format!("{e} (the local XiVO database; is PostgreSQL up?)"),
    )
}

/// The configuration tables, every `interval` (normal mode only), each time once `claims` has
/// confirmed that the origin is this node's.
async fn refresh_config_tables(
    source: DbTarget,
    reporting: DbTarget,
    mut claims: pg::service::PgService,
    interval: Duration,
    retry_initial: Duration,
    board: Board,
    once: bool,
) -> Result<(), SinkError> {
    let mut attempt = 0;
    loop {
        let refreshed = match claims.claim_origin(false).await {
            Err(e) if retry::decide(e.kind) == Decision::StopAll => return Err(e),
            Err(e) => Err(e.message),
            Ok(()) => config_tables::refresh(&source, &reporting)
                .await
                .map_err(|e| e.to_string()),
        };
        match refreshed {
            Ok(rows) => {
                attempt = 0;
                board.config_refreshed(rows);
                if once {
                    return Ok(());
                }
                tokio::time::sleep(interval).await;
            }
            Err(e) => {
                board.config_failed(&e);
                tokio::time::sleep(retry::backoff(retry_initial, attempt).min(interval)).await;
                attempt += 1;
            }
        }
    }
}

/// Saves the status document every second, with "rows behind" from the idle watch's heads.
async fn report_status(board: Board, heads: Heads) {
    loop {
        let latest: BTreeMap<EventTable, i64> = EventTable::ALL
            .iter()
            .filter_map(|&table| Some((table, heads.get(table)?)))
            .collect();
        board.behind(&latest);
        board.save();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
