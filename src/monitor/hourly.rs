//! The master's job runner: the jobs XiVO ran from `/etc/cron.d/xivo-ha-master` at minute 0,
//! and more often the incremental replication. One runner, so never two jobs at once:
//! - at every wall-clock hour :00 (local time, as cron), every job in order (replication, then
//!   sync); a run that overlaps the next hour makes that hour's run start when it ends;
//! - every `XIVO_HA_REPLICATION_INTERVAL_S` (start to start), the jobs marked
//!   [`Job::every_interval`] (the replication: a run with no change only reads fingerprints);
//!   an interval run due within a second of :00 waits for the hourly run. `3600` gives XiVO's
//!   cadence (the hourly runs alone);
//! - at a failback (the slave standby again after being active, [`super::peer`]), at once:
//!   [`failback_jobs`] (the copy-back of the voicemail and recordings made on the slave), then
//!   every job;
//! - when the slave is first known standby after the monitor started, the jobs marked
//!   [`Job::also_at_start`] (the copy-back): a master that starts cannot know whether its slave
//!   served while it was down (the usual failover), nor see that failback if the slave handed
//!   back before this monitor's first rounds.
//!
//! While the slave is active (or not known yet), nothing runs: a replication or a sync would
//! overwrite what users do on the slave. Runs due while it is active are skipped (logged, shown
//! in the state); runs due while it is not known wait for the first verdict.
//! [`Schedule`] and [`decide`] are the pure decision; [`run`] does the waiting and the running.
//!
//! Wiring a job in: add it to [`master_jobs`] (or [`failback_jobs`]), e.g.
//! `Job::new("replication", |ctx| async move { crate::replication::run_hourly(&ctx).await })`.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDateTime, Timelike, Utc};
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::peer::PeerState;
use crate::context::Context;
use crate::status::documents::{HourlyJob, HourlyRun};

/// What starts a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The replication interval elapsed.
    Interval,
    /// A wall-clock :00.
    Hour,
    /// The failback is done.
    Failback,
    /// The slave is first known standby after the monitor started.
    Start,
}

impl Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Interval => "interval",
            Trigger::Hour => "hourly",
            Trigger::Failback => "failback",
            Trigger::Start => "start",
        })
    }
}

/// One job: a name for the logs, the triggers it runs on and a function that runs it once.
pub struct Job {
    pub name: &'static str,
    triggers: &'static [Trigger],
    run: Box<dyn Fn(Context) -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl Job {
    /// A job of the hourly runs (and of the failback run) from an async function of the
    /// context; its error is reported with `Display`.
    pub fn new<F, Fut, T, E>(name: &'static str, run: F) -> Job
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Display,
    {
        Job {
            name,
            triggers: &[Trigger::Hour, Trigger::Failback],
            run: Box::new(move |ctx| {
                let future = run(ctx);
                Box::pin(async move { future.await.map(|_| ()).map_err(|e| e.to_string()) })
            }),
        }
    }

    /// Also run at every replication interval.
    pub fn every_interval(mut self) -> Job {
        self.triggers = &[Trigger::Interval, Trigger::Hour, Trigger::Failback];
        self
    }

    /// Also run once when the slave is first known standby after the monitor started.
    pub fn also_at_start(mut self) -> Job {
        self.triggers = &[Trigger::Start, Trigger::Hour, Trigger::Failback];
        self
    }

    /// Run only when the failback is done.
    pub fn on_failback_only(mut self) -> Job {
        self.triggers = &[Trigger::Failback];
        self
    }

    pub fn runs_on(&self, trigger: Trigger) -> bool {
        self.triggers.contains(&trigger)
    }
}

/// The jobs a master runs, in order: [`failback_jobs`] first, then the configuration database
/// (every interval and every hour), then the files (a failed replication does not hold back
/// the sync).
pub fn master_jobs() -> Vec<Job> {
    let mut jobs = failback_jobs();
    jobs.push(
        Job::new("replication", |ctx| async move {
            crate::replication::run_hourly(&ctx).await
        })
        .every_interval(),
    );
    jobs.push(Job::new("sync", |ctx| async move {
        crate::sync::run_hourly(&ctx).await
    }));
    jobs
}

/// The failback hook: the jobs that run when the failback is done, before the replication and
/// the sync that follow it at once, to bring home what users made on the slave while it served:
/// the copy-back of the voicemail messages and recordings (`sync --back` without a human,
/// [`crate::sync::copy_back`]: only what the slave changed since the last copy-back, never
/// deleting and never overwriting a newer file here), also
/// at every :00 as a safety net and once at the monitor's start. The user statuses are merged
/// back by the replication itself.
pub fn failback_jobs() -> Vec<Job> {
    vec![
        Job::new("copy-back", |ctx| async move {
            crate::sync::copy_back(&ctx).await
        })
        .also_at_start(),
    ]
}

/// Records `run` among `runs` (the latest run of each job, for `status`), keeping the job's
/// last success when this run failed.
pub fn carry_over(runs: &mut Vec<HourlyRun>, mut run: HourlyRun) {
    if let Some(i) = runs.iter().position(|r| r.details.job == run.details.job) {
        let previous = runs.remove(i);
        run.last_success_at = run.last_success_at.or(previous.last_success_at);
    }
    runs.push(run);
}

/// Local wall-clock time; a trait so that tests run the scheduler on tokio's paused clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> NaiveDateTime;
}

/// The system's local time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> NaiveDateTime {
        Local::now().naive_local()
    }
}

