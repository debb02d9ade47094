//! Alerts by mail, as XiVO mails root when its replication fails: the components
//! [`raise`] an [`Event`] (a failure, its recovery, a one-off like a maintenance deadline); a
//! background task of the process decides with [`decide`] (the pure rules: a new failure is
//! mailed, a persisting one at most hourly, its recovery once) against the alerts' document
//! (`/var/lib/xivo-ha/alerts.json`, shared by the monitor and commands run by hand, under a
//! lock), sends with [`smtp`] and records in that document what could not be sent, for
//! `status`. Raising never blocks nor fails the caller: the queue is bounded and a full queue
//! drops the event with a log line.
//!
//! Adding an event: one variant of [`Kind`] with its subjects and hint.
//!
//! Files: [`settings`] (`XIVO_HA_ALERT_*`), [`decide`], [`smtp`].

pub mod decide;
pub mod settings;
pub mod smtp;

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::context::Context;
use crate::fsutil::FileError;
use crate::paths::Paths;
use crate::status::documents::{AlertsDoc, Component, MAILS_KEPT, MailRecord};
use crate::status::store;
use decide::Mail;
use settings::AlertSettings;

/// What an alert is about. Each has the subject of its failure and of its recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The configuration database replication to the slave.
    Replication,
    /// The file sync to the slave.
    Sync,
    /// The slave took over (failing: the master is down) and handed back (recovered).
    Failover,
    /// A telephony container of the slave could not be started.
    ContainerStart,
    /// Maintenance mode ended by its deadline (a one-off).
    MaintenanceEnded,
    /// A DB Replic sink failing (mailed after 5 minutes).
    DbReplicSink,
    /// The slave is cut off (no witness answers) and refuses to take over.
    Isolated,
    /// The master brought back voicemail and recordings made on the slave (a one-off, with
    /// the files; keyed by the slave).
    CopyBack,
    /// A replication found changes made on the slave (while it served): what it merged back
    /// into the master and what it overwrote (a one-off, sent by the master after the
    /// failback's replication).
    SlaveChanges,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Replication => "replication",
            Kind::Sync => "sync",
            Kind::Failover => "failover",
            Kind::ContainerStart => "container-start",
            Kind::MaintenanceEnded => "maintenance-ended",
            Kind::DbReplicSink => "dbreplic-sink",
            Kind::Isolated => "isolated",
            Kind::CopyBack => "copy-back",
            Kind::SlaveChanges => "slave-changes",
        }
    }

    /// The subject of the failure (or of the one-off event); the replication's is XiVO's.
    pub fn failing_subject(self) -> &'static str {
        match self {
            Kind::Replication => "Slave replication failed",
            Kind::Sync => "File sync to the slave failed",
            Kind::Failover => "Failover: the master is down, this slave took over",
            Kind::ContainerStart => "A telephony container failed to start",
            Kind::MaintenanceEnded => "Maintenance mode ended by its deadline",
            Kind::DbReplicSink => "DB Replic sink failing for more than 5 minutes",
            Kind::Isolated => "Slave cut off: no witness answers, not taking over",
            Kind::CopyBack => "Failback done: voicemail and recordings brought back from the slave",
            Kind::SlaveChanges => {
                "After the failback: the slave's changes merged back or overwritten"
            }
        }
    }

    /// The subject of the recovery.
    pub fn recovered_subject(self) -> &'static str {
        match self {
            Kind::Replication => "Slave replication works again",
            Kind::Sync => "File sync to the slave works again",
            Kind::Failover => "Failback: the master is back, this slave handed the calls back",
            Kind::ContainerStart => "The telephony containers started",
            Kind::MaintenanceEnded => "Maintenance mode ended",
            Kind::DbReplicSink => "DB Replic sink delivering again",
            Kind::Isolated => "Slave connected again: the network is back",
            Kind::CopyBack => "Voicemail and recordings brought back from the slave",
            Kind::SlaveChanges => "The slave's changes handled",
        }
    }

    /// What the administrator should look at, in the failure's mail.
    pub fn hint(self) -> &'static str {
        match self {
            Kind::Replication => {
                "check the slave's database and run `xivo-master-slave-db-replication <slave_ip>` on the master"
            }
            Kind::Sync => {
                "check SSH to the slave (`xivo-sync -i`) and run `xivo-sync` on the master"
            }
            Kind::Failover => {
                "the slave serves the calls; repair the master: the slave hands back once it answers again"
            }
            Kind::ContainerStart => {
                "look at `docker ps -a` and `docker logs` on the slave; `xivo-ha status` shows the keeper's last error"
            }
            Kind::MaintenanceEnded => {
                "the monitor acts again; set `xivo-ha maintenance on --for DURATION` if the work goes on"
            }
            Kind::DbReplicSink => {
                "check the reporting database or Elasticsearch; `xivo-ha status` shows the sink's last error"
            }
            Kind::Isolated => {
                "the slave sees neither the master nor its witnesses (XIVO_HA_MONITOR_WITNESSES): check its network link; it takes over only once a witness answers"
            }
            Kind::CopyBack => {
                "nothing to do: the files are in this master's spool; `xivo-ha status` shows the last copy-back (sync-back)"
            }
            Kind::SlaveChanges => {
                "the user statuses listed are on the master now; redo on the master what else was changed on the slave while it served, if it is still wanted"
            }
        }
    }

    /// How long a failure must last before it is mailed.
    pub fn grace(self) -> Duration {
        match self {
            Kind::DbReplicSink => Duration::from_secs(300),
            Kind::Replication
            | Kind::Sync
            | Kind::Failover
            | Kind::ContainerStart
            | Kind::MaintenanceEnded
            | Kind::Isolated
            | Kind::CopyBack
            | Kind::SlaveChanges => Duration::ZERO,
        }
    }
}

