//! The failback that lets calls finish: before the keeper stops the slave's containers, each
//! running one that has Asterisk's `asterisk` command is asked to drain
//! (`asterisk -rx "core stop gracefully"`, run in the container through the Docker API):
//! Asterisk refuses new calls, so phones go back to the master, and exits after its last call.
//! The keeper waits for the container to exit, at most `XIVO_HA_MONITOR_DRAIN_MAX_S`, polling
//! `core show channels count` for `status`; a master down again meanwhile cancels the drain
//! (`core abort shutdown`): the slave keeps serving. A container without the command is
//! stopped as before.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::docker::{DockerError, Engine, Exec};
use super::services::{Desired, KeeperStatus};
use super::settings::MonitorSettings;

const COUNT: [&str; 3] = ["asterisk", "-rx", "core show channels count"];
const STOP_GRACEFULLY: [&str; 3] = ["asterisk", "-rx", "core stop gracefully"];
const ABORT: [&str; 3] = ["asterisk", "-rx", "core abort shutdown"];
/// How long one `asterisk -rx` may take.
const EXEC_TIMEOUT: Duration = Duration::from_secs(10);

/// `core show channels count`'s three lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCount {
    pub channels: u64,
    pub calls: u64,
    pub processed: u64,
}

/// Parses `N active channel(s)`, `M active call(s)` (or `M of X max active call(s) (P% of
/// capacity)`) and `K call(s) processed`, in any order, ignoring other lines (a banner).
pub fn parse_channels_count(text: &str) -> Option<ChannelCount> {
    let (mut channels, mut calls, mut processed) = (None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(n) = words.first().and_then(|w| w.parse::<u64>().ok()) else {
            continue;
        };
        let noun = |w: &str, singular: &str| w == singular || w == format!("{singular}s");
        match &words[1..] {
            ["active", w, ..] if noun(w, "channel") => channels = Some(n),
            ["active", w, ..] if noun(w, "call") => calls = Some(n),
            ["of", _, "max", "active", w, ..] if noun(w, "call") => calls = Some(n),
            [w, "processed", ..] if noun(w, "call") => processed = Some(n),
            _ => {}
        }
    }
    Some(ChannelCount {
        channels: channels?,
        calls: calls?,
        processed: processed.unwrap_or(0),
    })
}

/// A drain under way, for `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// The containers draining.
    pub containers: Vec<String>,
    pub since: DateTime<Utc>,
    /// Active calls at the last poll (`None` before the first answer).
    pub calls: Option<u64>,
    /// When the containers are stopped anyway.
    pub max_s: u64,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Nothing to drain (no running container with Asterisk's command, or drains are off).
    Nothing,
    /// Every draining container exited by itself.
    Exited,
    /// The maximum passed: the keeper stops them.
    TimedOut,
    /// The desired state changed (the master is down again): aborted, they keep serving.
    Cancelled,
    /// The keeper is shutting down (the monitor stops): Asterisk goes on draining by itself.
    KeeperGone,
}

