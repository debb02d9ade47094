//! The typed contract between the components that leave a state document under
//! `/var/lib/xivo-ha/` and the readers of those documents (`xivo-ha status`, `/status`,
//! `/metrics`): which components exist ([`Component`], whose name is the file's), the one shape
//! of a job's run ([`JobRecord`], shared by the replication, the sync and the monitor's hourly
//! jobs) and each component's document. Writers build these structs and readers deserialize the
//! very same ones, so that a field cannot be renamed on one side only.
//!
//! Every document has a `summary`: the one line `status` prints for it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::ha::NodeType;
use crate::monitor::peer::PeerStatus;
use crate::monitor::probe::RoundReport;
use crate::monitor::services::KeeperStatus;
use crate::monitor::verdict::{Counters, Verdict};

/// A component that leaves a state document; its file is `<name>.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The mail alerts: what is failing, what was mailed, whether the mail went out.
    Alerts,
    /// DB Replic's per-table, per-sink progress (`dbreplic.json`).
    DbReplic,
    /// The last `xivo-ha doctor`: its checks, the failing ones first (`doctor.json`).
    Doctor,
    /// Maintenance mode (`maintenance.json`, present while it is on): the monitor leaves the
    /// services and the hourly jobs alone.
    Maintenance,
    /// The monitor: verdict, counters, the slave's services, the master's hourly jobs.
    Monitor,
    /// The last configuration database replication.
    Replication,
    /// The last file sync master → slave.
    Sync,
    /// The last `sync --back`.
    SyncBack,
}

impl Component {
    /// Every component, in the order of their names (the order `status` shows them in).
    pub const ALL: [Component; 8] = [
        Component::Alerts,
        Component::DbReplic,
        Component::Doctor,
        Component::Maintenance,
        Component::Monitor,
        Component::Replication,
        Component::Sync,
        Component::SyncBack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Alerts => "alerts",
            Component::DbReplic => "dbreplic",
            Component::Doctor => "doctor",
            Component::Maintenance => "maintenance",
            Component::Monitor => "monitor",
            Component::Replication => "replication",
            Component::Sync => "sync",
            Component::SyncBack => "sync-back",
        }
    }

    /// The document's file name in the state directory.
    pub fn file_name(self) -> String {
        format!("{}.json", self.name())
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One run of a job (a replication, a sync, an hourly job of the monitor): when it started,
/// how long it took, how it ended, when the job last succeeded, and the job's own details
/// (flattened into the same JSON object).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobRecord<D> {
    pub summary: String,
    pub started_at: DateTime<Utc>,
    /// The run's duration.
    pub seconds: f64,
    pub ok: bool,
    /// Why it failed (`None` when `ok`).
    pub error: Option<String>,
    /// When the last successful run started (this one or an earlier one), kept across failed
    /// runs: the metrics' "seconds since the last success".
    #[serde(default)]
    pub last_success_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub details: D,
}

impl<D> JobRecord<D> {
    /// `ok` or `failed`.
    pub fn result(&self) -> &'static str {
        if self.ok { "ok" } else { "failed" }
    }
}

/// Written with, besides the fields above, the keys the previous version's documents had
/// (`result` of the replication, `at` and `duration_ms` of the sync), for the scripts that
/// read them; readers of this crate use the fields.
impl<D: Serialize> Serialize for JobRecord<D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a, D> {
            summary: &'a str,
            started_at: &'a DateTime<Utc>,
            seconds: f64,
            ok: bool,
            error: &'a Option<String>,
            last_success_at: &'a Option<DateTime<Utc>>,
            #[serde(flatten)]
            details: &'a D,
            result: &'static str,
            at: &'a DateTime<Utc>,
            duration_ms: u64,
        }
        Wire {
            summary: &self.summary,
            started_at: &self.started_at,
            seconds: self.seconds,
            ok: self.ok,
            error: &self.error,
            last_success_at: &self.last_success_at,
            details: &self.details,
            result: self.result(),
            at: &self.started_at,
            duration_ms: (self.seconds * 1000.0) as u64,
        }
        .serialize(serializer)
    }
}