/// What happened to the thing an alert is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It fails, for this one-line reason (reported again while it lasts).
    Failing(String),
    /// It works again (with what shows it, e.g. the probe evidence).
    Recovered(String),
    /// A one-off event, with its details.
    Happened(String),
}

/// One report to the alerts: a kind, a key within the kind (a sink, a master's address; empty
/// when the kind has one), and the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub key: String,
    pub change: Change,
}

impl Event {
    pub fn failing(kind: Kind, key: impl Into<String>, reason: impl Into<String>) -> Event {
        Event {
            kind,
            key: key.into(),
            change: Change::Failing(reason.into()),
        }
    }

    pub fn recovered(kind: Kind, key: impl Into<String>, detail: impl Into<String>) -> Event {
        Event {
            kind,
            key: key.into(),
            change: Change::Recovered(detail.into()),
        }
    }

    pub fn happened(kind: Kind, key: impl Into<String>, detail: impl Into<String>) -> Event {
        Event {
            kind,
            key: key.into(),
            change: Change::Happened(detail.into()),
        }
    }
}

/// Events waiting for the task; more are dropped (with a log line), never waited for.
const QUEUE: usize = 64;

/// How often the task looks for failures whose grace ended without a new report.
const TICK: Duration = Duration::from_secs(30);

enum Message {
    Event(Event),
    Flush(oneshot::Sender<()>),
}

static QUEUE_TX: OnceLock<mpsc::Sender<Message>> = OnceLock::new();

/// Starts this process's alert task (once; later calls do nothing). Bad alert settings are
/// logged and turn the mail off: an alert setting never stops a command.
pub fn install(ctx: &Context) {
    if QUEUE_TX.get().is_some() {
        return;
    }
    let settings = ctx
        .env()
        .map_err(settings::SettingsError::from)
        .and_then(|env| AlertSettings::load(&env));
    let settings = match settings {
        Ok(settings) => Ok(settings),
        Err(e) => {
            tracing::warn!("{e}; alert mails are off until it is fixed");
            Err(e.to_string())
        }
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    if QUEUE_TX.set(tx).is_ok() {
        tokio::spawn(run(ctx.paths.clone(), settings, rx));
    }
}

/// Hands `event` to the alert task, at once; without a task (library use, tests), nothing.
pub fn raise(event: Event) {
    let Some(tx) = QUEUE_TX.get() else { return };
    match tx.try_send(Message::Event(event)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(Message::Event(event))) => tracing::warn!(
            "alert queue full: dropping {} ({:?})",
            event.kind.name(),
            event.change
        ),
        Err(_) => {}
    }
}

/// Waits (at most `patience`) until the events raised so far are handled and their mails
/// sent or given up: a command run by hand calls it before it exits.
pub async fn flush(patience: Duration) {
    let Some(tx) = QUEUE_TX.get() else { return };
    let (done, wait) = oneshot::channel();
    let _ = tokio::time::timeout(patience, async {
        if tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    })
    .await;
}

type Settings = Result<AlertSettings, String>;

