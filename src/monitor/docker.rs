//! The Docker engine, through bollard: inspect, start (and wait until running and, where the
//! container has a health check, healthy), watch a started container for an early exit (its
//! exit code and the tail of its log then make the error), stop with a grace time, unpause,
//! and set the restart policy to `no`. Only containers named by the caller are touched. Errors are typed and say
//! what to fix; retrying is the caller's business (see `services`).

use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerStateStatusEnum, ContainerUpdateBody, HealthStatusEnum, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    InspectContainerOptions, LogsOptionsBuilder, StopContainerOptions, WaitContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker engine ({reason}): start dockerd, or mount /var/run/docker.sock into the xivo-ha container (or set DOCKER_HOST)"
    )]
    Engine { reason: String },
    #[error(
        "container `{name}` does not exist: create it, or fix the list in XIVO_HA_MONITOR_CONTAINERS"
    )]
    Missing { name: String },
    #[error("container `{name}`: {action} failed: {reason}")]
    Action {
        name: String,
        action: &'static str,
        reason: String,
    },
    #[error(
        "container `{name}` is not {wanted} {secs} s after being started (state: {state}): see `docker logs {name}`"
    )]
    NotReady {
        name: String,
        wanted: &'static str,
        secs: u64,
        state: String,
    },
    /// Containers that stopped right after being started (each named with its exit code and
    /// log tail).
    #[error("{}", failed_starts(.0))]
    StartFailed(Vec<StartFailure>),
}

fn failed_starts(failures: &[StartFailure]) -> String {
    let lines: Vec<String> = failures.iter().map(ToString::to_string).collect();
    lines.join("; ")
}

/// The last lines of a container's log kept for a failed start.
pub const LOG_TAIL_LINES: usize = 5;

/// A container that stopped within its settle time after being started: Docker said it was
/// started, but it is not running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailure {
    pub container: String,
    /// Its exit code (`None` when Docker gives none).
    pub exit_code: Option<i64>,
    /// How long it ran after the start, in milliseconds.
    pub ran_ms: u64,
    /// The last lines of its log (stdout and stderr), oldest first.
    pub log_tail: Vec<String>,
    pub at: DateTime<Utc>,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "container `{}` ", self.container)?;
        match self.exit_code {
            Some(code) => write!(f, "exited with code {code}")?,
            None => f.write_str("stopped")?,
        }
        write!(
            f,
            " {:.1} s after being started",
            self.ran_ms as f64 / 1000.0
        )?;
        if self.log_tail.is_empty() {
            f.write_str(" (its log is empty)")?;
        } else {
            write!(f, " (last log lines: {})", self.log_tail.join(" | "))?;
        }
        write!(f, ": see `docker logs {}`", self.container)
    }
}

/// What the monitor needs to know about one container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    /// Docker's state: created, running, paused, exited, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `None` without a health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The restart policy's name (`no`, `always`, `unless-stopped`, `on-failure`).
    pub restart_policy: String,
}

impl ContainerStatus {
    /// Running or paused: a process exists.
    pub fn is_up(&self) -> bool {
        matches!(self.state.as_str(), "running" | "paused" | "restarting")
    }

    pub fn is_ready(&self) -> bool {
        self.state == "running" && matches!(self.health.as_deref(), None | Some("healthy"))
    }
}

/// What a command run in a container (`docker exec`) gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exec {
    /// It ran: its exit code and its output (stdout and stderr).
    Ran { exit: i64, output: String },
    /// The container has no such command (exit 127, or the runtime's "not found").
    NotFound,
}

/// A connection to the Docker engine.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: Docker,
}

