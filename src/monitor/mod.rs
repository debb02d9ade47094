//! The slave monitor (`xivo-ha monitor`, `check-master-status`, `manage-slave-services`): the
//! long-running loop that reads ha.conf (again whenever it changes) and, on a slave, watches
//! the master with the [`probe`] pipeline (SIP OPTIONS every few tens of ms, each answer
//! noted as it arrives), decides on time without an answer with the hysteresis of [`verdict`]
//! (waking at the verdict's deadline, not at a round's end), asks the witnesses from the first
//! suspect moment ([`isolation`]) and has the [`services`] keeper start or stop the slave's
//! containers; on a master it probes the slave once a second, on its own cadence
//! ([`peer`]: standby or active) and hosts the [`hourly`] job runner, which that gates; when HA
//! is disabled it idles. Its state goes to `/var/lib/xivo-ha/monitor.json` for `status`.
//!
//! Files: [`settings`] (variables), [`probe`] (ICMP, TCP, SIP OPTIONS: the slave's pipeline,
//! the master's rounds), [`verdict`] (the pure
//! decision), [`docker`] (bollard), [`services`] (desired state, flag file, keeper), [`peer`]
//! (the master's view of its slave), [`hourly`] (the master's job runner: replication every
//! interval, everything at :00 and at a failback), [`rounds`] (the recent rounds in memory,
//! for the dashboard), [`command`] (the three commands' arguments and output).

pub mod command;
pub mod docker;
pub mod drain;
pub mod hourly;
pub mod isolation;
pub mod peer;
pub mod probe;
pub mod rounds;
pub mod services;
pub mod settings;
pub mod verdict;
pub mod witness;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::alert::{self, Event, Kind};
use crate::context::Context;
use crate::fsutil::{self, FileError};
use crate::ha::{HaConfig, NodeType};
use crate::maintenance::{self, Phase};
use crate::status::documents::{
    Component, IsolationRecord, MaintenanceDoc, MonitorDoc, TransitionRecord,
};
use crate::status::store;
use crate::throttle::Throttle;
use docker::{DockerError, Engine};
use hourly::{Gate, RunnerStatus};
use isolation::{Decision, Guard, Witnessed};
use peer::{PeerRules, PeerState, PeerWatch};
use probe::{Answer, Pipeline, ProbeSettings, Prober, RoundReport, Seen};
use rounds::{Mark, RoundLog};
use services::{Desired, Keeper};
use settings::{MasterSettings, MonitorSettings};
use verdict::{Machine, Rules, Verdict};
use witness::{WitnessRound, Witnesses};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
    #[error(transparent)]
    Ha(#[from] crate::ha::HaError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Manage(#[from] services::ManageError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The command line asks for something the monitor cannot do.
    #[error("{0}")]
    Usage(String),
}

/// Everything the monitor holds while this node is a slave.
struct SlaveRun {
    pipeline: Pipeline,
    machine: Machine,
    /// The pipeline's answers as evidence (the last answer of each path).
    seen: Seen,
    /// Acts on a down verdict only when a witness answers.
    guard: Guard,
    /// Witness rounds under way, each giving back the instant it began.
    witness_rounds: FuturesUnordered<BoxFuture<'static, (Instant, WitnessRound)>>,
    /// The latest witness round finished, with the instant it began.
    last_witness: Option<(Instant, WitnessRound)>,
    /// When the next witness round may begin (one per round at most).
    next_witness_at: Instant,
    /// Cut off: since when, and what the witnesses said last.
    isolated: Option<IsolationRecord>,
    since: DateTime<Utc>,
    /// The last [`TRANSITIONS_KEPT`] transitions, oldest first.
    transitions: VecDeque<TransitionRecord>,
    last_round: Option<RoundReport>,
    /// What the witness rounds finished since the last round's mark said (answered or not),
    /// for the timeline's witness row.
    witness_mark: Option<bool>,
}

/// What woke a slave's loop besides its round.
enum SlaveEvent {
    Answer(Answer),
    Witness(Instant, WitnessRound),
    /// The verdict's deadline: a decision may be due.
    Deadline,
}

/// Witness rounds under way at most (a round waits up to the probes' timeout).
const WITNESS_ROUNDS_AT_ONCE: usize = 8;

impl SlaveRun {
    /// The next answer, witness round or deadline of the verdict.
    async fn next_event(&mut self) -> SlaveEvent {
        // Never in the past: a deadline that passed without a change must not spin.
        let deadline = self
            .machine
            .deadline()
            .map(|at| at.max(Instant::now() + Duration::from_millis(1)));
        tokio::select! {
            answer = self.pipeline.next() => SlaveEvent::Answer(answer),
            Some((began, round)) = self.witness_rounds.next(), if !self.witness_rounds.is_empty() => {
                SlaveEvent::Witness(began, round)
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                SlaveEvent::Deadline
            }
        }
    }

    fn note(&mut self, event: SlaveEvent) {
        match event {
            SlaveEvent::Answer(answer) => {
                self.machine.answered(answer.path, answer.at);
                self.seen.note(answer);
            }
            SlaveEvent::Witness(began, round) => {
                self.witness_mark = Some(self.witness_mark.unwrap_or(false) || round.answered);
                if self
                    .last_witness
                    .as_ref()
                    .is_none_or(|(last, _)| *last <= began)
                {
                    self.last_witness = Some((began, round));
                }
            }
            SlaveEvent::Deadline => {}
        }
    }

    /// What the witnesses said since the master went silent: the latest round begun after
    /// its last answer.
    fn witnessed(&self) -> Witnessed {
        match &self.last_witness {
            Some((began, round)) if *began >= self.machine.sip_silent_since() => {
                if round.answered {
                    Witnessed::Answered
                } else {
                    Witnessed::Silent
                }
            }
            _ => Witnessed::NotAsked,
        }
    }

