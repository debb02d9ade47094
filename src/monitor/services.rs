//! The slave's telephony services (`manage-slave-services start|stop`): their desired state,
//! recorded in XiVO's flag file `/var/lib/xivo/disabled` (present = kept down) so that it
//! survives a restart of the monitor, and the keeper that brings the containers to that state
//! with the hooks around it, retrying with backoff when Docker fails or a container stops right
//! after its start, never giving up or crashing, and reporting what it did for `status`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::docker::{ContainerStatus, DockerError, Engine, StartFailure};
use super::drain::{self, DrainStatus, Drained};
use super::settings::MonitorSettings;
use crate::alert::{Event, Kind};
use crate::backoff::backoff;
use crate::fsutil::{self, FileError};
use crate::paths::Paths;

/// What the slave's services should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Started: the master is down (or HA no longer makes this node a slave).
    #[value(name = "start")]
    Running,
    /// Stopped: the master serves.
    #[value(name = "stop")]
    Stopped,
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        })
    }
}

/// The desired state recorded in XiVO's flag file.
pub fn recorded(paths: &Paths) -> Desired {
    if paths.services_disabled_flag().exists() {
        Desired::Stopped
    } else {
        Desired::Running
    }
}

/// Records `desired` in the flag file, before acting, so that a crash mid-way is finished at
/// the next start-up. Returns whether the file changed.
pub fn record(paths: &Paths, desired: Desired) -> Result<bool, FileError> {
    fsutil::set_flag_file(&paths.services_disabled_flag(), desired == Desired::Stopped)
}

/// What one pass of [`apply`] did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Applied {
    /// `started asterisk`, `restart policy of monit set to no`, ...
    pub actions: Vec<String>,
    pub containers: Vec<ContainerStatus>,
}

/// Brings every container to `desired`: restart policy `no` on all (a slave's services must
/// stay down after a reboot or a dockerd restart), then start them all side by side or stop
/// them in reverse order, with the hooks around the action when there is one. Every container
/// is inspected first, so that a missing one fails the pass before anything is started or stopped. A
/// start counts once the container is healthy (with a health check) or still running after
/// the settle time; the others are started meanwhile, and the containers that stopped make
/// the pass a [`DockerError::StartFailed`] (the hook after the start is then not run).
pub async fn apply(
    engine: &Engine,
    settings: &MonitorSettings,
    desired: Desired,
) -> Result<Applied, DockerError> {
    let mut applied = Applied::default();
    let statuses = engine.inspect_all(&settings.containers).await?;
    for status in &statuses {
        if engine.disable_restart(status).await? {
            let action = format!(
                "restart policy of {} changed from {} to no",
                status.name, status.restart_policy
            );
            tracing::info!("{action}");
            applied.actions.push(action);
        }
    }
    let to_act: Vec<&ContainerStatus> = match desired {
        Desired::Running => statuses.iter().filter(|s| !s.is_ready()).collect(),
        Desired::Stopped => statuses.iter().rev().filter(|s| s.is_up()).collect(),
    };
    if !to_act.is_empty() {
        let (pre, post) = match desired {
            Desired::Running => (&settings.hooks.pre_start, &settings.hooks.post_start),
            Desired::Stopped => (&settings.hooks.pre_stop, &settings.hooks.post_stop),
        };
        run_hook(pre, "before", desired, settings.start_timeout).await;
        let names = to_act.iter().map(|s| s.name.as_str());
        let done = match desired {
            Desired::Running => start_all(engine, settings, names).await?,
            Desired::Stopped => {
                let mut done = Vec::new();
                for name in names {
                    engine.stop(name, settings.stop_grace).await?;
                    tracing::info!("stopped {name}");
                    done.push(format!("stopped {name}"));
                }
                done
            }
        };
        applied.actions.extend(done);
        run_hook(post, "after", desired, settings.start_timeout).await;
    }
    applied.containers = engine.inspect_all(&settings.containers).await?;
    Ok(applied)
}