/// The alert task: events in order, a tick for failures whose grace ended.
async fn run(paths: Paths, settings: Settings, mut rx: mpsc::Receiver<Message>) {
    let node = settings::hostname();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                None => return,
                Some(Message::Event(event)) => handle(&paths, &settings, &node, Some(&event)).await,
                Some(Message::Flush(done)) => {
                    let _ = done.send(());
                }
            },
            _ = tick.tick() => handle(&paths, &settings, &node, None).await,
        }
    }
}

/// One event (or a tick): the decision under the document's lock, then the mails.
async fn handle(paths: &Paths, settings: &Settings, node: &str, event: Option<&Event>) {
    let now = Utc::now();
    let mails = update(paths, settings, |doc| match event {
        Some(event) => decide::decide(doc, event, now, node).into_iter().collect(),
        None => decide::due(doc, now, node),
    });
    let Ok(settings) = settings else { return };
    if settings.smtp.is_none() {
        return;
    }
    for mail in mails {
        let result = smtp::send(settings, &mail).await;
        match &result {
            Ok(()) => tracing::info!(
                "alert mailed to {}: {}",
                settings.to.join(", "),
                mail.subject
            ),
            Err(e) => tracing::warn!("alert mail not sent ({}): {e}", mail.subject),
        }
        update(paths, &Ok(settings.clone()), |doc| {
            record(doc, &mail, result, Utc::now())
        });
    }
}

/// A mail's outcome in the document.
fn record(doc: &mut AlertsDoc, mail: &Mail, result: Result<(), String>, at: DateTime<Utc>) {
    let record = MailRecord {
        at,
        subject: mail.subject.clone(),
        error: result.err(),
    };
    if record.error.is_some() {
        doc.mails_failed += 1;
        doc.last_failure = Some(record.clone());
    } else {
        doc.mails_sent += 1;
    }
    if doc.recent.len() >= MAILS_KEPT {
        doc.recent.drain(..=doc.recent.len() - MAILS_KEPT);
    }
    doc.recent.push(record.clone());
    doc.last_mail = Some(record);
}

/// Applies `f` to the alerts' document under its lock (the monitor and a command run by hand
/// may report at once), saving it when it changed.
fn update<R>(paths: &Paths, settings: &Settings, f: impl FnOnce(&mut AlertsDoc) -> R) -> R {
    let _lock = match lock(paths) {
        Ok(lock) => Some(lock),
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    let mut doc: AlertsDoc = store::load(paths, Component::Alerts).unwrap_or_default();
    let before = doc.clone();
    let result = f(&mut doc);
    summarise(&mut doc, settings);
    if doc != before {
        doc.updated_at = Some(Utc::now());
        if let Err(e) = store::save(paths, Component::Alerts, &doc) {
            tracing::warn!("alerts not recorded: {e}");
        }
    }
    result
}

/// Takes the alerts' lock (flock, waiting: the other holder only reads and writes one file).
fn lock(paths: &Paths) -> Result<nix::fcntl::Flock<std::fs::File>, FileError> {
    let path = paths.state_dir().join("alerts.lock");
    let file = crate::fsutil::open_lock_file(&path)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| FileError::new("lock", &path, errno.into()))
}

/// The one line `status` prints: where mail goes, whether the last one went out, what fails.
fn summarise(doc: &mut AlertsDoc, settings: &Settings) {
    let mut out = match settings {
        Ok(s) if s.smtp.is_some() => {
            format!("mail to {} via {}", s.to.join(", "), s.describe())
        }
        Ok(_) => "mail off (XIVO_HA_ALERT_SMTP is empty)".to_owned(),
        Err(e) => format!("mail off, bad settings: {e}"),
    };
    out.push_str(&format!(
        "; {} sent, {} not sent",
        doc.mails_sent, doc.mails_failed
    ));
    if let Some(failure) = &doc.last_failure {
        let last = doc.last_mail.as_ref() == Some(failure);
        out.push_str(&format!(
            "; {} mail not sent at {} ({}): {}",
            if last { "LAST" } else { "a" },
            failure.at.format("%Y-%m-%d %H:%M:%S UTC"),
            failure.subject,
            failure.error.as_deref().unwrap_or_default()
        ));
    }
    let failing: Vec<String> = doc
        .entries
        .iter()
        .filter_map(|(key, e)| {
            let since = e.failing_since?;
            Some(format!(
                "{key} since {}",
                since.format("%Y-%m-%d %H:%M UTC")
            ))
        })
        .collect();
    if failing.is_empty() {
        out.push_str("; nothing failing");
    } else {
        out.push_str(&format!("; failing: {}", failing.join(", ")));
    }
    doc.summary = out;
}