    /// Begins a witness round when the guard wants one (the master suspect or down) and the
    /// last one began a round ago or more: in parallel with the detection window.
    fn ask_witnesses(&mut self, settings: &MonitorSettings, now: Instant) {
        let wanted = self
            .guard
            .wants_witness(self.machine.verdict(), self.machine.sip_silent_for(now));
        if !wanted
            || now < self.next_witness_at
            || self.witness_rounds.len() >= WITNESS_ROUNDS_AT_ONCE
        {
            return;
        }
        let Some(witnesses) = witness::resolve(&settings.witnesses) else {
            return;
        };
        let timeout = settings.round_timeout();
        self.next_witness_at = now + settings.interval;
        self.witness_rounds.push(Box::pin(async move {
            let began = Instant::now();
            (began, witness::round(&witnesses, timeout).await)
        }));
    }
}

/// What woke the loop besides its round, as the role says.
enum RoleEvent {
    Slave(SlaveEvent),
    /// A master's round of its slave is due ([`peer::ROUND_EVERY`]).
    PeerRound,
}

/// The slave's next event, the master's next round of its slave, or never on another role.
async fn role_event(role: &mut Role) -> RoleEvent {
    match role {
        Role::Slave {
            probing: Some(probing),
            ..
        } => RoleEvent::Slave(probing.next_event().await),
        Role::Master(MasterRun {
            peer: Some(peer), ..
        }) => {
            peer.ticker.tick().await;
            RoleEvent::PeerRound
        }
        _ => std::future::pending().await,
    }
}

/// Transitions the monitor's document keeps (the dashboard lists them).
pub const TRANSITIONS_KEPT: usize = 20;

/// A warning that every round would repeat (an unwritable state directory, an unreadable
/// maintenance file) is logged once, then at most once per this.
const WARN_EVERY: Duration = Duration::from_secs(600);

impl SlaveRun {
    /// Keeps `record` as the latest transition, forgetting the oldest beyond the bound.
    fn remember(&mut self, record: TransitionRecord) {
        if self.transitions.len() == TRANSITIONS_KEPT {
            self.transitions.pop_front();
        }
        self.transitions.push_back(record);
    }
}

/// Proof that [`Monitor::preflight`] passed, with what it read.
pub struct Checked {
    ha: HaConfig,
    ha_bytes: Option<Vec<u8>>,
}

/// Everything it holds while this node is a master.
struct MasterRun {
    cancel: CancellationToken,
    jobs: Arc<Mutex<RunnerStatus>>,
    /// The watch of the slave; `None` when ha.conf names none (the jobs then run ungated).
    peer: Option<Box<PeerRun>>,
}

/// The master's probing of its slave and the gate it holds the job runner to.
struct PeerRun {
    prober: Prober,
    /// One round every [`peer::ROUND_EVERY`], whatever the monitor's round.
    ticker: tokio::time::Interval,
    watch: PeerWatch,
    gate: watch::Sender<Gate>,
}

/// What the monitor does, as ha.conf says.
enum Role {
    /// HA disabled (or a slave whose ha.conf names no master): nothing to do.
    Idle,
    /// A master: it watches its slave, and its jobs run while the slave is standby.
    Master(MasterRun),
    /// A slave: the keeper holds its services to the verdict on the master. `probing` is
    /// `None` when ha.conf stopped naming a master: the services stay as they are.
    Slave {
        keeper: Keeper,
        probing: Option<Box<SlaveRun>>,
    },
}

/// What the monitor's loop holds between rounds.
struct Node {
    ha: HaConfig,
    /// ha.conf as last read, to notice a change.
    ha_bytes: Option<Vec<u8>>,
    role: Role,
    /// ha.conf could not be read again (shown in the state until it can).
    config_error: Option<String>,
    /// Why ha.conf's peer is refused: the role is then [`Role::Idle`] whatever ha.conf says.
    refused: Option<String>,
    /// Maintenance mode, while it is on: the services and the hourly jobs are left alone.
    maintenance: Option<MaintenanceDoc>,
    /// The maintenance file could not be read (warned once, then every [`WARN_EVERY`]).
    maintenance_unreadable: Throttle,
}

/// The long-running monitor.
pub struct Monitor {
    ctx: Context,
    settings: MonitorSettings,
    master: MasterSettings,
    jobs: Arc<Vec<hourly::Job>>,
    clock: Arc<dyn hourly::Clock>,
    heartbeat: Option<crate::http::Heartbeat>,
    /// Whether a master probes its slave (off only in unit tests of the schedule, which run on
    /// paused time where real probes cannot).
    probe_peer: bool,
    rounds: RoundLog,
}

impl Monitor {
    /// A monitor with the master's standard hourly jobs.
    pub fn new(ctx: Context, settings: MonitorSettings) -> Monitor {
        Monitor {
            ctx,
            settings,
            master: MasterSettings::default(),
            jobs: Arc::new(hourly::master_jobs()),
            clock: Arc::new(hourly::SystemClock),
            heartbeat: None,
            probe_peer: true,
            rounds: RoundLog::default(),
        }
    }