/// What a replication did (`replication.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationDetails {
    /// The slave database, as `user@host:port/db`.
    pub slave: String,
    pub tables_copied: usize,
    pub tables_unchanged: usize,
    pub rows_copied: u64,
    pub bytes_copied: u64,
    /// Names of the tables copied.
    pub copied: Vec<String>,
    /// The user statuses the slave changed since the previous replication, written into the
    /// master before the copy (the merge-back, `replication::merge`): one entry per value.
    #[serde(default)]
    pub merged_back: Vec<MergedValue>,
    /// Values changed on both sides since the previous replication: the master's is kept.
    #[serde(default)]
    pub conflicts: Vec<MergeConflict>,
    /// The replicated tables the slave changed since the previous replication, which the copy
    /// replaced with the master's (the merged-back user statuses included).
    #[serde(default)]
    pub slave_changes_overwritten: Vec<SlaveChange>,
    /// Why rows or tables were not merged (first replication, a row deleted on one side, no
    /// primary key...), one line each.
    #[serde(default)]
    pub merge_skipped: Vec<String>,
}

/// One value merged back from the slave into the master.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedValue {
    pub table: String,
    /// The row's primary key, `id=3` (`a=1, b=x` when it has several columns).
    pub key: String,
    pub column: String,
    /// The slave's value, now the master's (`None`: NULL).
    pub value: Option<String>,
    /// What the master (and the slave, at the previous replication) held.
    pub was: Option<String>,
}

/// One value both sides changed since the previous replication: the master's wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeConflict {
    pub table: String,
    pub key: String,
    pub column: String,
    /// The value both held at the previous replication.
    pub base: Option<String>,
    /// The master's value, kept.
    pub master: Option<String>,
    /// The slave's value, overwritten.
    pub slave: Option<String>,
}

/// A replicated table the slave changed since the previous replication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveChange {
    pub table: String,
    /// Rows the slave inserted, updated or deleted (an update counts once; inserts and deletes
    /// mixed in one table count as the larger of the two: at least that many rows).
    pub rows: u64,
}

pub type ReplicationDoc = JobRecord<ReplicationDetails>;

#[cfg(test)]
impl ReplicationDoc {
    /// A replication for the tests (the renderers' and the documents' own): at 10:00 UTC on
    /// 2026-11-25 to asterisk@192.0.2.20, 2 tables copied and 14 unchanged, 30 rows, 4000 bytes
    /// in 1.5 s, the last success at 09:00; failed (`connection <refused>`) unless `ok`.
    pub fn sample(ok: bool) -> ReplicationDoc {
        ReplicationDoc {
            summary: String::new(),
            started_at: "2026-11-25T10:00:00Z".parse().unwrap(),
            seconds: 1.5,
            ok,
            error: (!ok).then(|| "connection <refused>".to_owned()),
            last_success_at: Some("2026-11-25T09:00:00Z".parse().unwrap()),
            details: ReplicationDetails {
                slave: "asterisk@192.0.2.20:5432/asterisk".into(),
                tables_copied: 2,
                tables_unchanged: 14,
                rows_copied: 30,
                bytes_copied: 4000,
                copied: vec![],
                ..ReplicationDetails::default()
            },
        }
    }
}

/// What a sync did (`sync.json`, `sync-back.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncDetails {
    /// The other node, as ssh reaches it.
    pub remote: String,
    pub files_transferred: u64,
    pub bytes_transferred: u64,
    pub files_deleted: u64,
    /// Listed directories missing on the master, skipped.
    pub skipped: Vec<String>,
    /// The files transferred (for `sync-back`: brought back), as XiVO paths: the first
    /// [`crate::sync::LISTED_FILES`] of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// `sync-back`: when the last successful copy-back listed the slave's files, by the slave's
    /// clock (kept across failed runs): the next one brings back only what changed after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<SlaveListing>,
}

