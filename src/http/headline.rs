//! The dashboard's headline: one sentence and one colour saying what this node is doing, a
//! pure function of the same documents `/status` serves (and of the time, for staleness).
//!
//! Maintenance mode, an isolated slave and a graceful drain come before the role arms: each
//! says why the node is not doing what its verdict alone would have it do.

use chrono::{DateTime, Utc};

use crate::ha::NodeType;
use crate::monitor::peer::PeerState;
use crate::monitor::services::KeeperStatus;
use crate::monitor::verdict::Verdict;
use crate::status::Status;
use crate::status::documents::{JobRecord, MonitorDoc};

/// The monitor saves its document every 5 s at least: older than this, its loop is stuck.
pub const STALE_AFTER_S: i64 = 30;

/// The headline's colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// All is well (green).
    Good,
    /// Something to look at, nothing lost yet (amber).
    Warn,
    /// Serving in place of the master, or broken (red).
    Bad,
    /// Nothing to watch: HA disabled, no state yet (grey).
    Idle,
}

impl Tone {
    /// The CSS class (and `data-tone`) of the headline.
    pub fn name(self) -> &'static str {
        match self {
            Tone::Good => "good",
            Tone::Warn => "warn",
            Tone::Bad => "bad",
            Tone::Idle => "idle",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headline {
    pub tone: Tone,
    pub text: String,
}

fn line(tone: Tone, text: impl Into<String>) -> Headline {
    Headline {
        tone,
        text: text.into(),
    }
}

/// What this node is doing, in words and colour.
pub fn headline(status: &Status, now: DateTime<Utc>) -> Headline {
    let docs = &status.components;
    let Some(monitor) = &docs.monitor else {
        return line(Tone::Idle, "the monitor has not recorded its state yet");
    };
    let age = (now - monitor.updated_at).num_seconds();
    match monitor {
        _ if age > STALE_AFTER_S => line(
            Tone::Bad,
            format!("the monitor's state is {age} s old: its loop is stuck or stopped"),
        ),
        MonitorDoc {
            config_error: Some(e),
            node_type,
            ..
        } => line(
            Tone::Warn,
            format!("ha.conf unreadable, still acting as {node_type}: {e}"),
        ),
        _ if let Some(m) = docs.maintenance.as_ref().filter(|m| m.is_on(now)) => line(
            Tone::Warn,
            format!(
                "MAINTENANCE until {} ({}, set by {}): no takeover, no replication, no sync",
                m.until.format("%H:%M"),
                m.reason,
                m.set_by
            ),
        ),
        MonitorDoc {
            isolated: Some(i), ..
        } => line(
            Tone::Bad,
            format!(
                "isolated: no witness answers since {}, not taking over",
                i.since.format("%H:%M:%S")
            ),
        ),
        MonitorDoc {
            services: Some(KeeperStatus {
                draining: Some(d), ..
            }),
            ..
        } => line(
            Tone::Warn,
            match d.calls {
                Some(1) => "master back: draining 1 call before stopping".to_owned(),
                Some(n) => format!("master back: draining {n} calls before stopping"),
                None => "master back: draining the calls before stopping".to_owned(),
            },
        ),
        MonitorDoc {
            node_type: NodeType::Disabled,
            ..
        } => line(Tone::Idle, "HA disabled"),
        MonitorDoc {
            node_type: NodeType::Master,
            ..
        } => master(status),
        MonitorDoc { verdict: None, .. } => line(
            Tone::Warn,
            "slave: ha.conf names no master to watch; the services are left as they are",
        ),
        MonitorDoc {
            verdict: Some(Verdict::Unknown),
            ..
        } => line(Tone::Warn, "watching the master: no verdict yet"),
        MonitorDoc {
            verdict: Some(Verdict::Up),
            ..
        } if settling(monitor) => line(Tone::Warn, "master up: stopping this node's services"),
        MonitorDoc {
            verdict: Some(Verdict::Up),
            ..
        } => line(Tone::Good, "standing by, master up"),
        MonitorDoc {
            verdict: Some(Verdict::Down),
            since,
            last_transition,
            ..
        } => {
            let what = if settling(monitor) {
                "STARTING the services"
            } else {
                "SERVING"
            };
            let since = since
                .map(|s| format!(" since {}", s.format("%H:%M:%S")))
                .unwrap_or_default();
            let why = last_transition
                .as_ref()
                .map(|t| format!(" ({})", t.reason))
                .unwrap_or_default();
            line(Tone::Bad, format!("{what}: the master is down{since}{why}"))
        }
    }
}

/// The keeper is still working towards the services' desired state.
fn settling(monitor: &MonitorDoc) -> bool {
    monitor.services.as_ref().is_some_and(|s| !s.settled)
}

/// A master's headline: whether its slave serves in its place, else how its last replication
/// and sync to the slave went.
fn master(status: &Status) -> Headline {
    let docs = &status.components;
    let slave = &status.remote_address;
    if let Some(peer) = docs
        .monitor
        .as_ref()
        .and_then(|m| m.peer.as_ref())
        .filter(|p| p.state == PeerState::Active)
    {
        let since = peer
            .since
            .map(|s| format!(" since {}", s.format("%H:%M:%S")))
            .unwrap_or_default();
        return line(
            Tone::Warn,
            format!(
                "master: the slave {} is ACTIVE (serving calls{since}): replication and sync held until it stands by",
                peer.address
            ),
        );
    }
    if let Some(h) = failed("replication", slave, docs.replication.as_ref())
        .or_else(|| failed("sync", slave, docs.sync.as_ref()))
    {
        return h;
    }
    match &docs.replication {
        Some(r) => line(
            Tone::Good,
            format!(
                "master: serving; the slave {slave} got the configuration at {}",
                r.started_at.format("%H:%M:%S")
            ),
        ),
        None => line(
            Tone::Good,
            format!("master: serving; no replication to the slave {slave} yet (hourly at :00)"),
        ),
    }
}

/// The red headline of a failed job, `None` when it went well or never ran.
fn failed<D>(name: &str, slave: &str, job: Option<&JobRecord<D>>) -> Option<Headline> {
    let job = job.filter(|j| !j.ok)?;
    Some(line(
        Tone::Bad,
        format!(
            "master: the last {name} to the slave {slave} FAILED at {}: {}",
            job.started_at.format("%H:%M:%S"),
            job.error.as_deref().unwrap_or("no reason recorded")
        ),
    ))
}