    /// Beats `heartbeat` on every round, for the HTTP endpoint's `/healthz`.
    pub fn with_heartbeat(mut self, heartbeat: crate::http::Heartbeat) -> Monitor {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// The master's schedule (`XIVO_HA_REPLICATION_INTERVAL_S`).
    pub fn with_master_settings(mut self, master: MasterSettings) -> Monitor {
        self.master = master;
        self
    }

    /// Keeps each probe round in `rounds`, for the dashboard's timeline.
    pub fn with_rounds(mut self, rounds: RoundLog) -> Monitor {
        self.rounds = rounds;
        self
    }

    /// Replaces the hourly jobs (tests, or a node that runs other jobs).
    pub fn with_jobs(mut self, jobs: Vec<hourly::Job>) -> Monitor {
        self.jobs = Arc::new(jobs);
        self
    }

    /// A master that does not probe its slave: its jobs run as if the slave stood by.
    #[cfg(test)]
    fn without_peer_probe(mut self) -> Monitor {
        self.probe_peer = false;
        self
    }

    /// Replaces the wall clock of the hourly scheduler (tests).
    pub fn with_clock(mut self, clock: Arc<dyn hourly::Clock>) -> Monitor {
        self.clock = clock;
        self
    }

    /// The start-up checks: a readable ha.conf and, on a slave, every listed container present.
    /// Callers that start more around the monitor (the HTTP endpoint) run them first, then
    /// hand the result to [`Monitor::run_checked`].
    pub async fn preflight(&self) -> Result<Checked, MonitorError> {
        let ha = HaConfig::load(&self.ctx.paths)?;
        let ha_bytes = fsutil::read_optional(&self.ctx.paths.ha_conf())?;
        if ha.node_type == NodeType::Slave {
            check_containers_exist(&self.settings).await?;
        }
        Ok(Checked { ha, ha_bytes })
    }

    /// Runs until `shutdown` completes. Fails only at start-up (unreadable ha.conf, a service
    /// container that does not exist): once running, errors are logged, retried and shown.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MonitorError> {
        let checked = self.preflight().await?;
        self.run_checked(checked, shutdown).await
    }

    /// [`Monitor::run`] after [`Monitor::preflight`] passed. Each round: re-read ha.conf
    /// ([`Monitor::reread_ha`], which changes the role) and the maintenance file, on a slave
    /// mark the round for the timeline, then save the state when it changed. Between rounds, a
    /// slave's loop wakes at each answer of its pipeline, each witness round and the verdict's
    /// deadline, and decides then ([`Monitor::decide`]); a master's loop wakes every
    /// [`peer::ROUND_EVERY`] to probe its slave.
    pub async fn run_checked(
        self,
        checked: Checked,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), MonitorError> {
        let paths = self.ctx.paths.clone();
        let mut node = self.start(checked);
        let mut last_saved: Option<(Instant, String)> = None;
        // An unwritable state directory fails every round: say so once, then every 10 min.
        let mut save_failed = Throttle::new(WARN_EVERY);

        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let mut changed = false;
            let mut peer_round = false;
            let round = tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => true,
                event = role_event(&mut node.role) => {
                    match (event, &mut node.role) {
                        (RoleEvent::Slave(event), Role::Slave { probing: Some(probing), .. }) => {
                            probing.note(event);
                        }
                        (RoleEvent::PeerRound, _) => peer_round = true,
                        (RoleEvent::Slave(_), _) => {}
                    }
                    false
                }
            };
            if round {
                if let Some(heartbeat) = &self.heartbeat {
                    heartbeat.beat();
                }
                self.reread_ha(&mut node).await;
                self.watch_maintenance(&mut node);
            }
            let hold = node.maintenance.is_some();
            if let Role::Slave {
                keeper,
                probing: Some(probing),
            } = &mut node.role
            {
                let now = Instant::now();
                if round {
                    let report = probing.seen.report(now, self.settings.interval);
                    probing.machine.count(report.observation());
                    self.rounds.push(Mark::of(
                        Utc::now(),
                        report.observation(),
                        probing.witness_mark.take(),
                    ));
                    probing.last_round = Some(report);
                }
                changed |= self.decide(probing, keeper, hold);
                probing.ask_witnesses(&self.settings, now);
            }
            if !round && !changed && !peer_round {
                continue;
            }
            if peer_round
                && let Role::Master(MasterRun {
                    peer: Some(peer), ..
                }) = &mut node.role
            {
                let report = tokio::select! {
                    _ = &mut shutdown => break,
                    report = peer.prober.round() => report,
                };
                if observe_peer(peer, &report) {
                    last_saved = None;
                }
            }
            if changed {
                last_saved = None;
            }