/// Local time that moves with tokio's clock from a chosen start: with paused time, tests run
/// hours of schedule in milliseconds.
#[cfg(test)]
pub(crate) struct TokioClock {
    pub start_wall: NaiveDateTime,
    pub start: tokio::time::Instant,
}

#[cfg(test)]
impl Clock for TokioClock {
    fn now(&self) -> NaiveDateTime {
        self.start_wall + chrono::Duration::from_std(self.start.elapsed()).expect("in range")
    }
}

/// The next :00 strictly after `now`.
pub fn next_hour(now: NaiveDateTime) -> NaiveDateTime {
    let hour_start = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .expect("0 is a valid minute, second and nanosecond");
    hour_start + chrono::Duration::hours(1)
}

/// The longest single sleep: the wall clock is read again after it, so that a clock step (NTP,
/// a suspended VM) moves the next run with it instead of firing at the wrong minute.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// An interval run due this close to :00 waits for the hourly run, which replicates too.
const HOUR_MARGIN: Duration = Duration::from_secs(1);

/// When the next runs are due: the next :00 on the wall clock, the next interval run on the
/// monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    interval: Duration,
    next_hour: NaiveDateTime,
    next_interval: Instant,
}

impl Schedule {
    /// Starting at `now`: the first interval run one interval later.
    pub fn new(interval: Duration, now_wall: NaiveDateTime, now: Instant) -> Schedule {
        Schedule {
            interval,
            next_hour: next_hour(now_wall),
            next_interval: now + interval,
        }
    }

    pub fn next_hour(&self) -> NaiveDateTime {
        self.next_hour
    }

    pub fn next_interval(&self) -> Instant {
        self.next_interval
    }

    /// The clock went back by more than an hour: aim at the coming :00, not at one hours away.
    /// Returns the target it moved from.
    pub fn follow_clock(&mut self, now_wall: NaiveDateTime) -> Option<NaiveDateTime> {
        if self.next_hour - now_wall > chrono::Duration::hours(1) {
            let old = self.next_hour;
            self.next_hour = next_hour(now_wall);
            return Some(old);
        }
        None
    }

    /// The run due now, or how long to wait before looking again.
    pub fn due(&self, now_wall: NaiveDateTime, now: Instant) -> Result<Trigger, Duration> {
        let to_hour = (self.next_hour - now_wall).to_std().unwrap_or_default();
        if to_hour.is_zero() {
            return Ok(Trigger::Hour);
        }
        if now >= self.next_interval {
            if to_hour > HOUR_MARGIN {
                return Ok(Trigger::Interval);
            }
            return Err(to_hour);
        }
        Err(to_hour.min(self.next_interval - now).min(MAX_SLEEP))
    }

