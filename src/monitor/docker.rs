//! The Docker engine, through bollard: inspect, start (and wait until running and, where the
//! container has a health check, healthy), stop with a grace time, unpause, and set the restart
//! policy to `no`. Only containers named by the caller are touched. Errors are typed and say
//! what to fix; retrying is the caller's business (see `services`).

use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerStateStatusEnum, ContainerUpdateBody, HealthStatusEnum, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{InspectContainerOptions, StopContainerOptions};
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
    /// health check, for at most `timeout`.
    pub async fn start(&self, name: &str, timeout: Duration) -> Result<(), DockerError> {
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
                return Ok(());
            }
            // A container that exits at once will not become ready by waiting.
            let gave_up = matches!(status.state.as_str(), "exited" | "dead");
            if gave_up || Instant::now() >= deadline {
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
}