            let state = self.state(&node);
            let key = format!("{}|{hold}", state_key(&state));
            let due = match &last_saved {
                None => true,
                Some((at, last_key)) => *last_key != key || at.elapsed() >= Duration::from_secs(5),
            };
            if due {
                match store::save(&paths, Component::Monitor, &state) {
                    Ok(()) => {
                        last_saved = Some((Instant::now(), key));
                        save_failed.clear();
                    }
                    Err(e) => save_failed.warn(e),
                }
            }
        }

        let state = self.stop(node).await;
        let _ = store::save(&paths, Component::Monitor, &state);
        Ok(())
    }

    /// The node in the role `checked`'s ha.conf gives it.
    fn start(&self, checked: Checked) -> Node {
        let Checked { ha, ha_bytes } = checked;
        tracing::info!(
            "monitor started: {}{}",
            ha.node_type,
            match ha.node_type {
                NodeType::Disabled => String::new(),
                _ => format!(", peer {}", ha.remote_address),
            }
        );
        let mut maintenance_unreadable = Throttle::new(WARN_EVERY);
        let maintenance = maintenance::on_at(
            read_maintenance(&self.ctx.paths, &mut maintenance_unreadable),
            Utc::now(),
        );
        if let Some(m) = &maintenance {
            tracing::info!(
                "maintenance mode on ({}): services and hourly jobs left alone",
                maintenance::describe(m)
            );
        }
        let refused = self.refusal(&ha);
        let role = match &refused {
            None => self.enter_role(&ha, None, maintenance.is_some()),
            Some(reason) => {
                tracing::error!("{reason}");
                Role::Idle
            }
        };
        Node {
            ha,
            ha_bytes,
            role,
            config_error: None,
            refused,
            maintenance,
            maintenance_unreadable,
        }
    }

    /// Stops the hourly jobs and the keeper (letting a pass under way finish); returns the
    /// last state to save.
    async fn stop(&self, mut node: Node) -> MonitorDoc {
        tracing::info!("monitor stopping");
        if let Role::Master(run) = &node.role {
            run.cancel.cancel();
            node.role = Role::Idle;
        }
        let state = self.state(&node);
        if let Role::Slave { keeper, .. } = node.role {
            keeper.shutdown(Duration::from_secs(5)).await;
        }
        state
    }

    /// Reads ha.conf again (each round: a small file, and inotify would miss an atomic replace
    /// of a bind-mounted file); a change of settings changes the role, an unreadable file keeps
    /// the previous one and is shown in the state. The peer is checked every round (this
    /// node's addresses may change too): a refused one leaves the role for [`Role::Idle`]
    /// without touching the services, and the role comes back when the peer is fixed.
    async fn reread_ha(&self, node: &mut Node) {
        let paths = &self.ctx.paths;
        let loaded = match fsutil::read_optional(&paths.ha_conf()) {
            Ok(bytes) if bytes != node.ha_bytes => {
                HaConfig::load(paths).map(|ha| Some((bytes, ha)))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e.into()),
        };
        let new = match loaded {
            Ok(Some((bytes, new))) => {
                node.ha_bytes = bytes;
                node.config_error = None;
                new
            }
            Ok(None) => node.ha.clone(),
            Err(e) => {
                if node.config_error.is_none() {
                    tracing::warn!(
                        "{e}; keeping the previous HA settings ({})",
                        node.ha.node_type
                    );
                }
                node.config_error = Some(e.to_string());
                return;
            }
        };
        let refused = self.refusal(&new);
        if new == node.ha && refused == node.refused {
            return;
        }
        if new != node.ha {
            tracing::info!(
                "ha.conf changed: {} {} -> {} {}",
                node.ha.node_type,
                node.ha.remote_address,
                new.node_type,
                new.remote_address
            );
        }
        match &refused {
            Some(reason) if node.refused.as_ref() != Some(reason) => tracing::error!("{reason}"),
            Some(_) => {}
            None if node.refused.is_some() => tracing::info!("ha.conf's peer is usable again"),
            None => {}
        }
        let role = std::mem::replace(&mut node.role, Role::Idle);
        let keeper = self
            .leave_role(role, refused.is_none().then_some(&new))
            .await;
        node.ha = new;
        if refused.is_none() {
            node.role = self.enter_role(&node.ha, keeper, node.maintenance.is_some());
        }
        node.refused = refused;
    }

    /// Why the monitor must not act on `ha` (its peer breaks the rules of `configure`), as the
    /// line for the log and the state.
    fn refusal(&self, ha: &HaConfig) -> Option<String> {
        let e = ha.peer_in(&self.ctx.paths).err()?;
        Some(format!(
            "{e}: the monitor probes, starts and stops nothing until then"
        ))
    }

    /// Reads the maintenance file (each round, as ha.conf); ends maintenance at its deadline
    /// (log line, mail); when it starts, the slave's keeper holds; when it ends, the services
    /// follow the verdict again.
    fn watch_maintenance(&self, node: &mut Node) {
        let paths = &self.ctx.paths;
        let doc = read_maintenance(paths, &mut node.maintenance_unreadable);
        let current = match maintenance::phase(doc, Utc::now()) {
            Phase::Off => None,
            Phase::On(doc) => Some(doc),
            Phase::Expired(doc) => {
                let what = maintenance::describe(&doc);
                tracing::warn!(
                    "maintenance mode ended by its deadline ({what}): the monitor acts again"
                );
                if let Err(e) = maintenance::clear(paths) {
                    tracing::error!("{e}");
                }
                alert::raise(Event::happened(Kind::MaintenanceEnded, "", what));
                None
            }
        };
        if current == node.maintenance {
            return;
        }
        let was_on = node.maintenance.is_some();
        match &current {
            Some(doc) => tracing::info!(
                "maintenance mode on ({}): {}",
                maintenance::describe(doc),
                match node.ha.node_type {
                    NodeType::Slave => "probing goes on, the services are left as they are",
                    NodeType::Master => "no replication and no sync",
                    NodeType::Disabled => "nothing to hold on a node without HA",
                }
            ),
            None => tracing::info!("maintenance mode off: the monitor acts again"),
        }
        node.maintenance = current;
        if let Role::Slave { keeper, probing } = &node.role {
            if node.maintenance.is_some() {
                keeper.hold();
            } else if was_on {
                self.resume(keeper, probing.as_deref());
            }
        }
    }

    /// After maintenance: the services follow the verdict reached meanwhile (a master that went
    /// down is taken over now), or, undecided, what the flag file recorded.
    fn resume(&self, keeper: &Keeper, probing: Option<&SlaveRun>) {
        let paths = &self.ctx.paths;
        // A cut-off slave (no witness answered) does not take over after maintenance either.
        let isolated = probing.is_some_and(|p| p.isolated.is_some());
        let desired = match probing.map(|p| p.machine.verdict()) {
            Some(Verdict::Down) if !isolated => Desired::Running,
            Some(Verdict::Down) => services::recorded(paths),
            Some(Verdict::Up) => Desired::Stopped,
            Some(Verdict::Unknown) | None => services::recorded(paths),
        };
        if desired == Desired::Running && services::recorded(paths) == Desired::Stopped {
            let master = probing
                .map(|p| p.pipeline.master().to_string())
                .unwrap_or_default();
            let evidence = probing
                .and_then(|p| p.transitions.back())
                .map(|t| format!("{} [{}]", t.reason, t.evidence))
                .unwrap_or_default();
            tracing::warn!("after maintenance: the master {master} is down, taking over");
            alert::raise(Event::failing(Kind::Failover, master, evidence));
        }
        if let Err(e) = services::record(paths, desired) {
            tracing::error!("{e}");
        }
        keeper.set(desired);
    }

    /// A decision of the slave's verdict machine at this instant, then of the split-brain guard
    /// with what the witnesses said: a transition is recorded, a failback stops the services,
    /// a down verdict starts them when the guard lets it, unless `hold` (maintenance mode).
    /// Returns whether anything changed.
    fn decide(&self, probing: &mut SlaveRun, keeper: &Keeper, hold: bool) -> bool {
        let now = Instant::now();
        let taken_over = probing.guard.taken_over();
        let transition = probing.machine.check(now);
        let witness_said = probing.witnessed();
        let decision = probing.guard.step(
            now,
            probing.machine.verdict(),
            probing.machine.sip_silent_since(),
            witness_said,
        );
        if transition.is_none() && decision == Decision::Hold {
            return false;
        }
        let report = probing.seen.report(now, self.settings.down_after);
        let witnessed = probing
            .last_witness
            .as_ref()
            .filter(|_| witness_said != Witnessed::NotAsked)
            .map(|(_, round)| round.clone());
        let master = probing.pipeline.master();
        // An episode under way changes nothing new (its detail is saved with the rest).
        let changed = transition.is_some() || decision != Decision::Isolated { first: false };
        if let Some(t) = transition {
            let record = TransitionRecord {
                from: t.from,
                to: t.to,
                at: Utc::now(),
                reason: t.reason,
                evidence: report.evidence(),
            };
            tracing::warn!(
                master = %master,
                "master {} -> {}: {} [{}]",
                record.from, record.to, record.reason, record.evidence
            );
            probing.since = record.at;
            if t.to == Verdict::Up {
                if hold {
                    tracing::warn!("maintenance mode: the services are left as they are");
                } else {
                    self.follow(keeper, Desired::Stopped);
                }
                if taken_over {
                    alert::raise(Event::recovered(
                        Kind::Failover,
                        master.to_string(),
                        format!("{} [{}]", record.reason, record.evidence),
                    ));
                    // This node answered calls meanwhile: what it recorded stays here until the
                    // master's monitor pulls it (its copy-back, once it sees this node silent).
                    tracing::warn!(
                        "failback: the master {master} is back; its monitor brings back the voicemail and recordings made here once this node stands by (or `xivo-ha sync --back` on the master)",
                    );
                }
            }
            probing.remember(record);
        }
        let witnesses = || {
            witnessed
                .as_ref()
                .map(|w| w.detail.clone())
                .unwrap_or_default()
        };
        match decision {
            Decision::Hold => {}
            Decision::TakeOver if hold => {
                tracing::warn!(
                    "maintenance mode: the master is down, the services are left as they are"
                );
            }
            Decision::TakeOver => {
                probing.isolated = None;
                self.follow(keeper, Desired::Running);
                let evidence = probing
                    .transitions
                    .back()
                    .map(|t| format!("{} [{}]", t.reason, t.evidence))
                    .unwrap_or_else(|| report.evidence());
                alert::raise(Event::failing(Kind::Failover, master.to_string(), evidence));
            }
            Decision::Isolated { first } => {
                if first {
                    tracing::error!(
                        "isolated: no witness answers, not taking over (master {master} down) [{}]",
                        witnesses()
                    );
                    alert::raise(Event::failing(
                        Kind::Isolated,
                        master.to_string(),
                        format!("master {master} down, witnesses silent [{}]", witnesses()),
                    ));
                }
                let since = probing.isolated.as_ref().map_or_else(Utc::now, |i| i.since);
                probing.isolated = Some(IsolationRecord {
                    since,
                    witnesses: witnesses(),
                });
            }
            Decision::Recovered { lasted } => {
                let seen = match &witnessed {
                    Some(w) if w.answered => format!("a witness answers [{}]", w.detail),
                    _ => format!("the master {master} answers [{}]", report.evidence()),
                };
                tracing::warn!("network back after {} s cut off: {seen}", lasted.as_secs());
                alert::raise(Event::recovered(
                    Kind::Isolated,
                    master.to_string(),
                    format!("after {} s cut off: {seen}", lasted.as_secs()),
                ));
                probing.isolated = None;
            }
        }
        changed
    }

    /// Records `desired` in the flag file (first: a restart mid-action finishes the job), then
    /// has the keeper bring the services there.
    fn follow(&self, keeper: &Keeper, desired: Desired) {
        if let Err(e) = services::record(&self.ctx.paths, desired) {
            tracing::error!("{e}");
        }
        keeper.set(desired);
    }

    /// The role `ha` gives this node. `keeper` is the slave's keeper carried over from the
    /// previous role (a slave that stays one keeps its services' keeper).
    /// In maintenance (`hold`), a slave's keeper starts held: nothing is reconciled.
    fn enter_role(&self, ha: &HaConfig, keeper: Option<Keeper>, hold: bool) -> Role {
        // monit's checks follow the role (files and a reload, off the monitor's loop).
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || crate::monit::follow(&ctx));
        // Only for a peer `refusal` accepted.
        match (ha.node_type, ha.peer().ok().flatten()) {
            (NodeType::Slave, Some(ip)) => {
                let keeper = keeper.unwrap_or_else(|| Keeper::spawn(self.settings.clone()));
                // Start-up reconciliation: services recorded as stopped are stopped now (a
                // reboot, an upgrade or someone may have started them); services recorded as
                // running wait for the first verdict, so that a monitor restarted while the
                // master serves never starts a second Asterisk.
                if hold {
                    keeper.hold();
                } else if services::recorded(&self.ctx.paths) == Desired::Stopped {
                    keeper.set(Desired::Stopped);
                }
                let probing = Box::new(self.probe(ip));
                tracing::info!("slave: probing the master {ip}");
                Role::Slave {
                    keeper,
                    probing: Some(probing),
                }
            }
            (NodeType::Master, ip) => {
                Role::Master(self.start_master(ip.filter(|_| self.probe_peer)))
            }
            _ => {
                tracing::info!("HA disabled: the monitor idles");
                match keeper {
                    Some(keeper) => Role::Slave {
                        keeper,
                        probing: None,
                    },
                    None => Role::Idle,
                }
            }
        }
    }

    /// A fresh watch of the master at `ip`, with the transitions the previous run of the
    /// monitor recorded about the same master (the dashboard's history survives a restart).
    fn probe(&self, ip: IpAddr) -> SlaveRun {
        self.rounds.clear();
        let transitions = store::load::<MonitorDoc>(&self.ctx.paths, Component::Monitor)
            .filter(|doc| doc.master == Some(ip))
            .map(|doc| doc.transitions.into_iter().collect())
            .unwrap_or_default();
        let now = Instant::now();
        SlaveRun {
            pipeline: Pipeline::start(
                ip,
                ProbeSettings::from(&self.settings),
                self.settings.cadence(),
            ),
            machine: Machine::new(
                Rules {
                    down_after: self.settings.down_after,
                    up_after: self.settings.up_after,
                    hold_down: self.settings.hold_down,
                },
                now,
            ),
            seen: Seen::new(self.settings.cadence()),
            guard: Guard::new(
                self.settings.witnesses != Witnesses::Off,
                self.settings.down_after,
            ),
            witness_rounds: FuturesUnordered::new(),
            last_witness: None,
            next_witness_at: now,
            isolated: None,
            since: Utc::now(),
            transitions,
            last_round: None,
            witness_mark: None,
        }
    }

    /// The master's watch of its slave at `slave` (if any) and its job runner, started.
    fn start_master(&self, slave: Option<IpAddr>) -> MasterRun {
        let cancel = CancellationToken::new();
        let jobs: Arc<Mutex<RunnerStatus>> = Arc::default();
        let (gate, receiver) = watch::channel(match slave {
            Some(_) => Gate::default(),
            None => Gate::NO_PEER,
        });
        tokio::spawn(hourly::run(
            self.ctx.clone(),
            self.jobs.clone(),
            self.clock.clone(),
            self.master.replication_interval,
            receiver,
            cancel.clone(),
            jobs.clone(),
        ));
        let peer = slave.map(|ip| {
            tracing::info!(
                "master: probing the slave {ip} every {:?} (SIP answers while it serves)",
                peer::ROUND_EVERY
            );
            let mut ticker = tokio::time::interval(peer::ROUND_EVERY);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Box::new(PeerRun {
                prober: Prober::new(ip, ProbeSettings::from(&self.settings)),
                ticker,
                // Quick to see a failover (the slave's own `down_after`), slower to see its end.
                watch: PeerWatch::new(
                    ip,
                    PeerRules::spanning(self.settings.down_after, self.settings.up_after),
                ),
                gate,
            })
        });
        MasterRun { cancel, jobs, peer }
    }

    /// Leaves `role` for the settings `next`; returns the keeper when this node stays a slave.
    /// A slave that stops being one gets its services back (a master or a standalone node
    /// must serve calls) and its flag file removed. `next` is `None` when the new settings are
    /// refused: the services are left as they are.
    async fn leave_role(&self, role: Role, next: Option<&HaConfig>) -> Option<Keeper> {
        let keeper = match role {
            Role::Master(run) => {
                run.cancel.cancel();
                return None;
            }
            Role::Idle => return None,
            Role::Slave { keeper, .. } if next.is_some_and(|n| n.node_type == NodeType::Slave) => {
                return Some(keeper);
            }
            Role::Slave { keeper, .. } => keeper,
        };
        if next.is_some() && services::recorded(&self.ctx.paths) == Desired::Stopped {
            tracing::info!("no longer a slave: starting the services kept down");
            if let Err(e) = services::record(&self.ctx.paths, Desired::Running) {
                tracing::error!("{e}");
            }
            keeper.set(Desired::Running);
        }
        keeper
            .shutdown(self.settings.start_timeout + Duration::from_secs(10))
            .await;
        None
    }

    fn state(&self, node: &Node) -> MonitorDoc {
        let (slave, master, keeper) = match &node.role {
            Role::Idle => (None, None, None),
            Role::Master(run) => (None, Some(run), None),
            Role::Slave { keeper, probing } => (probing.as_deref(), None, Some(keeper)),
        };
        let services = keeper.map(Keeper::status);
        let jobs = master.map(|m| m.jobs.lock().expect("status lock").clone());
        let mut state = MonitorDoc {
            summary: String::new(),
            node_type: node.ha.node_type,
            master: slave.map(|s| s.pipeline.master()),
            verdict: slave.map(|s| s.machine.verdict()),
            since: slave.map(|s| s.since),
            last_transition: slave.and_then(|s| s.transitions.back().cloned()),
            transitions: slave
                .map(|s| s.transitions.iter().cloned().collect())
                .unwrap_or_default(),
            last_round: slave.and_then(|s| s.last_round.clone()),
            counters: slave.map(|s| s.machine.counters()),
            isolated: slave.and_then(|s| s.isolated.clone()),
            witnesses: slave.map(|_| self.settings.witnesses.to_string()),
            services,
            peer: master.and_then(|m| m.peer.as_ref().map(|p| p.watch.status().clone())),
            jobs_held: jobs.as_ref().and_then(|j| j.held.clone()),
            jobs_skipped: jobs.as_ref().map_or(0, |j| j.skipped),
            replicated_at: jobs.as_ref().and_then(RunnerStatus::replicated_at),
            hourly: jobs.map(|j| j.runs).unwrap_or_default(),
            config_error: node.config_error.clone(),
            peer_refused: node.refused.clone(),
            updated_at: Utc::now(),
        };
        state.summary = summary(&state, &self.jobs, self.master.replication_interval);
        if let Some(m) = &node.maintenance {
            state.summary.push_str(&format!(
                "; MAINTENANCE until {} ({}, set by {}): {}",
                m.until.format("%Y-%m-%d %H:%M:%S UTC"),
                m.reason,
                m.set_by,
                match node.ha.node_type {
                    NodeType::Slave => "services left as they are",
                    NodeType::Master => "hourly jobs skipped",
                    NodeType::Disabled => "nothing to hold",
                }
            ));
        }
        state
    }
}