fn engine_error(e: impl std::fmt::Display) -> DockerError {
    DockerError::Engine {
        reason: e.to_string(),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Turns a bollard error of `action` on `name` into ours: 404 is a missing container, a
/// transport failure is the engine, the rest is the action's.
fn action_error(name: &str, action: &'static str, e: bollard::errors::Error) -> DockerError {
    match &e {
        _ if is_not_found(&e) => DockerError::Missing {
            name: name.to_owned(),
        },
        bollard::errors::Error::DockerResponseServerError { message, .. } => DockerError::Action {
            name: name.to_owned(),
            action,
            reason: message.clone(),
        },
        bollard::errors::Error::JsonDataError { .. }
        | bollard::errors::Error::JsonSerdeError { .. } => DockerError::Action {
            name: name.to_owned(),
            action,
            reason: e.to_string(),
        },
        _ => engine_error(e),
    }
}

impl Engine {
    /// Connects to the local engine (`DOCKER_HOST` or /var/run/docker.sock) and agrees on the
    /// API version, so that an older engine (API 1.41 on Docker 20.10) is spoken to in its own
    /// version.
    pub async fn connect() -> Result<Engine, DockerError> {
        let docker = Docker::connect_with_local_defaults().map_err(engine_error)?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| engine_error("no answer within 10 s"))?
            .map_err(engine_error)?;
        Ok(Engine { docker })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    pub async fn inspect(&self, name: &str) -> Result<ContainerStatus, DockerError> {
        let info = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| action_error(name, "inspect", e))?;
        let state = info.state.unwrap_or_default();
        let status = state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| ContainerStateStatusEnum::EMPTY.to_string());
        let health = state
            .health
            .and_then(|h| h.status)
            .filter(|s| !matches!(s, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE))
            .map(|s| s.to_string());
        let restart_policy = info
            .host_config
            .and_then(|h| h.restart_policy)
            .and_then(|p| p.name)
            .map(|n| n.to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "no".to_owned());
        Ok(ContainerStatus {
            name: name.to_owned(),
            state: status,
            health,
            restart_policy,
        })
    }

    /// Inspects `names` in order, stopping at the first that is missing or fails: the one
    /// check that the listed containers exist before anything acts on any of them.
    pub async fn inspect_all(&self, names: &[String]) -> Result<Vec<ContainerStatus>, DockerError> {
        let mut statuses = Vec::with_capacity(names.len());
        for name in names {
            statuses.push(self.inspect(name).await?);
        }
        Ok(statuses)
    }

    /// Sets the restart policy to `no` (so that neither a reboot nor dockerd's restart brings a
    /// slave's service back behind the monitor's back). Returns whether it changed.
    pub async fn disable_restart(&self, status: &ContainerStatus) -> Result<bool, DockerError> {
        if status.restart_policy == "no" {
            return Ok(false);
        }
        let body = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        self.docker
            .update_container(&status.name, body)
            .await
            .map_err(|e| action_error(&status.name, "set restart policy to `no`", e))?;
        Ok(true)
    }

    /// Starts `name` (or unpauses it) and waits until it runs, and is healthy when it has a
    /// health check, for at most `timeout`; returns its status then. A container that stops
    /// meanwhile is a [`DockerError::StartFailed`].
    pub async fn start(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<ContainerStatus, DockerError> {
        let started = Instant::now();
        let status = self.inspect(name).await?;
        if status.state == "paused" {
            self.docker
                .unpause_container(name)
                .await
                .map_err(|e| action_error(name, "unpause", e))?;
        } else if !status.is_up() {
            self.docker
                .start_container(name, None)
                .await
                .map_err(|e| action_error(name, "start", e))?;
        }
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let status = self.inspect(name).await?;
            if status.is_ready() {
                return Ok(status);
            }
            // A container that exits at once will not become ready by waiting.
            if matches!(status.state.as_str(), "exited" | "dead") {
                return Err(self.start_failure(name, started).await);
            }
            if Instant::now() >= deadline {
                return Err(DockerError::NotReady {
                    name: name.to_owned(),
                    wanted: if status.health.is_some() {
                        "running and healthy"
                    } else {
                        "running"
                    },
                    secs: timeout.as_secs(),
                    state: match &status.health {
                        Some(health) => format!("{} ({health})", status.state),
                        None => status.state.clone(),
                    },
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Watches `name`, started at `started`, until `until`: Docker's wait for the container to
    /// stop, cut off at `until`. A container still up then is started; one that stopped is a
    /// [`DockerError::StartFailed`].
    pub async fn settle(
        &self,
        name: &str,
        started: Instant,
        until: Instant,
    ) -> Result<(), DockerError> {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(name, Some(options));
        match tokio::time::timeout_at(until, wait.next()).await {
            // Checked again: a watch begun after `until` (other starts came first) saw nothing.
            Err(_elapsed) => match self.inspect(name).await? {
                status if status.is_up() => Ok(()),
                _ => Err(self.start_failure(name, started).await),
            },
            // The wait reports a non-zero exit as an error: both mean it stopped.
            Ok(Some(Ok(_) | Err(bollard::errors::Error::DockerContainerWaitError { .. }))) => {
                Err(self.start_failure(name, started).await)
            }
            Ok(Some(Err(e))) => Err(action_error(name, "wait", e)),
            Ok(None) => Err(DockerError::Action {
                name: name.to_owned(),
                action: "wait",
                reason: "the engine ended the wait without an answer".into(),
            }),
        }
    }

    /// The failed start of `name` (started at `started`, not running now): its exit code and
    /// the last lines of its log since that start. An engine failure on the way is returned
    /// instead.
    async fn start_failure(&self, name: &str, started: Instant) -> DockerError {
        let ran_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let info = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) => return action_error(name, "inspect", e),
        };
        let state = info.state.unwrap_or_default();
        let since = state
            .started_at
            .and_then(|at| at.parse::<DateTime<Utc>>().ok());
        DockerError::StartFailed(vec![StartFailure {
            container: name.to_owned(),
            exit_code: state.exit_code,
            ran_ms,
            log_tail: self.log_tail(name, since).await,
            at: Utc::now(),
        }])
    }

    /// The last [`LOG_TAIL_LINES`] non-empty lines of `name`'s log written since `since` (its
    /// last start: the earlier runs' lines are not this failure's), each cut at 200
    /// characters; what went wrong reading it takes the place of the log.
    async fn log_tail(&self, name: &str, since: Option<DateTime<Utc>>) -> Vec<String> {
        // Docker's own `since` counts whole seconds: the lines carry their timestamps instead.
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&(LOG_TAIL_LINES * 10).to_string())
            .build();
        let mut stream = self.docker.logs(name, Some(options));
        let mut text = String::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
                Ok(None) => break,
                Ok(Some(Err(e))) => return vec![format!("(its log cannot be read: {e})")],
                Err(_) => return vec!["(its log cannot be read: no answer within 5 s)".into()],
            }
        }
        let mut lines: Vec<(Option<DateTime<Utc>>, String)> = text
            .lines()
            .filter_map(|line| {
                let (at, message) = line.split_once(' ').unwrap_or(("", line));
                let at = at.parse::<DateTime<Utc>>().ok();
                let current = match (at, since) {
                    (Some(at), Some(since)) => at >= since,
                    _ => true,
                };
                let message = message.trim_end();
                (current && !message.is_empty()).then(|| (at, message.chars().take(200).collect()))
            })
            .collect();
        // stdout and stderr come as separate streams: their timestamps put them in order.
        lines.sort_by_key(|(at, _)| *at);
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines.drain(start..).map(|(_, line)| line).collect()
    }

    /// Stops `name`: SIGTERM, then SIGKILL after `grace` (Docker's own logic), and checks that
    /// it is down.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError> {
        let options = StopContainerOptions {
            signal: None,
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
        };
        self.docker
            .stop_container(name, Some(options))
            .await
            .map_err(|e| action_error(name, "stop", e))?;
        let status = self.inspect(name).await?;
        if status.is_up() {
            return Err(DockerError::Action {
                name: name.to_owned(),
                action: "stop",
                reason: format!("still {} after `docker stop`", status.state),
            });
        }
        Ok(())
    }

    /// Runs `cmd` in the running container `name` and waits for it (at most `timeout`).
    pub async fn exec(
        &self,
        name: &str,
        cmd: &[&str],
        timeout: Duration,
    ) -> Result<Exec, DockerError> {
        use bollard::exec::StartExecResults;
        use futures_util::StreamExt;
        let id = self.create_exec(name, cmd, true).await?;
        let run = async {
            let mut text = String::new();
            match self.docker.start_exec(&id, None).await {
                Ok(StartExecResults::Attached { mut output, .. }) => {
                    while let Some(Ok(chunk)) = output.next().await {
                        text.push_str(&chunk.to_string());
                    }
                    Ok(text)
                }
                Ok(StartExecResults::Detached) => Ok(text),
                Err(e) => Err(e),
            }
        };
        let output = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) if exec_not_found(&e.to_string()) => return Ok(Exec::NotFound),
            Ok(Err(e)) => return Err(action_error(name, "exec", e)),
            Err(_) => {
                return Err(DockerError::Action {
                    name: name.to_owned(),
                    action: "exec",
                    reason: format!(
                        "`{}` gave no answer within {} s",
                        cmd.join(" "),
                        timeout.as_secs()
                    ),
                });
            }
        };
        let inspected = self
            .docker
            .inspect_exec(&id)
            .await
            .map_err(|e| action_error(name, "exec", e))?;
        let exit = inspected.exit_code.unwrap_or(-1);
        if exit == 127 || exec_not_found(&output) && exit != 0 {
            return Ok(Exec::NotFound);
        }
        Ok(Exec::Ran { exit, output })
    }

    /// Creates the exec of `cmd` in `name` (its output attached or not); returns its id.
    async fn create_exec(
        &self,
        name: &str,
        cmd: &[&str],
        attach: bool,
    ) -> Result<String, DockerError> {
        let options = bollard::exec::CreateExecOptions {
            cmd: Some(cmd.to_vec()),
            attach_stdout: Some(attach),
            attach_stderr: Some(attach),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(name, options)
            .await
            .map_err(|e| action_error(name, "exec", e))?;
        Ok(created.id)
    }

    /// Starts `cmd` in the running container `name` without waiting for it (a command that
    /// returns only when its work is done, as `core stop gracefully`).
    pub async fn exec_detached(&self, name: &str, cmd: &[&str]) -> Result<(), DockerError> {
        use bollard::exec::StartExecOptions;
        let id = self.create_exec(name, cmd, false).await?;
        self.docker
            .start_exec(
                &id,
                Some(StartExecOptions {
                    detach: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| action_error(name, "exec", e))?;
        Ok(())
    }
}

/// The runtime's words for a command missing from the container.
fn exec_not_found(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("executable file not found") || text.contains("no such file or directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_is_one_line_with_code_log_and_what_to_run() {
        let failure = |exit_code, log_tail: &[&str]| StartFailure {
            container: "asterisk".into(),
            exit_code,
            ran_ms: 340,
            log_tail: log_tail.iter().map(|l| l.to_string()).collect(),
            at: Utc::now(),
        };
        let both = DockerError::StartFailed(vec![
            failure(Some(1), &["loading", "chan_sip: cannot bind"]),
            failure(None, &[]),
        ])
        .to_string();
        assert_eq!(
            both,
            "container `asterisk` exited with code 1 0.3 s after being started (last log lines: \
             loading | chan_sip: cannot bind): see `docker logs asterisk`; container `asterisk` \
             stopped 0.3 s after being started (its log is empty): see `docker logs asterisk`"
        );
        assert!(!both.contains('\n'));
    }
}