/// Starts `names` side by side (a takeover waits for the slowest, not for the sum), then
/// watches those without a health check side by side until each has run for the settle time:
/// the report waits, the services do not. Returns the actions, or every container that
/// stopped meanwhile.
async fn start_all(
    engine: &Engine,
    settings: &MonitorSettings,
    names: impl Iterator<Item = &str>,
) -> Result<Vec<String>, DockerError> {
    let mut failed: Vec<StartFailure> = Vec::new();
    let mut settling = Vec::new();
    let mut started = Vec::new();
    let names: Vec<&str> = names.collect();
    let starts = names.iter().map(|name| async move {
        let at = Instant::now();
        (at, engine.start(name, settings.start_timeout).await)
    });
    let outcomes = futures_util::future::join_all(starts).await;
    for (name, (at, outcome)) in names.into_iter().zip(outcomes) {
        match outcome {
            Ok(status) if status.health.is_some() || settings.start_settle.is_zero() => {
                tracing::info!("started {name}");
                started.push(format!("started {name}"));
            }
            // The settle time runs from the moment it runs (a start may take a while).
            Ok(_) => settling.push((name, at, Instant::now() + settings.start_settle)),
            Err(DockerError::StartFailed(failures)) => failed.extend(failures),
            Err(e) => return Err(e),
        }
    }
    let watches = settling
        .iter()
        .map(|&(name, at, until)| engine.settle(name, at, until));
    let outcomes = futures_util::future::join_all(watches).await;
    for ((name, ..), outcome) in settling.iter().zip(outcomes) {
        match outcome {
            Ok(()) => {
                tracing::info!(
                    "started {name} (still running after {} ms)",
                    settings.start_settle.as_millis()
                );
                started.push(format!("started {name}"));
            }
            Err(DockerError::StartFailed(failures)) => failed.extend(failures),
            Err(e) => return Err(e),
        }
    }
    if failed.is_empty() {
        Ok(started)
    } else {
        Err(DockerError::StartFailed(failed))
    }
}

/// Runs a hook with `/bin/sh -c`; a failure is logged, not fatal: the services matter more.
async fn run_hook(command: &Option<String>, when: &str, desired: Desired, timeout: Duration) {
    let Some(command) = command else { return };
    let verb = if desired == Desired::Running {
        "start"
    } else {
        "stop"
    };
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Ok(Ok(output)) if output.status.success() => {
            tracing::info!("hook {when} {verb} `{command}` succeeded");
        }
        Ok(Ok(output)) => tracing::warn!(
            "hook {when} {verb} `{command}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Ok(Err(e)) => tracing::warn!("hook {when} {verb} `{command}` could not run: {e}"),
        Err(_) => tracing::warn!(
            "hook {when} {verb} `{command}` killed after {} s",
            timeout.as_secs()
        ),
    }
}

/// What the keeper reports for `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeeperStatus {
    /// The state the keeper works towards (`None` until told).
    pub desired: Option<Desired>,
    /// The desired state has been reached.
    pub settled: bool,
    pub containers: Vec<ContainerStatus>,
    /// Docker failures since the start of the monitor.
    pub errors: u64,
    /// Containers found stopped right after their start, since the start of the monitor.
    #[serde(default)]
    pub start_failures: u64,
    /// The containers that stopped right after their start in the last pass (empty once a
    /// pass succeeds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_starts: Vec<StartFailure>,
    /// When the keeper tries again after a failed pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_action_at: Option<DateTime<Utc>>,
    /// A failback letting the calls finish (see [`super::drain`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<DrainStatus>,
}

/// The handle on a running keeper task.
pub struct Keeper {
    desired: watch::Sender<Option<Desired>>,
    status: Arc<Mutex<KeeperStatus>>,
    task: tokio::task::JoinHandle<()>,
}