/// A successful copy-back's listing of the slave's files: which slave, and the slave's own
/// clock when the listing began (so that no clock skew between the nodes enters the rule).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SlaveListing {
    /// `user@host`, as [`SyncDetails::remote`].
    pub remote: String,
    pub at: DateTime<Utc>,
}

pub type SyncDoc = JobRecord<SyncDetails>;

/// Which hourly job of the monitor ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HourlyJob {
    pub job: String,
}

/// The latest run of one of the master's hourly jobs, in the monitor's document.
pub type HourlyRun = JobRecord<HourlyJob>;

/// A transition of the master's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionRecord {
    pub from: Verdict,
    pub to: Verdict,
    pub at: DateTime<Utc>,
    pub reason: String,
    /// What the probes saw in the round that decided.
    pub evidence: String,
}

/// A slave cut off from the network: the master is down and no witness answers, so it does
/// not take over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationRecord {
    pub since: DateTime<Utc>,
    /// What each witness said in the latest round.
    pub witnesses: String,
}

/// The monitor's document (`monitor.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonitorDoc {
    pub summary: String,
    pub node_type: NodeType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<TransitionRecord>,
    /// The last transitions (at most `monitor::TRANSITIONS_KEPT`), oldest first; the last one
    /// is `last_transition`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<TransitionRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_round: Option<RoundReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    /// Cut off: not taking over (see [`IsolationRecord`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolated: Option<IsolationRecord>,
    /// On a slave: the witnesses asked before a takeover (`XIVO_HA_MONITOR_WITNESSES`), or that
    /// the check is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witnesses: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<KeeperStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hourly: Vec<HourlyRun>,
    /// On a master: what its slave is doing (standby or active), from the SIP probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerStatus>,
    /// On a master: why the replication and the sync do not run now (the slave is active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_held: Option<String>,
    /// On a master: runs skipped because the slave was active, since the monitor started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub jobs_skipped: u64,
    /// On a master: when the last successful replication started. The slave's configuration
    /// lag (`xivo_ha_config_lag_seconds`) is the time since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicated_at: Option<DateTime<Utc>>,
    /// ha.conf could not be read again: the monitor keeps its previous role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// ha.conf names a peer that `configure` would refuse (this node, loopback, broadcast...):
    /// the monitor probes, starts and stops nothing until it is fixed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_refused: Option<String>,
    pub updated_at: DateTime<Utc>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl MonitorDoc {
    /// A document with only a role (for tests to fill in what they look at).
    #[cfg(test)]
    pub(crate) fn bare(node_type: NodeType, updated_at: DateTime<Utc>) -> MonitorDoc {
        MonitorDoc {
            summary: String::new(),
            node_type,
            master: None,
            verdict: None,
            since: None,
            last_transition: None,
            transitions: Vec::new(),
            last_round: None,
            counters: None,
            isolated: None,
            witnesses: None,
            services: None,
            hourly: Vec::new(),
            peer: None,
            jobs_held: None,
            jobs_skipped: 0,
            replicated_at: None,
            config_error: None,
            peer_refused: None,
            updated_at,
        }
    }
}

/// DB Replic's mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DbReplicMode {
    /// Event tables only: this node is an HA slave.
    #[serde(rename = "HA mode")]
    Ha,
    /// Event tables and the configuration tables.
    #[default]
    #[serde(rename = "normal mode")]
    Normal,
}

impl fmt::Display for DbReplicMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbReplicMode::Ha => "HA mode",
            DbReplicMode::Normal => "normal mode",
        })
    }
}

/// Where one (table, sink) task stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// Delivering.
    #[default]
    Ok,
    /// Failing, retried with backoff.
    Retrying,
    /// Given up on an error that retrying cannot fix.
    Stopped,
}

impl fmt::Display for SinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SinkState::Ok => "ok",
            SinkState::Retrying => "retrying",
            SinkState::Stopped => "stopped",
        })
    }
}