/// The maintenance file as it is now; an unreadable one counts as none, with a warning through
/// `unreadable` (the loop reads it every round).
fn read_maintenance(
    paths: &crate::paths::Paths,
    unreadable: &mut Throttle,
) -> Option<MaintenanceDoc> {
    match maintenance::read(paths) {
        Ok(doc) => {
            unreadable.clear();
            doc
        }
        Err(warning) => {
            unreadable.warn(warning);
            None
        }
    }
}

/// One round's report seen by the master's watch of its slave; on a change, the job runner's
/// gate follows. Returns whether the slave's state changed.
fn observe_peer(peer: &mut PeerRun, report: &RoundReport) -> bool {
    let Some(change) = peer.watch.observe(Utc::now(), report.observation()) else {
        return false;
    };
    let slave = peer.prober.master();
    match (change.from, change.to) {
        (_, PeerState::Active) => tracing::warn!(
            "slave {slave} {} -> active ({} rounds with SIP answering): it serves calls; copy-back, replication and sync held [{}]",
            change.from,
            change.streak,
            report.evidence()
        ),
        (PeerState::Active, _) => tracing::warn!(
            "slave {slave} active -> {} ({} silent rounds): failback done [{}]",
            change.to,
            change.streak,
            report.evidence()
        ),
        _ => tracing::info!("slave {slave} {} -> {}", change.from, change.to),
    }
    peer.gate.send_replace(Gate {
        peer: change.to,
        failbacks: peer.watch.status().failbacks,
    });
    true
}