/// Drains the running containers that have Asterisk's command, until they exit, the maximum
/// passes, or `desired` changes from [`Desired::Stopped`].
pub async fn run(
    engine: &Engine,
    settings: &MonitorSettings,
    status: &Arc<Mutex<KeeperStatus>>,
    desired: &mut watch::Receiver<Option<Desired>>,
) -> Result<Drained, DockerError> {
    if settings.drain_max.is_zero() {
        return Ok(Drained::Nothing);
    }
    let mut draining = Vec::new();
    let mut calls = None;
    for container in engine.inspect_all(&settings.containers).await? {
        if container.state != "running" {
            continue;
        }
        match engine.exec(&container.name, &COUNT, EXEC_TIMEOUT).await {
            Ok(Exec::Ran { exit: 0, output }) => {
                calls = parse_channels_count(&output).map(|c| c.calls);
                // Exited by itself it must stay so: Docker must not restart it.
                engine.disable_restart(&container).await?;
                engine
                    .exec_detached(&container.name, &STOP_GRACEFULLY)
                    .await?;
                draining.push(container.name);
            }
            Ok(Exec::NotFound) => {}
            Ok(Exec::Ran { exit, output }) => tracing::warn!(
                "{}: `asterisk -rx` failed (exit {exit}: {}): stopping it without a drain",
                container.name,
                output.trim()
            ),
            Err(e) => tracing::warn!("{e}: stopping it without a drain"),
        }
    }
    if draining.is_empty() {
        return Ok(Drained::Nothing);
    }
    let started = Instant::now();
    tracing::warn!(
        "failback: draining {} ({} active calls): new calls refused, stopped when the last ends or after {} s",
        draining.join(", "),
        calls.map_or("unknown".to_owned(), |c| c.to_string()),
        settings.drain_max.as_secs()
    );
    let show = |calls: Option<u64>| {
        status.lock().expect("status lock").draining = Some(DrainStatus {
            containers: draining.clone(),
            since: Utc::now() - started.elapsed(),
            calls,
            max_s: settings.drain_max.as_secs(),
        });
    };
    show(calls);
    let poll = settings.interval.max(Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    break Drained::KeeperGone;
                }
                if *desired.borrow() == Some(Desired::Stopped) {
                    continue;
                }
                for name in &draining {
                    match engine.exec(name, &ABORT, EXEC_TIMEOUT).await {
                        Ok(_) => {}
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
                tracing::warn!(
                    "drain cancelled: the master is down again; {} keeps serving (core abort shutdown)",
                    draining.join(", ")
                );
                break Drained::Cancelled;
            }
            _ = tokio::time::sleep(poll) => {}
        }
        let statuses = engine.inspect_all(&draining).await?;
        if statuses.iter().all(|s| !s.is_up()) {
            tracing::info!(
                "drained: {} exited after its last call, {} s after the failback",
                draining.join(", "),
                started.elapsed().as_secs()
            );
            break Drained::Exited;
        }
        if started.elapsed() >= settings.drain_max {
            tracing::warn!(
                "drain: {} s passed with {} active calls: stopping {}",
                settings.drain_max.as_secs(),
                calls.map_or("unknown".to_owned(), |c| c.to_string()),
                draining.join(", ")
            );
            break Drained::TimedOut;
        }
        let mut total = None;
        for status in statuses.iter().filter(|s| s.is_up()) {
            if let Ok(Exec::Ran { exit: 0, output }) =
                engine.exec(&status.name, &COUNT, EXEC_TIMEOUT).await
                && let Some(count) = parse_channels_count(&output)
            {
                *total.get_or_insert(0) += count.calls;
            }
        }
        if total.is_some() {
            calls = total;
        }
        show(calls);
    };
    status.lock().expect("status lock").draining = None;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asterisks_channel_count_lines_parse() {
        let plain = "2 active channels\n1 active call\n7 calls processed\n";
        assert_eq!(
            parse_channels_count(plain),
            Some(ChannelCount {
                channels: 2,
                calls: 1,
                processed: 7
            })
        );
        let singular = "1 active channel\n0 active calls\n1 call processed\n";
        assert_eq!(
            parse_channels_count(singular),
            Some(ChannelCount {
                channels: 1,
                calls: 0,
                processed: 1
            })
        );
        let maxcalls = "Connected to Asterisk\n10 active channels\n5 of 100 max active calls (5.00% of capacity)\n99 calls processed\n";
        assert_eq!(
            parse_channels_count(maxcalls),
            Some(ChannelCount {
                channels: 10,
                calls: 5,
                processed: 99
            })
        );
        let one_of =
            "2 active channels\n1 of 10 max active call (10.00% of capacity)\n3 calls processed";
        assert_eq!(parse_channels_count(one_of).map(|c| c.calls), Some(1));
        assert_eq!(
            parse_channels_count("No such command 'core show channels count'"),
            None
        );
        assert_eq!(parse_channels_count(""), None);
    }
}