/// The first wait after a failed pass; then [`crate::backoff`] doubles it to 30 s, with jitter
/// so that two nodes restarted together do not hammer their engines in step.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The first wait after a container stopped right after its start: longer, as each try runs
/// the start hooks again and a crashing service rarely mends in half a second.
const FIRST_RETRY_AFTER_FAILED_START: Duration = Duration::from_secs(1);

/// One pass of the keeper towards `want`, connecting to the engine first when there is no
/// connection (or the last one failed).
async fn pass(
    engine: &mut Option<Engine>,
    settings: &MonitorSettings,
    want: Desired,
) -> Result<Applied, DockerError> {
    let outcome = match engine {
        Some(engine) => apply(engine, settings, want).await,
        None => match Engine::connect().await {
            Ok(connected) => apply(engine.insert(connected), settings, want).await,
            Err(e) => Err(e),
        },
    };
    if matches!(outcome, Err(DockerError::Engine { .. })) {
        *engine = None;
    }
    outcome
}

/// Before a stop: lets the calls finish ([`drain::run`]), connecting first when needed. A
/// failure is logged and left to the pass that follows (which stops as before, and retries).
async fn drain_first(
    engine: &mut Option<Engine>,
    settings: &MonitorSettings,
    status: &Arc<Mutex<KeeperStatus>>,
    desired: &mut watch::Receiver<Option<Desired>>,
) -> Option<Drained> {
    if settings.drain_max.is_zero() {
        return None;
    }
    let connected = match engine {
        Some(engine) => engine,
        None => engine.insert(Engine::connect().await.ok()?),
    };
    match drain::run(connected, settings, status, desired).await {
        Ok(drained) => Some(drained),
        Err(e) => {
            tracing::warn!("drain: {e}; stopping without it");
            status.lock().expect("status lock").draining = None;
            None
        }
    }
}

/// A pass's outcome in the keeper's status; returns the wait before the next pass (a recheck
/// when settled, the backoff after `failures` failed passes otherwise).
fn note(
    status: &mut KeeperStatus,
    outcome: Result<Applied, DockerError>,
    want: Desired,
    failures: &mut u32,
) -> Duration {
    match outcome {
        Ok(applied) => {
            if want == Desired::Running {
                for failed in &status.failed_starts {
                    crate::alert::raise(Event::recovered(
                        Kind::ContainerStart,
                        failed.container.clone(),
                        applied.actions.join(", "),
                    ));
                }
            }
            *failures = 0;
            status.settled = true;
            status.failed_starts.clear();
            status.next_attempt_at = None;
            status.containers = applied.containers;
            if !applied.actions.is_empty() {
                status.last_action = Some(applied.actions.join(", "));
                status.last_action_at = Some(Utc::now());
            }
            RECHECK
        }
        Err(e) => {
            status.settled = false;
            *failures += 1;
            let first = match e {
                DockerError::StartFailed(failed) => {
                    for failure in &failed {
                        tracing::error!("slave services ({want}): failed start: {failure}");
                        crate::alert::raise(Event::failing(
                            Kind::ContainerStart,
                            failure.container.clone(),
                            failure.to_string(),
                        ));
                    }
                    status.start_failures += failed.len() as u64;
                    status.failed_starts = failed;
                    FIRST_RETRY_AFTER_FAILED_START
                }
                DockerError::Engine { .. }
                | DockerError::Missing { .. }
                | DockerError::Action { .. }
                | DockerError::NotReady { .. } => {
                    tracing::warn!("slave services ({want}): {e}; retrying");
                    status.errors += 1;
                    status.last_error = Some(e.to_string());
                    status.last_error_at = Some(Utc::now());
                    FIRST_RETRY
                }
            };
            let wait = backoff(first, *failures - 1);
            status.next_attempt_at = chrono::TimeDelta::from_std(wait)
                .ok()
                .map(|wait| Utc::now() + wait);
            wait
        }
    }
}

/// How often a settled keeper checks the containers again (someone may start one by hand).
const RECHECK: Duration = Duration::from_secs(10);

