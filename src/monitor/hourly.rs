//! The master's hourly jobs (what XiVO runs from `/etc/cron.d/xivo-ha-master` at minute 0):
//! a scheduler that fires at every wall-clock hour :00, local time as cron does, and runs its
//! jobs one after the other, never two at once. A run that overlaps the next hour makes that
//! hour's run start when it ends, never a second one beside it.
//!
//! Wiring a job in: add it to [`master_jobs`], e.g.
//! `Job::new("replication", |ctx| async move { crate::replication::run_hourly(&ctx).await })`.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Local, NaiveDateTime, Timelike, Utc};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::status::documents::{HourlyJob, HourlyRun};

/// One hourly job: a name for the logs and a function that runs it once.
pub struct Job {
    pub name: &'static str,
    run: Box<dyn Fn(Context) -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl Job {
    /// A job from an async function of the context; its error is reported with `Display`.
    pub fn new<F, Fut, T, E>(name: &'static str, run: F) -> Job
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Display,
    {
        Job {
            name,
            run: Box::new(move |ctx| {
                let future = run(ctx);
                Box::pin(async move { future.await.map(|_| ()).map_err(|e| e.to_string()) })
            }),
        }
    }
}

/// The jobs a master runs every hour, in order, as XiVO's cron did at :00: the configuration
/// database first, then the files (a failed replication does not hold back the sync).
pub fn master_jobs() -> Vec<Job> {
    vec![
        Job::new("replication", |ctx| async move {
            crate::replication::run_hourly(&ctx).await
        }),
        Job::new(
            "sync",
            |ctx| async move { crate::sync::run_hourly(&ctx).await },
        ),
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

/// Fires `jobs` at every :00 until `cancel`; `on_run` receives each job's result as it ends.
/// A cancel during a job lets that job finish (a half-run replication is worse than a late
/// stop) and runs no further job.
pub async fn run(
    ctx: Context,
    jobs: Arc<Vec<Job>>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
    mut on_run: impl FnMut(HourlyRun) + Send,
) {
    let mut target = next_hour(clock.now());
    tracing::info!(
        "hourly jobs ({}): next run at {target}",
        jobs.iter().map(|j| j.name).collect::<Vec<_>>().join(", ")
    );
    loop {
        let now = clock.now();
        // The clock stepped back: aim at the coming :00, not at one hours away.
        if target - now > chrono::Duration::hours(1) {
            tracing::warn!(
                "the clock went back: next hourly run moved from {target} to {}",
                next_hour(now)
            );
            target = next_hour(now);
            continue;
        }
        if now < target {
            let wait = (target - now).to_std().unwrap_or_default().min(MAX_SLEEP);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        let maintenance = crate::maintenance::is_on(&ctx.paths, Utc::now());
        if let Some(m) = &maintenance {
            tracing::info!(
                "hourly jobs ({}) skipped: maintenance mode on ({})",
                jobs.iter().map(|j| j.name).collect::<Vec<_>>().join(", "),
                crate::maintenance::describe(m)
            );
        }
        for job in jobs.iter().filter(|_| maintenance.is_none()) {
            if cancel.is_cancelled() {
                return;
            }
            let started_at = Utc::now();
            let started = tokio::time::Instant::now();
            tracing::info!("hourly job {} started", job.name);
            let result = (job.run)(ctx.clone()).await;
            let seconds = started.elapsed().as_secs_f64();
            match &result {
                Ok(()) => tracing::info!("hourly job {} done in {seconds:.1} s", job.name),
                Err(e) => {
                    tracing::warn!("hourly job {} failed after {seconds:.1} s: {e}", job.name)
                }
            }
            let ok = result.is_ok();
            on_run(HourlyRun {
                summary: format!(
                    "{} {} at {}",
                    job.name,
                    match &result {
                        Ok(()) => "ok".to_owned(),
                        Err(e) => format!("FAILED ({e})"),
                    },
                    started_at.format("%Y-%m-%d %H:%M")
                ),
                started_at,
                seconds,
                ok,
                error: result.err(),
                last_success_at: ok.then_some(started_at),
                details: HourlyJob {
                    job: job.name.to_owned(),
                },
            });
        }
        // The next :00 after the run ended: an overlong run skips the hours it overlapped.
        target = next_hour(clock.now().max(target));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

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

    /// A job that logs its start and end on the clock and takes `duration`.
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
        let clock = Arc::new(PausedClock {
            start_wall: at("2026-11-25 15:59:58"),
            start: Instant::now(),
        });
        let log: Log = Arc::default();
        let jobs = Arc::new(vec![
            test_job(
                "replication",
                clock.clone(),
                log.clone(),
                Duration::from_secs(90),
                true,
            ),
            test_job(
                "sync",
                clock.clone(),
                log.clone(),
                Duration::from_secs(30),
                false,
            ),
        ]);
        let runs = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let ctx = Context::new("/nonexistent", "", None);
        let task = tokio::spawn(run(ctx, jobs, clock.clone(), cancel.clone(), {
            let runs = runs.clone();
            move |r| runs.lock().unwrap().push(r)
        }));
        tokio::time::sleep(Duration::from_secs(3600 + 1800)).await;
        cancel.cancel();
        task.await.unwrap();

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
        let runs = runs.lock().unwrap();
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[0].error.as_deref(), Some("disk full"));
        assert_eq!(runs[1].error, None);
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
        let clock = Arc::new(PausedClock {
            start_wall: at("2026-11-25 15:30:00"),
            start: Instant::now(),
        });
        let log: Log = Arc::default();
        let jobs = Arc::new(vec![test_job(
            "slow",
            clock.clone(),
            log.clone(),
            Duration::from_secs(3600 + 600),
            false,
        )]);
        let cancel = CancellationToken::new();
        let ctx = Context::new("/nonexistent", "", None);
        let task = tokio::spawn(run(ctx, jobs, clock.clone(), cancel.clone(), |_| {}));
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        cancel.cancel();
        task.await.unwrap();
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
        let clock = Arc::new(PausedClock {
            start_wall: at("2026-11-25 15:30:00"),
            start: Instant::now(),
        });
        let log: Log = Arc::default();
        let jobs = Arc::new(vec![test_job(
            "j",
            clock.clone(),
            log.clone(),
            Duration::ZERO,
            false,
        )]);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            Context::new("/x", "", None),
            jobs,
            clock,
            cancel.clone(),
            |_| {},
        ));
        tokio::time::sleep(Duration::from_secs(600)).await;
        cancel.cancel();
        task.await.unwrap();
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_master_runs_the_replication_then_the_sync() {
        let jobs = master_jobs();
        let names: Vec<&str> = jobs.iter().map(|job| job.name).collect();
        assert_eq!(names, ["replication", "sync"]);
        // On a node that is not a master (any more), both are no-ops that succeed.
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
}