/// One (table, sink) line of DB Replic's document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub destination: String,
    /// The highest id delivered durably.
    pub last_id: i64,
    /// Rows of the source not yet delivered.
    pub behind: Option<i64>,
    /// The last time no row was behind (the status refresh, every second): while rows are
    /// behind, the time since then is the sink's lag (no undelivered row is older than that).
    #[serde(default)]
    pub caught_up_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub state: SinkState,
    /// Holes in the ids that delivery waits on (0: none), see dbreplic/holes.rs.
    #[serde(default)]
    pub holes_waiting: u64,
    /// The id delivery waits after, while a hole is waited on.
    pub hole_after: Option<i64>,
    /// Open transactions that may still fill the holes.
    #[serde(default)]
    pub hole_transactions: usize,
    pub hole_since: Option<DateTime<Utc>>,
    /// Holes found permanent and passed since the start.
    #[serde(default)]
    pub holes_passed: u64,
    /// Rows the reconciliation pass found missing in the sink and delivered, since the start.
    #[serde(default)]
    pub recovered: u64,
    pub last_reconcile_at: Option<DateTime<Utc>>,
}

/// The configuration tables' refresh (normal mode only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub tables: Vec<String>,
    pub last_refresh: Option<DateTime<Utc>>,
    pub rows: u64,
    pub last_error: Option<String>,
}

/// DB Replic's document (`dbreplic.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DbReplicDoc {
    pub summary: String,
    pub mode: DbReplicMode,
    pub origin: String,
    /// table → sink → status.
    pub tables: BTreeMap<String, BTreeMap<String, SinkStatus>>,
    pub config_tables: Option<ConfigStatus>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Maintenance mode, while it is on (`maintenance.json`; `xivo-ha maintenance on|off`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceDoc {
    pub summary: String,
    pub reason: String,
    /// `user@host` of whoever set it.
    pub set_by: String,
    pub set_at: DateTime<Utc>,
    /// Its deadline: the monitor ends it then.
    pub until: DateTime<Utc>,
}

impl MaintenanceDoc {
    /// On at `now` (before its deadline).
    pub fn is_on(&self, now: DateTime<Utc>) -> bool {
        now < self.until
    }
}

/// One alert's key (`replication`, `dbreplic-sink:cel → elasticsearch`): what is failing, and
/// what was mailed about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEntry {
    pub kind: crate::alert::Kind,
    /// Since when it fails (`None`: a one-off event, remembered for the hourly limit).
    pub failing_since: Option<DateTime<Utc>>,
    /// The latest one-line reason.
    pub reason: String,
    /// A mail about this failure went out (or was attempted), so its recovery is mailed too.
    pub mailed: bool,
    pub last_mail_at: Option<DateTime<Utc>>,
    /// Reports of this failure not mailed (within the hour after the last mail).
    pub held_back: u64,
}

/// The outcome of the last mail sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MailRecord {
    pub at: DateTime<Utc>,
    pub subject: String,
    /// Why it could not be sent (`None`: sent).
    pub error: Option<String>,
}

/// The alerts' document (`alerts.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertsDoc {
    pub summary: String,
    /// By key.
    pub entries: BTreeMap<String, AlertEntry>,
    pub mails_sent: u64,
    pub mails_failed: u64,
    pub last_mail: Option<MailRecord>,
    /// The last mail that could not be sent (kept after later successes, for `status`).
    pub last_failure: Option<MailRecord>,
    /// The last [`MAILS_KEPT`] mails, sent or not, oldest first (the dashboard lists them).
    #[serde(default)]
    pub recent: Vec<MailRecord>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Mails the alerts' document keeps in [`AlertsDoc::recent`].
pub const MAILS_KEPT: usize = 10;

/// The last `xivo-ha doctor` (`doctor.json`): written by the command each time it runs, read
/// by `status` and the dashboard. It is as current as its `ran_at`: the monitor does not run
/// the doctor's checks (they log in to the peer's SSH and PostgreSQL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoctorDoc {
    pub summary: String,
    pub ran_at: DateTime<Utc>,
    /// The role the checks were chosen for.
    pub node_type: NodeType,
    /// Every check, in the order the doctor ran them.
    pub findings: Vec<crate::doctor::Finding>,
}