/// What changes the state file at once (anything but counters and timestamps, which are
/// written every few seconds).
fn state_key(state: &MonitorDoc) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        state.node_type,
        state.peer.as_ref().map(|p| p.state),
        state.jobs_held,
        state.jobs_skipped,
        state.replicated_at,
        state.verdict,
        state.isolated.as_ref().map(|i| i.since),
        state.last_transition.as_ref().map(|t| t.at),
        state.services.as_ref().map(|s| (
            s.desired,
            s.settled,
            s.errors,
            s.start_failures,
            &s.last_action,
            s.draining.as_ref().map(|d| d.calls)
        )),
        state.hourly.len(),
        state.config_error,
        state.peer_refused
    )
}

/// The one line `status` prints.
fn summary(state: &MonitorDoc, jobs: &[hourly::Job], interval: Duration) -> String {
    let mut out = match state.node_type {
        node_type if let Some(reason) = &state.peer_refused => {
            format!("{node_type}: doing nothing: {reason}")
        }
        NodeType::Disabled => "HA disabled: idle".to_owned(),
        NodeType::Master => {
            let names: Vec<&str> = jobs.iter().map(|j| j.name).collect();
            let mut out = if names.is_empty() {
                "master: no hourly job configured".to_owned()
            } else {
                format!("master: hourly jobs at :00 ({})", names.join(", "))
            };
            let frequent: Vec<&str> = jobs
                .iter()
                .filter(|j| j.runs_on(hourly::Trigger::Interval))
                .map(|j| j.name)
                .collect();
            if !frequent.is_empty() && interval < Duration::from_secs(3600) {
                out.push_str(&format!(
                    ", {} every {} s",
                    frequent.join(", "),
                    interval.as_secs()
                ));
            }
            if let Some(peer) = &state.peer {
                out.push_str(&format!("; slave {} {}", peer.address, peer.state));
                if let Some(since) = peer.since {
                    out.push_str(&format!(" since {}", since.format("%Y-%m-%d %H:%M:%S UTC")));
                }
                if !peer.reachable {
                    out.push_str(" (unreachable now)");
                }
            }
            if let Some(held) = &state.jobs_held {
                out.push_str(&format!("; {held}"));
            }
            if let Some(at) = state.replicated_at {
                let lag = (state.updated_at - at).num_seconds().max(0);
                out.push_str(&format!(
                    "; the slave's configuration is the master's of {lag} s ago"
                ));
            }
            for run in &state.hourly {
                out.push_str(&format!("; {}", run.summary));
            }
            out
        }
        NodeType::Slave => {
            let mut out = format!(
                "master {} {} since {}",
                state.master.map(|m| m.to_string()).unwrap_or_default(),
                state.verdict.unwrap_or(Verdict::Unknown),
                state
                    .since
                    .map(|s| s.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default()
            );
            if let Some(i) = &state.isolated {
                out.push_str(&format!(
                    "; isolated: no witness answers, not taking over (since {}: {})",
                    i.since.format("%H:%M:%S"),
                    i.witnesses
                ));
            }
            if let Some(t) = &state.last_transition {
                out.push_str(&format!(
                    "; last {} -> {} at {}: {} [{}]",
                    t.from,
                    t.to,
                    t.at.format("%H:%M:%S"),
                    t.reason,
                    t.evidence
                ));
            }
            if let Some(c) = &state.counters {
                out.push_str(&format!(
                    "; rounds {} (good {}, sip dead {}, host down {}); master declared down {} times, up {} times",
                    c.rounds, c.good, c.sip_dead, c.host_down, c.to_down, c.to_up
                ));
            }
            if let Some(s) = &state.services {
                match s.desired {
                    Some(desired) => out.push_str(&format!(
                        "; services {desired}{}",
                        if s.settled { "" } else { " (in progress)" }
                    )),
                    None => out.push_str("; services untouched until the first verdict"),
                }
                if !s.failed_starts.is_empty() {
                    let failed: Vec<String> =
                        s.failed_starts.iter().map(|f| f.to_string()).collect();
                    out.push_str(&format!(
                        ", FAILED TO START: {}; {} failed starts{}",
                        failed.join("; "),
                        s.start_failures,
                        s.next_attempt_at
                            .map(|at| format!(", next try at {}", at.format("%H:%M:%S")))
                            .unwrap_or_default()
                    ));
                }
                if let Some(d) = &s.draining {
                    out.push_str(&format!(
                        ", draining {} ({}, since {}, stopped after {} s at most)",
                        match d.calls {
                            Some(1) => "1 call".to_owned(),
                            Some(n) => format!("{n} calls"),
                            None => "calls".to_owned(),
                        },
                        d.containers.join(", "),
                        d.since.format("%H:%M:%S"),
                        d.max_s
                    ));
                }
                if s.errors > 0 {
                    out.push_str(&format!(
                        ", docker errors {} (last: {})",
                        s.errors,
                        s.last_error.as_deref().unwrap_or("")
                    ));
                }
            }
            out
        }
    };
    if let Some(e) = &state.config_error {
        out.push_str(&format!(
            "; ha.conf unreadable, previous settings kept: {e}"
        ));
    }
    out
}

/// Fails when a listed container does not exist; an unreachable engine is only logged (the
/// keeper retries), as the engine may come up after the monitor.
async fn check_containers_exist(settings: &MonitorSettings) -> Result<(), MonitorError> {
    match Engine::connect().await {
        Ok(engine) => {
            engine.inspect_all(&settings.containers).await?;
            Ok(())
        }
        Err(e) => {
            tracing::warn!("{e}; will retry");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn write_ha(root: &std::path::Path, text: &str) {
        std::fs::create_dir_all(root.join("etc/xivo")).unwrap();
        std::fs::write(root.join("etc/xivo/ha.conf"), text).unwrap();
    }

    fn summary_of(root: &std::path::Path) -> String {
        let text = std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json")).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["summary"].as_str().unwrap().to_owned()
    }

    /// A master's monitor at `root`, in a task, with one hourly job `name` that counts its runs,
    /// on a paused clock that starts at 15:59:57. Rounds of 60 s: the tests span hours of
    /// paused time, and each round reads ha.conf and writes the state file (with fsync, the
    /// slow part). Returns the count, the stop switch and the task.
    fn start_master(
        root: &std::path::Path,
        name: &'static str,
    ) -> (
        Arc<AtomicU32>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), MonitorError>>,
    ) {
        // The slave's address is data only: this test's master does not probe it (its jobs run
        // ungated), so the documentation address is never contacted.
        write_ha(
            root,
            r#"{"node_type": "master", "remote_address": "192.0.2.20"}"#,
        );
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let job = hourly::Job::new(name, move |_ctx| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<(), String>(())
            }
        });
        let clock = Arc::new(hourly::TokioClock {
            start_wall: hourly::tests::at("2026-11-25 15:59:57"),
            start: Instant::now(),
        });
        let settings = MonitorSettings {
            interval: Duration::from_secs(60),
            ..MonitorSettings::default()
        };
        let monitor = Monitor::new(Context::new(root, "", None), settings)
            .with_jobs(vec![job])
            .with_clock(clock)
            .without_peer_probe();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(monitor.run(async move {
            let _ = stopped.await;
        }));
        (runs, stop, task)
    }

    /// The master's rounds of its slave come every second, whatever the monitor's round.
    #[tokio::test(start_paused = true)]
    async fn a_masters_rounds_of_its_slave_are_a_second_apart_whatever_the_round() {
        let dir = tempfile::tempdir().unwrap();
        for interval_ms in [50, 200, 5000] {
            let settings = MonitorSettings {
                interval: Duration::from_millis(interval_ms),
                ..MonitorSettings::default()
            };
            let monitor =
                Monitor::new(Context::new(dir.path(), "", None), settings).with_jobs(Vec::new());
            // Loopback, and never probed here: only the rounds' times are awaited.
            let mut role = Role::Master(monitor.start_master(Some([127, 0, 0, 1].into())));
            let start = Instant::now();
            let mut rounds = Vec::new();
            for _ in 0..4 {
                assert!(matches!(role_event(&mut role).await, RoleEvent::PeerRound));
                rounds.push(start.elapsed());
            }
            let secs = Duration::from_secs;
            assert_eq!(
                rounds,
                [secs(0), secs(1), secs(2), secs(3)],
                "{interval_ms} ms"
            );
            if let Role::Master(run) = role {
                run.cancel.cancel();
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_in_maintenance_skips_its_hourly_jobs_and_runs_them_once_it_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let paths = crate::paths::Paths::new(root);
        let doc = maintenance::new_doc(
            "upgrade",
            "root@xivo1",
            Utc::now(),
            Duration::from_secs(6 * 3600),
        );
        maintenance::set(&paths, &doc).unwrap();
        let (runs, stop, task) = start_master(root, "replication");

        // 16:00 passes in maintenance: skipped, and the state says so.
        tokio::time::sleep(Duration::from_secs(62)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "skipped in maintenance");
        let summary = summary_of(root);
        assert!(
            summary.contains("MAINTENANCE until")
                && summary.contains("(upgrade, set by root@xivo1): hourly jobs skipped"),
            "{summary}"
        );

        // Off: the next :00 runs the job, the note goes.
        maintenance::clear(&paths).unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "17:00 runs");
        assert!(!summary_of(root).contains("MAINTENANCE"));

        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_runs_its_hourly_jobs_and_follows_ha_conf_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (runs, stop, task) = start_master(root, "test-job");

        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "not before 16:00");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(50)).await;
        let summary = summary_of(root);
        assert!(
            summary.starts_with("master: hourly jobs at :00 (test-job); test-job ok at"),
            "{summary}"
        );

        // HA disabled: the scheduler stops, the monitor idles.
        write_ha(root, r#"{"node_type": "disabled", "remote_address": ""}"#);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(summary_of(root), "HA disabled: idle");
        tokio::time::sleep(Duration::from_secs(3700)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        // A corrupt ha.conf keeps the previous role and says so.
        write_ha(root, "{");
        tokio::time::sleep(Duration::from_secs(61)).await;
        let summary = summary_of(root);
        assert!(
            summary.starts_with("HA disabled: idle; ha.conf unreadable"),
            "{summary}"
        );

        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