    /// A run for `trigger` started at `started` (or was skipped then) and ended at `ended_wall`:
    /// the next interval run is one interval after its start (or at once, when it overran);
    /// after an hourly run, the next :00 after it ended.
    pub fn ran(&mut self, trigger: Trigger, started: Instant, ended_wall: NaiveDateTime) {
        self.next_interval = self.next_interval.max(started + self.interval);
        if trigger == Trigger::Hour {
            self.next_hour = next_hour(ended_wall.max(self.next_hour));
        }
    }
}

/// What the runner may do, as the monitor's watch of the slave says (sent by the monitor's
/// loop on every change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gate {
    pub peer: PeerState,
    /// Failbacks seen so far: one more than the runner has handled is a failback to act on.
    pub failbacks: u64,
}

impl Gate {
    /// A master without a slave to watch: nothing to protect, the jobs run.
    pub const NO_PEER: Gate = Gate {
        peer: PeerState::Standby,
        failbacks: 0,
    };
}

/// The runner's next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Run(Trigger),
    /// Due while the slave is active: skipped.
    Skip(Trigger),
    /// Due while the slave's state is not known: wait for it.
    WaitForPeer,
    Wait(Duration),
}

/// What the runner has acted on so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// Failbacks handled (or seen undone: the slave active again).
    pub failbacks: u64,
    /// Whether the start run is done (or needless: the slave was seen active, a failback run
    /// follows).
    pub start: bool,
}

/// The pure decision: `due` from [`Schedule::due`], the gate, and what was handled.
pub fn decide(due: Result<Trigger, Duration>, gate: Gate, handled: Handled) -> Step {
    if gate.peer == PeerState::Standby && gate.failbacks > handled.failbacks {
        return Step::Run(Trigger::Failback);
    }
    if gate.peer == PeerState::Standby && !handled.start {
        return Step::Run(Trigger::Start);
    }
    match (due, gate.peer) {
        (Err(wait), _) => Step::Wait(wait),
        (Ok(trigger), PeerState::Standby) => Step::Run(trigger),
        (Ok(trigger), PeerState::Active) => Step::Skip(trigger),
        (Ok(_), PeerState::Unknown) => Step::WaitForPeer,
    }
}

/// What the runner shows in the monitor's state.
#[derive(Clone, Debug, Default)]
pub struct RunnerStatus {
    /// The latest run of each job.
    pub runs: Vec<HourlyRun>,
    /// Why the jobs do not run now, while they do not.
    pub held: Option<String>,
    /// Runs skipped because the slave was active, since the monitor started.
    pub skipped: u64,
}

impl RunnerStatus {
    /// When the last successful replication started: the age of the master state the slave
    /// last received is the time since then.
    pub fn replicated_at(&self) -> Option<DateTime<Utc>> {
        self.runs
            .iter()
            .find(|r| r.details.job == "replication")
            .and_then(|r| r.last_success_at)
    }
}