impl Keeper {
    /// Starts the keeper task. It does nothing until [`Keeper::set`] gives it a state.
    pub fn spawn(settings: MonitorSettings) -> Keeper {
        let (desired, mut rx) = watch::channel(None::<Desired>);
        let status = Arc::new(Mutex::new(KeeperStatus::default()));
        let shared = status.clone();
        let task = tokio::spawn(async move {
            let mut engine: Option<Engine> = None;
            let mut failures = 0u32;
            loop {
                let want = *rx.borrow_and_update();
                let Some(want) = want else {
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                shared.lock().expect("status lock").desired = Some(want);
                if want == Desired::Stopped {
                    match drain_first(&mut engine, &settings, &shared, &mut rx).await {
                        Some(Drained::Cancelled) => continue,
                        Some(Drained::KeeperGone) => return,
                        Some(Drained::Nothing | Drained::Exited | Drained::TimedOut) | None => {}
                    }
                }
                let outcome = pass(&mut engine, &settings, want).await;
                let wait = note(
                    &mut shared.lock().expect("status lock"),
                    outcome,
                    want,
                    &mut failures,
                );
                let deadline = Instant::now() + wait;
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        });
        Keeper {
            desired,
            status,
            task,
        }
    }

    /// Asks for `desired`; the keeper acts at once (a pass under way finishes first).
    pub fn set(&self, desired: Desired) {
        self.desired.send_if_modified(|current| {
            let changed = *current != Some(desired);
            *current = Some(desired);
            if changed && let Ok(mut status) = self.status.lock() {
                status.settled = false;
                status.desired = Some(desired);
            }
            changed
        });
    }

    /// Stops acting (maintenance mode): a pass under way finishes, then the containers are
    /// left as they are, not even checked, until the next [`Keeper::set`].
    pub fn hold(&self) {
        self.desired
            .send_if_modified(|current| current.take().is_some());
    }

    pub fn status(&self) -> KeeperStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Lets the pass under way finish (for at most `patience`), then ends the task.
    pub async fn shutdown(self, patience: Duration) {
        let Keeper { desired, task, .. } = self;
        drop(desired);
        let abort = task.abort_handle();
        if tokio::time::timeout(patience, task).await.is_err() {
            abort.abort();
        }
    }
}

/// Connects to the engine and checks that every listed container exists, before anything is
/// recorded or touched (a typo in the list acts on nothing).
pub async fn containers_exist(settings: &MonitorSettings) -> Result<Engine, DockerError> {
    let engine = Engine::connect().await?;
    engine.inspect_all(&settings.containers).await?;
    Ok(engine)
}

/// `manage-slave-services start|stop`: one pass, recorded in the flag file first. Checks the
/// containers exist before touching any.
pub async fn manage(
    paths: &Paths,
    settings: &MonitorSettings,
    desired: Desired,
) -> Result<Applied, ManageError> {
    let engine = containers_exist(settings).await?;
    record(paths, desired)?;
    Ok(apply(&engine, settings, desired).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    File(#[from] FileError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_file_records_the_desired_state() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert_eq!(recorded(&paths), Desired::Running);
        assert!(record(&paths, Desired::Stopped).unwrap());
        assert!(paths.services_disabled_flag().exists());
        assert_eq!(recorded(&paths), Desired::Stopped);
        assert!(!record(&paths, Desired::Stopped).unwrap());
        assert!(record(&paths, Desired::Running).unwrap());
        assert_eq!(recorded(&paths), Desired::Running);
    }

    #[tokio::test]
    async fn hooks_run_and_failures_do_not_stop_anything() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let hook = Some(format!("echo started > {}", marker.display()));
        run_hook(&hook, "before", Desired::Running, Duration::from_secs(5)).await;
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "started\n");
        run_hook(
            &Some("exit 3".into()),
            "after",
            Desired::Stopped,
            Duration::from_secs(5),
        )
        .await;
        let started = std::time::Instant::now();
        run_hook(
            &Some("sleep 5".into()),
            "after",
            Desired::Stopped,
            Duration::from_millis(100),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