/// Every component's latest document, those that exist and could be read (serialized as an
/// object keyed by component name, as `status --json` and `/status` show it).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Documents {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dbreplic: Option<DbReplicDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doctor: Option<DoctorDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncDoc>,
    #[serde(rename = "sync-back", skip_serializing_if = "Option::is_none")]
    pub sync_back: Option<SyncDoc>,
}

impl Documents {
    /// The summary of each document present, in [`Component::ALL`]'s order.
    pub fn summaries(&self) -> Vec<(Component, &str)> {
        Component::ALL
            .into_iter()
            .filter_map(|component| {
                let summary = match component {
                    Component::Alerts => self.alerts.as_ref().map(|d| &d.summary),
                    Component::DbReplic => self.dbreplic.as_ref().map(|d| &d.summary),
                    Component::Doctor => self.doctor.as_ref().map(|d| &d.summary),
                    Component::Maintenance => self.maintenance.as_ref().map(|d| &d.summary),
                    Component::Monitor => self.monitor.as_ref().map(|d| &d.summary),
                    Component::Replication => self.replication.as_ref().map(|d| &d.summary),
                    Component::Sync => self.sync.as_ref().map(|d| &d.summary),
                    Component::SyncBack => self.sync_back.as_ref().map(|d| &d.summary),
                }?;
                Some((component, summary.as_str()))
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.summaries().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::docker::{ContainerStatus, StartFailure};
    use crate::monitor::probe::PathReport;
    use crate::monitor::services::Desired;
    use serde::de::DeserializeOwned;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// Serialized and read back, `doc` is the same; returns its JSON.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(
        doc: &T,
    ) -> serde_json::Value {
        let text = serde_json::to_string_pretty(doc).unwrap();
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, doc, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn hourly(job: &str, ok: bool) -> HourlyRun {
        HourlyRun {
            summary: format!("{job} ok at 2026-11-25 11:00"),
            started_at: at("2026-11-25T11:00:00Z"),
            seconds: 12.5,
            ok,
            error: (!ok).then(|| "disk full".to_owned()),
            last_success_at: Some(at("2026-11-25T10:00:00Z")),
            details: HourlyJob { job: job.into() },
        }
    }

    #[test]
    fn a_replication_document_round_trips_with_the_previous_keys() {
        let mut doc = ReplicationDoc::sample(false);
        doc.summary = "2026-11-25 10:00:00 UTC to slave: FAILED".into();
        doc.details.copied = vec!["userfeatures".into(), "linefeatures".into()];
        doc.details.merged_back = vec![MergedValue {
            table: "userfeatures".into(),
            key: "id=1".into(),
            column: "enablednd".into(),
            value: Some("1".into()),
            was: Some("0".into()),
        }];
        doc.details.conflicts = vec![MergeConflict {
            table: "userfeatures".into(),
            key: "id=2".into(),
            column: "destunc".into(),
            base: Some(String::new()),
            master: Some("1002".into()),
            slave: Some("0612345678".into()),
        }];
        doc.details.slave_changes_overwritten = vec![SlaveChange {
            table: "extensions".into(),
            rows: 1,
        }];
        doc.details.merge_skipped = vec!["userfeatures: 1 row deleted on the master".into()];
        let json = round_trip(&doc);
        assert_eq!(json["merged_back"][0]["column"], "enablednd");
        assert_eq!(json["conflicts"][0]["master"], "1002");
        assert_eq!(json["slave_changes_overwritten"][0]["rows"], 1);
        assert_eq!(json["result"], "failed");
        assert_eq!(json["ok"], false);
        assert_eq!(json["seconds"], 1.5);
        assert_eq!(json["tables_copied"], 2);
        assert_eq!(json["copied"][1], "linefeatures");
    }

    #[test]
    fn a_sync_document_round_trips_with_the_previous_keys() {
        let doc = SyncDoc {
            summary: "ok".into(),
            started_at: at("2026-11-25T11:00:05Z"),
            seconds: 2.5,
            ok: true,
            error: None,
            last_success_at: Some(at("2026-11-25T11:00:05Z")),
            details: SyncDetails {
                remote: "root@192.0.2.20".into(),
                files_transferred: 3,
                bytes_transferred: 1200,
                files_deleted: 1,
                skipped: vec!["/var/lib/xivo/sounds".into()],
                files: Vec::new(),
                listed: None,
            },
        };
        let json = round_trip(&doc);
        assert_eq!(json["at"], "2026-11-25T11:00:05Z");
        assert_eq!(json["duration_ms"], 2500);
        assert_eq!(json["result"], "ok");
        assert_eq!(json["files_transferred"], 3);
    }

    #[test]
    fn a_monitor_document_round_trips() {
        let path = |answered, detail: &str| PathReport {
            answered,
            rtt_ms: answered.then_some(1.5),
            detail: detail.into(),
        };
        let doc = MonitorDoc {
            summary: "master 192.0.2.10 down".into(),
            node_type: NodeType::Slave,
            master: Some("192.0.2.10".parse().unwrap()),
            verdict: Some(Verdict::Down),
            since: Some(at("2026-11-25T11:00:00Z")),
            last_transition: Some(TransitionRecord {
                from: Verdict::Up,
                to: Verdict::Down,
                at: at("2026-11-25T11:00:00Z"),
                reason: "3 rounds without SIP".into(),
                evidence: "icmp connected".into(),
            }),
            transitions: vec![TransitionRecord {
                from: Verdict::Unknown,
                to: Verdict::Up,
                at: at("2026-11-25T10:00:00Z"),
                reason: "3 good rounds".into(),
                evidence: "sip 200 OK".into(),
            }],
            last_round: Some(RoundReport {
                icmp: path(true, "reply"),
                tcp: path(true, "connected"),
                sip: path(false, "timeout"),
            }),
            counters: Some(Counters {
                rounds: 10,
                good: 7,
                sip_dead: 3,
                to_down: 1,
                ..Counters::default()
            }),
            isolated: Some(IsolationRecord {
                since: at("2026-11-25T11:00:00Z"),
                witnesses: "192.0.2.1 (icmp) no answer".into(),
            }),
            witnesses: Some("192.0.2.1 (icmp)".into()),
            services: Some(KeeperStatus {
                desired: Some(Desired::Running),
                settled: true,
                containers: vec![ContainerStatus {
                    name: "asterisk".into(),
                    state: "running".into(),
                    health: Some("healthy".into()),
                    restart_policy: "no".into(),
                }],
                errors: 1,
                start_failures: 2,
                failed_starts: vec![StartFailure {
                    container: "monit".into(),
                    exit_code: Some(3),
                    ran_ms: 300,
                    log_tail: vec!["cannot bind".into()],
                    at: at("2026-11-25T11:00:01Z"),
                }],
                next_attempt_at: Some(at("2026-11-25T11:00:03Z")),
                last_error: Some("engine down".into()),
                last_error_at: Some(at("2026-11-25T10:59:00Z")),
                last_action: Some("start asterisk".into()),
                last_action_at: Some(at("2026-11-25T11:00:01Z")),
                draining: Some(crate::monitor::drain::DrainStatus {
                    containers: vec!["asterisk".into()],
                    since: at("2026-11-25T11:00:01Z"),
                    calls: Some(1),
                    max_s: 1800,
                }),
            }),
            hourly: vec![hourly("replication", false), hourly("sync", true)],
            peer: Some(PeerStatus {
                address: "192.0.2.20".parse().unwrap(),
                state: crate::monitor::peer::PeerState::Active,
                since: Some(at("2026-11-25T10:59:00Z")),
                last_answer_at: Some(at("2026-11-25T11:00:01Z")),
                last_silence_at: None,
                reachable: true,
                failbacks: 2,
            }),
            jobs_held: Some("the slave is active".into()),
            jobs_skipped: 3,
            replicated_at: Some(at("2026-11-25T10:58:00Z")),
            config_error: Some("ha.conf: unreadable".into()),
            peer_refused: None,
            updated_at: at("2026-11-25T11:00:02Z"),
        };
        let json = round_trip(&doc);
        assert_eq!(json["verdict"], "down");
        assert_eq!(json["services"]["desired"], "running");
        assert_eq!(json["services"]["failed_starts"][0]["exit_code"], 3);
        assert_eq!(json["isolated"]["since"], "2026-11-25T11:00:00Z");
        assert_eq!(json["hourly"][0]["job"], "replication");
        assert_eq!(json["peer"]["state"], "active");
        // A master's and a disabled node's document leave the slave's fields out.
        round_trip(&MonitorDoc {
            summary: "HA disabled: idle".into(),
            ..MonitorDoc::bare(NodeType::Disabled, doc.updated_at)
        });
    }

    #[test]
    fn a_dbreplic_document_round_trips() {
        let sink = |state, last_error: Option<&str>| SinkStatus {
            destination: "reporting@127.0.0.1:5433/xc".into(),
            last_id: 42,
            behind: Some(3),
            caught_up_at: Some(at("2026-11-25T10:59:00Z")),
            last_error: last_error.map(str::to_owned),
            last_error_at: last_error.map(|_| at("2026-11-25T11:00:00Z")),
            state,
            holes_waiting: 1,
            hole_after: Some(41),
            hole_transactions: 2,
            hole_since: Some(at("2026-11-25T11:01:00Z")),
            holes_passed: 4,
            recovered: 5,
            last_reconcile_at: Some(at("2026-11-25T11:02:00Z")),
        };
        let doc = DbReplicDoc {
            summary: "HA mode (xivo1): cel → ...".into(),
            mode: DbReplicMode::Ha,
            origin: "xivo1".into(),
            tables: [(
                "cel".to_owned(),
                [
                    ("postgresql".to_owned(), sink(SinkState::Ok, None)),
                    (
                        "elasticsearch".to_owned(),
                        sink(SinkState::Retrying, Some("503")),
                    ),
                ]
                .into(),
            )]
            .into(),
            config_tables: Some(ConfigStatus {
                tables: vec!["agentfeatures".into()],
                last_refresh: Some(at("2026-11-25T11:00:00Z")),
                rows: 12,
                last_error: None,
            }),
            updated_at: Some(at("2026-11-25T11:00:01Z")),
        };
        let json = round_trip(&doc);
        assert_eq!(json["mode"], "HA mode");
        assert_eq!(json["tables"]["cel"]["elasticsearch"]["state"], "retrying");
        round_trip(&DbReplicDoc {
            mode: DbReplicMode::Normal,
            config_tables: None,
            ..doc
        });
    }

    #[test]
    fn a_document_of_the_previous_shape_is_refused_not_misread() {
        // The previous replication document: `result`, no `ok`.
        let old = r#"{"summary": "s", "result": "ok", "started_at": "2026-11-25T11:00:00Z",
            "seconds": 1.0, "slave": "x", "tables_copied": 1, "tables_unchanged": 0,
            "rows_copied": 1, "bytes_copied": 1, "copied": ["t"], "error": null}"#;
        assert!(serde_json::from_str::<ReplicationDoc>(old).is_err());
    }

    #[test]
    fn documents_are_keyed_by_component_name() {
        assert_eq!(
            serde_json::to_value(Documents::default()).unwrap(),
            serde_json::json!({})
        );
        let docs = Documents {
            sync_back: Some(SyncDoc {
                summary: "back".into(),
                started_at: at("2026-11-25T11:00:00Z"),
                seconds: 1.0,
                ok: true,
                error: None,
                last_success_at: None,
                details: SyncDetails::default(),
            }),
            ..Documents::default()
        };
        let json = serde_json::to_value(&docs).unwrap();
        assert_eq!(json["sync-back"]["summary"], "back");
        assert_eq!(docs.summaries(), vec![(Component::SyncBack, "back")]);
        let names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            names, sorted,
            "ALL is in name order, as `status` lists them"
        );
        assert_eq!(Component::DbReplic.file_name(), "dbreplic.json");
    }
}