/// Runs `jobs` as the module says until `cancel`; `status` receives each job's result as it
/// ends and the reason while runs are held. A cancel during a job lets that job finish (a
/// half-run replication is worse than a late stop) and runs no further job.
pub async fn run(
    ctx: Context,
    jobs: Arc<Vec<Job>>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    mut gate: watch::Receiver<Gate>,
    cancel: CancellationToken,
    status: Arc<Mutex<RunnerStatus>>,
) {
    let mut schedule = Schedule::new(interval, clock.now(), Instant::now());
    tracing::info!(
        "master jobs ({}): replication every {} s, all at :00; next :00 run at {}",
        jobs.iter().map(|j| j.name).collect::<Vec<_>>().join(", "),
        interval.as_secs(),
        schedule.next_hour()
    );
    let set_held = |held: Option<String>| status.lock().expect("status lock").held = held;
    // No slave watched (none to probe): nothing it may have made while this master was down.
    let mut handled = Handled {
        failbacks: gate.borrow().failbacks,
        start: *gate.borrow() == Gate::NO_PEER,
    };
    let mut holding = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if let Some(old) = schedule.follow_clock(clock.now()) {
            tracing::warn!(
                "the clock went back: next hourly run moved from {old} to {}",
                schedule.next_hour()
            );
        }
        let current = *gate.borrow_and_update();
        if current.peer == PeerState::Active {
            // A failback seen while the slave is active again is not done; the failback run
            // to come does what the start run would.
            handled = Handled {
                failbacks: current.failbacks,
                start: true,
            };
        }
        match decide(schedule.due(clock.now(), Instant::now()), current, handled) {
            Step::Wait(wait) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                    _ = changed(&mut gate) => {}
                }
            }
            Step::WaitForPeer => {
                set_held(Some(
                    "copy-back, replication and sync wait for the slave's state (not known yet: the first rounds, or the slave unreachable)".into(),
                ));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = changed(&mut gate) => {}
                }
            }
            Step::Skip(trigger) => {
                let reason = "copy-back, replication and sync held: the slave is active (it serves calls: a failover is in progress); they run when it is standby again".to_owned();
                if !holding || trigger == Trigger::Hour {
                    tracing::warn!("{trigger} run skipped: {reason}");
                }
                holding = true;
                {
                    let mut status = status.lock().expect("status lock");
                    status.held = Some(reason);
                    status.skipped += 1;
                }
                schedule.ran(trigger, Instant::now(), clock.now());
            }
            Step::Run(trigger) => {
                if let Some(m) = crate::maintenance::is_on(&ctx.paths, Utc::now()) {
                    let reason = format!(
                        "jobs skipped: maintenance mode on ({})",
                        crate::maintenance::describe(&m)
                    );
                    if !holding || trigger != Trigger::Interval {
                        tracing::info!("{trigger} run skipped: {reason}");
                    }
                    holding = true;
                    set_held(Some(reason));
                    if matches!(trigger, Trigger::Failback | Trigger::Start) {
                        // The failback's (and the start's) jobs wait for the end of the
                        // maintenance.
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(MAX_SLEEP) => {}
                            _ = changed(&mut gate) => {}
                        }
                    } else {
                        status.lock().expect("status lock").skipped += 1;
                        schedule.ran(trigger, Instant::now(), clock.now());
                    }
                    continue;
                }
                holding = false;
                set_held(None);
                match trigger {
                    Trigger::Failback => {
                        handled = Handled {
                            failbacks: current.failbacks,
                            start: true,
                        };
                        tracing::info!(
                            "failback done (the slave is standby again): running the failback jobs, the replication and the sync now"
                        );
                    }
                    Trigger::Start => {
                        handled.start = true;
                        tracing::info!(
                            "the slave is standby (first seen since this monitor started): running the start jobs now, in case it served while this master was down"
                        );
                    }
                    Trigger::Interval | Trigger::Hour => {}
                }
                let started = Instant::now();
                run_jobs(&ctx, &jobs, trigger, &gate, &cancel, &status).await;
                schedule.ran(trigger, started, clock.now());
            }
        }
    }
}

/// `gate`'s next change; never, once the monitor dropped its side.
async fn changed(gate: &mut watch::Receiver<Gate>) {
    if gate.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs the jobs of `trigger` in order; stops before a job when cancelled or when the slave
/// became active meanwhile.
async fn run_jobs(
    ctx: &Context,
    jobs: &[Job],
    trigger: Trigger,
    gate: &watch::Receiver<Gate>,
    cancel: &CancellationToken,
    status: &Mutex<RunnerStatus>,
) {
    for job in jobs.iter().filter(|j| j.runs_on(trigger)) {
        if cancel.is_cancelled() {
            return;
        }
        if gate.borrow().peer != PeerState::Standby {
            tracing::warn!(
                "{trigger} run stopped before {}: the slave is no longer standby",
                job.name
            );
            return;
        }
        let started_at = Utc::now();
        let started = Instant::now();
        tracing::info!("{trigger} job {} started", job.name);
        let result = (job.run)(ctx.clone()).await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(()) => tracing::info!("{trigger} job {} done in {seconds:.1} s", job.name),
            Err(e) => {
                tracing::warn!(
                    "{trigger} job {} failed after {seconds:.1} s: {e}",
                    job.name
                )
            }
        }
        let ok = result.is_ok();
        let run = HourlyRun {
            summary: format!(
                "{} {} at {}",
                job.name,
                match &result {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("FAILED ({e})"),
                },
                started_at.format("%Y-%m-%d %H:%M:%S")
            ),
            started_at,
            seconds,
            ok,
            error: result.err(),
            last_success_at: ok.then_some(started_at),
            details: HourlyJob {
                job: job.name.to_owned(),
            },
        };
        carry_over(&mut status.lock().expect("status lock").runs, run);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    type PausedClock = TokioClock;

    pub(crate) fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn next_hour_is_the_coming_top_of_the_hour() {
        assert_eq!(
            next_hour(at("2026-11-25 15:20:31.5")),
            at("2026-11-25 16:00:00")
        );
        assert_eq!(
            next_hour(at("2026-11-25 16:00:00")),
            at("2026-11-25 17:00:00")
        );
        assert_eq!(
            next_hour(at("2026-12-31 23:59:59.9")),
            at("2027-01-01 00:00:00")
        );
    }

    type Log = Arc<Mutex<Vec<(String, NaiveDateTime, &'static str)>>>;

    /// A running runner and its gate.
    struct Running {
        task: tokio::task::JoinHandle<()>,
        cancel: CancellationToken,
        gate: watch::Sender<Gate>,
    }

    impl Running {
        async fn stop(self) {
            self.cancel.cancel();
            self.task.await.unwrap();
        }
    }

    fn start(
        jobs: Arc<Vec<Job>>,
        clock: Arc<PausedClock>,
        interval: Duration,
        gate: Gate,
    ) -> (Arc<Mutex<RunnerStatus>>, Running) {
        let status: Arc<Mutex<RunnerStatus>> = Arc::default();
        let cancel = CancellationToken::new();
        let (gate, receiver) = watch::channel(gate);
        let ctx = Context::new("/nonexistent", "", None);
        let task = tokio::spawn(run(
            ctx,
            jobs,
            clock,
            interval,
            receiver,
            cancel.clone(),
            status.clone(),
        ));
        (status, Running { task, cancel, gate })
    }

    /// A job that logs its start and end on the clock and takes `duration`.
    /// A paused clock showing `wall` now, and an empty log.
    fn paused_at(wall: &str) -> (Arc<PausedClock>, Log) {
        let clock = Arc::new(PausedClock {
            start_wall: at(wall),
            start: Instant::now(),
        });
        (clock, Log::default())
    }

    /// [`test_job`] on `clock` and `log`, lasting `secs`.
    fn job(clock: &Arc<PausedClock>, log: &Log, name: &'static str, secs: u64, fail: bool) -> Job {
        test_job(
            name,
            clock.clone(),
            log.clone(),
            Duration::from_secs(secs),
            fail,
        )
    }

    /// Each job start in `log`, with its seconds since `t0`.
    fn starts_since(log: &Log, t0: NaiveDateTime) -> Vec<(String, i64)> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(_, _, e)| *e == "start")
            .map(|(n, t, _)| (n.clone(), (*t - t0).num_seconds()))
            .collect()
    }

    /// Asserts the jobs started since `t0`: each name with its start, in seconds after `t0`.
    fn assert_starts(log: &Log, t0: NaiveDateTime, want: &[(&str, i64)]) {
        let want: Vec<(String, i64)> = want.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect();
        assert_eq!(starts_since(log, t0), want);
    }

    fn test_job(
        name: &'static str,
        clock: Arc<PausedClock>,
        log: Log,
        duration: Duration,
        fail: bool,
    ) -> Job {
        Job::new(name, move |_ctx| {
            let clock = clock.clone();
            let log = log.clone();
            async move {
                log.lock()
                    .unwrap()
                    .push((name.to_owned(), clock.now(), "start"));
                tokio::time::sleep(duration).await;
                log.lock()
                    .unwrap()
                    .push((name.to_owned(), clock.now(), "end"));
                if fail { Err("disk full") } else { Ok(()) }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_fire_at_each_hour_in_order_one_at_a_time() {
        let (clock, log) = paused_at("2026-11-25 15:59:58");
        let jobs = Arc::new(vec![
            job(&clock, &log, "replication", 90, true),
            job(&clock, &log, "sync", 30, false),
        ]);
        let (status, stop) = start(
            jobs,
            clock.clone(),
            Duration::from_secs(3600),
            Gate::NO_PEER,
        );
        tokio::time::sleep(Duration::from_secs(3600 + 1800)).await;
        stop.stop().await;

        let log = log.lock().unwrap().clone();
        let expected = [
            ("replication", "2026-11-25 16:00:00", "start"),
            ("replication", "2026-11-25 16:01:30", "end"),
            ("sync", "2026-11-25 16:01:30", "start"),
            ("sync", "2026-11-25 16:02:00", "end"),
            ("replication", "2026-11-25 17:00:00", "start"),
            ("replication", "2026-11-25 17:01:30", "end"),
            ("sync", "2026-11-25 17:01:30", "start"),
            ("sync", "2026-11-25 17:02:00", "end"),
        ];
        let got: Vec<_> = log
            .iter()
            .map(|(n, t, e)| (n.as_str(), t.to_string(), *e))
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|(n, t, e)| (*n, at(t).to_string(), *e))
            .collect();
        assert_eq!(got, want);
        let status = status.lock().unwrap();
        assert_eq!(status.runs.len(), 2, "the latest run of each job");
        assert_eq!(status.runs[0].error.as_deref(), Some("disk full"));
        assert_eq!(status.runs[1].error, None);
        assert_eq!(status.replicated_at(), None, "the replication failed");
    }

    #[test]
    fn a_failed_run_keeps_the_jobs_last_success() {
        let run = |job: &str, started_at: &str, ok: bool| HourlyRun {
            summary: String::new(),
            started_at: started_at.parse().unwrap(),
            seconds: 1.0,
            ok,
            error: (!ok).then(|| "refused".to_owned()),
            last_success_at: ok.then(|| started_at.parse().unwrap()),
            details: HourlyJob { job: job.into() },
        };
        let mut runs = Vec::new();
        carry_over(&mut runs, run("replication", "2026-11-25T10:00:00Z", true));
        carry_over(&mut runs, run("sync", "2026-11-25T10:01:00Z", true));
        carry_over(&mut runs, run("replication", "2026-11-25T11:00:00Z", false));
        assert_eq!(runs.len(), 2, "one run per job");
        assert_eq!(runs[1].details.job, "replication");
        assert!(!runs[1].ok);
        assert_eq!(
            runs[1].last_success_at,
            Some("2026-11-25T10:00:00Z".parse().unwrap())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_overlong_run_skips_the_hours_it_overlaps_and_never_doubles() {
        let (clock, log) = paused_at("2026-11-25 15:30:00");
        let jobs = Arc::new(vec![test_job(
            "slow",
            clock.clone(),
            log.clone(),
            Duration::from_secs(3600 + 600),
            false,
        )]);
        let (_, stop) = start(
            jobs,
            clock.clone(),
            Duration::from_secs(3600),
            Gate::NO_PEER,
        );
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        stop.stop().await;
        let starts: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, e)| *e == "start")
            .map(|(_, t, _)| t.to_string())
            .collect();
        // 16:00 runs until 17:10; the next run is 18:00, not 17:10 and not two at once.
        assert_eq!(
            starts,
            vec![
                at("2026-11-25 16:00:00").to_string(),
                at("2026-11-25 18:00:00").to_string()
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_while_waiting_stops_at_once() {
        let (clock, log) = paused_at("2026-11-25 15:30:00");
        let jobs = Arc::new(vec![test_job(
            "j",
            clock.clone(),
            log.clone(),
            Duration::ZERO,
            false,
        )]);
        let (_, stop) = start(jobs, clock, Duration::from_secs(3600), Gate::NO_PEER);
        tokio::time::sleep(Duration::from_secs(600)).await;
        stop.stop().await;
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_master_runs_the_copy_back_then_the_replication_then_the_sync() {
        let jobs = master_jobs();
        let names: Vec<&str> = jobs.iter().map(|job| job.name).collect();
        assert_eq!(names, ["copy-back", "replication", "sync"]);
        let at_start: Vec<&str> = jobs
            .iter()
            .filter(|j| j.runs_on(Trigger::Start))
            .map(|job| job.name)
            .collect();
        assert_eq!(at_start, ["copy-back"]);
        let every_interval: Vec<&str> = jobs
            .iter()
            .filter(|j| j.runs_on(Trigger::Interval))
            .map(|job| job.name)
            .collect();
        assert_eq!(every_interval, ["replication"]);
        assert!(
            jobs.iter()
                .all(|j| j.runs_on(Trigger::Hour) && j.runs_on(Trigger::Failback))
        );
        // On a node that is not a master (any more), each is a no-op that succeeds.
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::new(dir.path(), "host=/nonexistent dbname=asterisk", None);
        for job in &jobs {
            assert_eq!((job.run)(ctx.clone()).await, Ok(()), "{}", job.name);
        }
        assert!(
            !dir.path().join("var/lib/xivo-ha").exists(),
            "nothing recorded"
        );
    }

    #[test]
    fn the_decision_runs_skips_or_waits_as_the_slave_says() {
        let standby = Gate::NO_PEER;
        let active = Gate {
            peer: PeerState::Active,
            failbacks: 0,
        };
        let unknown = Gate::default();
        let wait = Err(Duration::from_secs(3));
        let started = |failbacks| Handled {
            failbacks,
            start: true,
        };
        assert_eq!(
            decide(wait, standby, Handled::default()),
            Step::Run(Trigger::Start),
            "the first standby after the start, at once"
        );
        assert_eq!(
            decide(wait, unknown, Handled::default()),
            Step::Wait(Duration::from_secs(3))
        );
        assert_eq!(
            decide(wait, standby, started(0)),
            Step::Wait(Duration::from_secs(3))
        );
        assert_eq!(
            decide(Ok(Trigger::Interval), standby, started(0)),
            Step::Run(Trigger::Interval)
        );
        assert_eq!(
            decide(Ok(Trigger::Hour), active, started(0)),
            Step::Skip(Trigger::Hour)
        );
        assert_eq!(
            decide(Ok(Trigger::Hour), unknown, started(0)),
            Step::WaitForPeer
        );
        let after_failback = Gate {
            peer: PeerState::Standby,
            failbacks: 1,
        };
        assert_eq!(
            decide(wait, after_failback, started(0)),
            Step::Run(Trigger::Failback),
            "at once, not at the next run"
        );
        assert_eq!(
            decide(wait, after_failback, Handled::default()),
            Step::Run(Trigger::Failback),
            "the failback run does what the start run would"
        );
        assert_eq!(
            decide(wait, after_failback, started(1)),
            Step::Wait(Duration::from_secs(3))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_schedule_runs_every_interval_and_lets_the_hour_win() {
        let start_wall = at("2026-11-25 15:58:00");
        let start = Instant::now();
        let mut schedule = Schedule::new(Duration::from_secs(60), start_wall, start);
        let wall = |start_wall: NaiveDateTime| {
            start_wall + chrono::Duration::from_std(start.elapsed()).unwrap()
        };
        assert_eq!(
            schedule.due(wall(start_wall), Instant::now()),
            Err(Duration::from_secs(60))
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            schedule.due(wall(start_wall), Instant::now()),
            Ok(Trigger::Interval)
        );
        // A run of 20 s: the next one is due 60 s after this one's start.
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(20)).await;
        schedule.ran(Trigger::Interval, started, wall(start_wall));
        assert_eq!(
            schedule.due(wall(start_wall), Instant::now()),
            Err(Duration::from_secs(40))
        );
        // 15:59:59.5: the interval run is due, but :00 is half a second away and wins.
        tokio::time::sleep(Duration::from_millis(39_500)).await;
        assert_eq!(
            schedule.due(wall(start_wall), Instant::now()),
            Err(Duration::from_millis(500))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            schedule.due(wall(start_wall), Instant::now()),
            Ok(Trigger::Hour)
        );
        // An overlong run (90 s): the next interval run is due at once when it ends.
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(90)).await;
        schedule.ran(Trigger::Hour, started, wall(start_wall));
        assert_eq!(schedule.next_hour(), at("2026-11-25 17:00:00"));
        assert_eq!(
            schedule.due(wall(start_wall), Instant::now()),
            Ok(Trigger::Interval)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn interval_runs_replicate_only_and_never_overlap_the_hourly_run() {
        let (clock, log) = paused_at("2026-11-25 15:57:30");
        let jobs = Arc::new(vec![
            job(&clock, &log, "replication", 10, false).every_interval(),
            job(&clock, &log, "sync", 70, false),
        ]);
        let (status, stop) = start(jobs, clock.clone(), Duration::from_secs(60), Gate::NO_PEER);
        tokio::time::sleep(Duration::from_secs(6 * 60)).await;
        stop.stop().await;
        let got: Vec<(String, String)> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, e)| *e == "start")
            .map(|(n, t, _)| (n.clone(), t.format("%H:%M:%S").to_string()))
            .collect();
        let want: Vec<(String, String)> = [
            ("replication", "15:58:30"),
            ("replication", "15:59:30"),
            // :00: replication then sync (10 + 70 s); the interval run due at 16:01:00 waits
            // for the end of the sync.
            ("replication", "16:00:00"),
            ("sync", "16:00:10"),
            ("replication", "16:01:20"),
            ("replication", "16:02:20"),
            ("replication", "16:03:20"),
        ]
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
        assert_eq!(got, want);
        let status = status.lock().unwrap();
        assert!(status.replicated_at().is_some());
        assert_eq!(status.held, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_standby_after_the_start_runs_the_start_jobs_once() {
        let (clock, log) = paused_at("2026-11-25 15:00:30");
        let jobs = Arc::new(vec![
            job(&clock, &log, "copy-back", 1, false).also_at_start(),
            job(&clock, &log, "replication", 1, false).every_interval(),
        ]);
        let (_, running) = start(
            jobs,
            clock.clone(),
            Duration::from_secs(60),
            Gate::default(),
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            log.lock().unwrap().is_empty(),
            "the slave's state not known"
        );
        let standby_at = clock.now();
        running.gate.send_replace(Gate {
            peer: PeerState::Standby,
            failbacks: 0,
        });
        tokio::time::sleep(Duration::from_secs(150)).await;
        // At once the copy-back alone; then the interval runs, one interval after it.
        assert_starts(
            &log,
            standby_at,
            &[("copy-back", 0), ("replication", 60), ("replication", 120)],
        );
        running.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_runs_while_the_slave_is_active_and_everything_runs_at_the_failback() {
        let (clock, log) = paused_at("2026-11-25 15:00:30");
        let jobs = Arc::new(vec![
            job(&clock, &log, "merge-back", 1, false).on_failback_only(),
            job(&clock, &log, "replication", 1, false).every_interval(),
            job(&clock, &log, "sync", 1, false),
        ]);
        let (status, running) = start(
            jobs,
            clock.clone(),
            Duration::from_secs(60),
            Gate::default(),
        );
        // Not known yet: the interval run due at 15:01:30 waits.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(log.lock().unwrap().is_empty());
        assert!(
            status
                .lock()
                .unwrap()
                .held
                .as_deref()
                .unwrap()
                .contains("not known")
        );
        // Active: runs are skipped, and said so.
        running.gate.send_replace(Gate {
            peer: PeerState::Active,
            failbacks: 0,
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(log.lock().unwrap().is_empty(), "nothing ran while active");
        {
            let status = status.lock().unwrap();
            assert!(
                status
                    .held
                    .as_deref()
                    .unwrap()
                    .contains("the slave is active")
            );
            assert!(status.skipped >= 60, "{}", status.skipped);
        }
        // The failback: at once, the failback jobs, the replication, then the sync.
        let failback_at = clock.now();
        running.gate.send_replace(Gate {
            peer: PeerState::Standby,
            failbacks: 1,
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_starts(
            &log,
            failback_at,
            &[("merge-back", 0), ("replication", 1), ("sync", 2)],
        );
        assert_eq!(status.lock().unwrap().held, None);
        // Then the usual cadence: the replication alone, one interval after the failback run.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let last = log.lock().unwrap().last().cloned().unwrap();
        assert_eq!((last.0.as_str(), last.2), ("replication", "end"));
        assert_eq!((last.1 - failback_at).num_seconds(), 61);
        running.stop().await;
    }
}
