//! `GET /metrics`: the state documents turned into Prometheus metrics with prometheus-client,
//! built anew at each scrape. The documents are the single source: the monitor's verdict and
//! counters, the replication's and sync's last runs, DB Replic's per-table, per-sink progress.
//! One function per document registers its metrics, reading the writers' own types
//! ([`crate::status::documents`]).

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Heartbeat;
use crate::ha::NodeType;
use crate::monitor::peer::PeerState;
use crate::monitor::verdict::Verdict;
use crate::paths::Paths;
use crate::status::documents::{Component, DbReplicDoc, Documents, MonitorDoc};
use crate::status::store;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The text exposition of every metric, from the state documents under `paths`.
pub fn render(paths: &Paths, heartbeat: &Heartbeat) -> String {
    render_from(&store::load_all(paths), heartbeat, Utc::now())
}

/// Same, from documents already loaded (unit tests give their own).
pub fn render_from(docs: &Documents, heartbeat: &Heartbeat, now: DateTime<Utc>) -> String {
    let mut registry = Registry::with_prefix("xivo_ha");
    register_heartbeat(&mut registry, heartbeat);
    if let Some(monitor) = &docs.monitor {
        register_monitor(&mut registry, monitor);
        register_master(&mut registry, monitor, now);
    }
    register_jobs(&mut registry, docs, now);
    if let Some(replication) = &docs.replication {
        register_slave_changes(&mut registry, &replication.details);
    }
    if let Some(dbreplic) = &docs.dbreplic {
        register_dbreplic(&mut registry, dbreplic);
    }
    register_operations(&mut registry, docs, now);
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

/// The monitor loop's silence (from the live heartbeat, not from a document).
fn register_heartbeat(registry: &mut Registry, heartbeat: &Heartbeat) {
    let loop_silence = FloatGauge::default();
    loop_silence.set(heartbeat.silence_ms() as f64 / 1000.0);
    registry.register(
        "monitor_loop_silence_seconds",
        "Seconds since the monitor's loop last ran a round",
        loop_silence,
    );
}

/// The master's verdict (once decided), verdict changes, probe rounds, Docker errors.
fn register_monitor(registry: &mut Registry, monitor: &MonitorDoc) {
    if let Some(verdict) = monitor.verdict.filter(|v| *v != Verdict::Unknown) {
        let up = Gauge::<i64>::default();
        up.set(i64::from(verdict == Verdict::Up));
        registry.register(
            "master_up",
            "1 while the slave sees the master up, 0 while it is down",
            up,
        );
    }
    let config_error = Gauge::<i64>::default();
    config_error.set(i64::from(
        monitor.config_error.is_some() || monitor.peer_refused.is_some(),
    ));
    registry.register(
        "config_error",
        "1 while the monitor does not follow ha.conf (unreadable: previous settings kept; a refused peer: nothing done); status says why",
        config_error,
    );
    if monitor.node_type == NodeType::Slave {
        let isolated = Gauge::<i64>::default();
        isolated.set(i64::from(monitor.isolated.is_some()));
        registry.register(
            "isolated",
            "1 while the slave sees the master down but no witness answers: cut off, it does not take over",
            isolated,
        );
    }
    if let Some(services) = &monitor.services {
        let draining = Gauge::<i64>::default();
        draining.set(i64::from(services.draining.is_some()));
        registry.register(
            "draining",
            "1 while a failback lets the slave's calls finish before stopping its Asterisk",
            draining,
        );
        if let Some(calls) = services.draining.as_ref().and_then(|d| d.calls) {
            let active = Gauge::<i64>::default();
            active.set(i64::try_from(calls).unwrap_or(i64::MAX));
            registry.register(
                "drain_active_calls",
                "Calls still active on the draining slave (core show channels count)",
                active,
            );
        }
    }
    let counters = monitor.counters.unwrap_or_default();
    let changes = Counter::<u64>::default();
    changes.inc_by(counters.to_down + counters.to_up);
    registry.register(
        "verdict_changes",
        "Changes of the master's verdict since the monitor started",
        changes,
    );
    let failovers = Counter::<u64>::default();
    failovers.inc_by(counters.to_down);
    registry.register(
        "failovers",
        "Failovers (master declared down) since the monitor started",
        failovers,
    );
    let rounds: Family<Labels, Counter> = Family::default();
    if let Some(c) = &monitor.counters {
        for (result, n) in [
            ("good", c.good),
            ("sip_dead", c.sip_dead),
            ("host_down", c.host_down),
        ] {
            rounds
                .get_or_create(&vec![("result".into(), result.into())])
                .inc_by(n);
        }
    }
    registry.register(
        "probe_rounds",
        "Probe rounds of the master by result",
        rounds,
    );
    let docker_errors = Counter::<u64>::default();
    docker_errors.inc_by(monitor.services.as_ref().map_or(0, |s| s.errors));
    registry.register(
        "docker_api_errors",
        "Docker API errors since the monitor started",
        docker_errors,
    );
    let start_failures = Counter::<u64>::default();
    start_failures.inc_by(monitor.services.as_ref().map_or(0, |s| s.start_failures));
    registry.register(
        "service_start_failures",
        "Slave service containers found stopped right after their start, since the monitor started",
        start_failures,
    );
}

/// On a master: whether its slave serves, and the slave's configuration lag.
fn register_master(registry: &mut Registry, monitor: &MonitorDoc, now: DateTime<Utc>) {
    if let Some(peer) = monitor
        .peer
        .as_ref()
        .filter(|p| p.state != PeerState::Unknown)
    {
        let active = Gauge::<i64>::default();
        active.set(i64::from(peer.state == PeerState::Active));
        registry.register(
            "peer_active",
            "On a master: 1 while its slave serves calls (its SIP answers), 0 while it stands by",
            active,
        );
    }
    if let Some(at) = monitor.replicated_at {
        let lag = FloatGauge::default();
        lag.set((now - at).num_milliseconds().max(0) as f64 / 1000.0);
        registry.register(
            "config_lag_seconds",
            "On a master: age of the master configuration the slave last received (seconds since the start of the last successful replication)",
            lag,
        );
    }
}

/// The replication's and the sync's last runs: age of the last success, duration.
fn register_jobs(registry: &mut Registry, docs: &Documents, now: DateTime<Utc>) {
    let since_success = Family::<Labels, FloatGauge>::default();
    let duration = Family::<Labels, FloatGauge>::default();
    let jobs = [
        (
            Component::Replication,
            docs.replication
                .as_ref()
                .map(|r| (r.last_success_at, r.seconds)),
        ),
        (
            Component::Sync,
            docs.sync.as_ref().map(|s| (s.last_success_at, s.seconds)),
        ),
        (
            Component::SyncBack,
            docs.sync_back
                .as_ref()
                .map(|s| (s.last_success_at, s.seconds)),
        ),
    ];
    for (job, run) in jobs {
        let Some((last_success_at, seconds)) = run else {
            continue;
        };
        let labels = vec![("job".to_owned(), job.name().to_owned())];
        if let Some(at) = last_success_at {
            since_success
                .get_or_create(&labels)
                .set((now - at).num_milliseconds() as f64 / 1000.0);
        }
        duration.get_or_create(&labels).set(seconds);
    }
    registry.register(
        "last_success_age_seconds",
        "Seconds since the job's last successful run (replication, sync, sync-back: the copy-back)",
        since_success,
    );
    registry.register(
        "last_run_duration_seconds",
        "Duration of the job's last run",
        duration,
    );
    if let Some(back) = &docs.sync_back {
        let files = Gauge::<i64>::default();
        files.set(i64::try_from(back.details.files_transferred).unwrap_or(i64::MAX));
        registry.register(
            "copy_back_files",
            "Files the last copy-back (sync-back: at the failback, every hour, or sync --back) brought back from the slave",
            files,
        );
        let bytes = Gauge::<i64>::default();
        bytes.set(i64::try_from(back.details.bytes_transferred).unwrap_or(i64::MAX));
        registry.register(
            "copy_back_bytes",
            "Bytes of the files the last copy-back brought back from the slave",
            bytes,
        );
    }
}

/// What the last replication did with the slave's changes: user statuses merged back,
/// conflicts, tables overwritten.
fn register_slave_changes(
    registry: &mut Registry,
    details: &crate::status::documents::ReplicationDetails,
) {
    for (name, help, value) in [
        (
            "replication_merged_back",
            "User statuses the slave changed that the last replication merged back into the master",
            details.merged_back.len(),
        ),
        (
            "replication_merge_conflicts",
            "Values changed on both sides that the last replication found (the master's kept)",
            details.conflicts.len(),
        ),
        (
            "replication_slave_tables_overwritten",
            "Replicated tables the slave had changed that the last replication overwrote",
            details.slave_changes_overwritten.len(),
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(value as i64);
        registry.register(name, help, gauge);
    }
}

/// Maintenance mode (on until its deadline) and the alert mails that could not be sent.
fn register_operations(registry: &mut Registry, docs: &Documents, now: DateTime<Utc>) {
    let on = Gauge::<i64>::default();
    on.set(i64::from(
        docs.maintenance.as_ref().is_some_and(|m| m.is_on(now)),
    ));
    registry.register(
        "maintenance",
        "1 while maintenance mode is on: the monitor leaves the services and hourly jobs alone",
        on,
    );
    if let Some(alerts) = &docs.alerts {
        let failed = Counter::<u64>::default();
        failed.inc_by(alerts.mails_failed);
        registry.register(
            "alert_mails_failed",
            "Alert mails that could not be sent",
            failed,
        );
        let sent = Counter::<u64>::default();
        sent.inc_by(alerts.mails_sent);
        registry.register("alert_mails_sent", "Alert mails sent", sent);
    }
}

/// DB Replic's delivered id, rows behind, holes waited on and rows recovered, per table and
/// sink.
fn register_dbreplic(registry: &mut Registry, dbreplic: &DbReplicDoc) {
    let last_id: Family<Labels, Gauge> = Family::default();
    let behind: Family<Labels, Gauge> = Family::default();
    let holes: Family<Labels, Gauge> = Family::default();
    let passed: Family<Labels, Counter> = Family::default();
    let recovered: Family<Labels, Counter> = Family::default();
    for (table, sinks) in &dbreplic.tables {
        for (sink, status) in sinks {
            let labels = vec![
                ("table".to_owned(), table.clone()),
                ("sink".to_owned(), sink.clone()),
            ];
            last_id.get_or_create(&labels).set(status.last_id);
            if let Some(rows) = status.behind {
                behind.get_or_create(&labels).set(rows);
            }
            holes
                .get_or_create(&labels)
                .set(status.holes_waiting as i64);
            passed.get_or_create(&labels).inc_by(status.holes_passed);
            recovered.get_or_create(&labels).inc_by(status.recovered);
        }
    }
    registry.register(
        "dbreplic_last_delivered_id",
        "Highest id delivered (durably) per table and sink",
        last_id,
    );
    registry.register(
        "dbreplic_rows_behind",
        "Rows of the source not yet delivered, per table and sink",
        behind,
    );
    registry.register(
        "dbreplic_holes_waiting",
        "Holes in the ids that delivery waits on (a transaction that may fill them is open)",
        holes,
    );
    registry.register(
        "dbreplic_holes_passed",
        "Holes in the ids found permanent and passed since DB Replic started",
        passed,
    );
    registry.register(
        "dbreplic_rows_recovered",
        "Rows the reconciliation pass found missing in the sink and delivered, since DB Replic started",
        recovered,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::NodeType;
    use crate::monitor::services::KeeperStatus;
    use crate::monitor::verdict::Counters;
    use crate::status::documents::{JobRecord, ReplicationDetails, SinkStatus, SyncDetails};

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    /// The value of the unlabelled metric `name`.
    fn value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
    }

    fn monitor(verdict: Verdict) -> MonitorDoc {
        MonitorDoc {
            verdict: Some(verdict),
            ..MonitorDoc::bare(NodeType::Slave, Utc::now())
        }
    }

    fn job<D>(ok: bool, seconds: f64, last_success_at: &str, details: D) -> JobRecord<D> {
        JobRecord {
            summary: String::new(),
            started_at: "2026-11-25T11:59:00Z".parse().unwrap(),
            seconds,
            ok,
            error: None,
            last_success_at: Some(last_success_at.parse().unwrap()),
            details,
        }
    }

    fn sink(last_id: i64, behind: i64) -> SinkStatus {
        SinkStatus {
            last_id,
            behind: Some(behind),
            ..SinkStatus::default()
        }
    }

    #[test]
    fn maintenance_shows_until_its_deadline_and_failed_mails_are_counted() {
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        let heartbeat = Heartbeat::new(std::time::Duration::from_secs(5));
        let text = render_from(&Documents::default(), &heartbeat, now);
        assert_eq!(
            line(&text, "xivo_ha_maintenance "),
            Some("xivo_ha_maintenance 0")
        );
        let doc = crate::maintenance::new_doc(
            "upgrade",
            "root@xivo1",
            now - chrono::Duration::minutes(10),
            std::time::Duration::from_secs(3600),
        );
        let docs = Documents {
            maintenance: Some(doc),
            alerts: Some(crate::status::documents::AlertsDoc {
                mails_failed: 2,
                mails_sent: 1,
                ..Default::default()
            }),
            ..Documents::default()
        };
        let text = render_from(&docs, &heartbeat, now);
        assert_eq!(
            line(&text, "xivo_ha_maintenance "),
            Some("xivo_ha_maintenance 1"),
            "{text}"
        );
        assert_eq!(
            line(&text, "xivo_ha_alert_mails_failed_total"),
            Some("xivo_ha_alert_mails_failed_total 2")
        );
        let later = now + chrono::Duration::hours(1);
        let text = render_from(&docs, &heartbeat, later);
        assert_eq!(
            line(&text, "xivo_ha_maintenance "),
            Some("xivo_ha_maintenance 0"),
            "past its deadline"
        );
    }

    #[test]
    fn documents_become_metrics() {
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        let mut components = Documents {
            monitor: Some(MonitorDoc {
                counters: Some(Counters {
                    to_down: 2,
                    to_up: 1,
                    good: 10,
                    sip_dead: 3,
                    host_down: 4,
                    ..Counters::default()
                }),
                services: Some(KeeperStatus {
                    errors: 5,
                    start_failures: 2,
                    draining: Some(crate::monitor::drain::DrainStatus {
                        containers: vec!["asterisk".into()],
                        since: now,
                        calls: Some(3),
                        max_s: 1800,
                    }),
                    ..KeeperStatus::default()
                }),
                isolated: Some(crate::status::documents::IsolationRecord {
                    since: now,
                    witnesses: "192.0.2.1 (icmp) no answer".into(),
                }),
                ..monitor(Verdict::Down)
            }),
            replication: Some(job(
                false,
                1.5,
                "2026-11-25T11:00:00Z",
                ReplicationDetails {
                    merged_back: vec![Default::default(); 2],
                    slave_changes_overwritten: vec![Default::default()],
                    ..ReplicationDetails::default()
                },
            )),
            sync: Some(job(
                true,
                2.5,
                "2026-11-25T11:59:00Z",
                SyncDetails::default(),
            )),
            sync_back: Some(job(
                true,
                0.5,
                "2026-11-25T11:58:00Z",
                SyncDetails {
                    files_transferred: 2,
                    bytes_transferred: 30,
                    ..SyncDetails::default()
                },
            )),
            ..Documents::default()
        };
        let mut dbreplic = DbReplicDoc::default();
        dbreplic.tables.insert(
            "cel".into(),
            [
                (
                    "postgresql".to_owned(),
                    SinkStatus {
                        holes_waiting: 2,
                        recovered: 7,
                        ..sink(42, 3)
                    },
                ),
                ("elasticsearch".to_owned(), sink(40, 5)),
            ]
            .into(),
        );
        components.dbreplic = Some(dbreplic);
        let text = render_from(
            &components,
            &Heartbeat::new(std::time::Duration::from_secs(5)),
            now,
        );
        for (name, want) in [
            ("xivo_ha_master_up", "0"),
            ("xivo_ha_failovers_total", "2"),
            ("xivo_ha_isolated", "1"),
            ("xivo_ha_copy_back_files", "2"),
            ("xivo_ha_copy_back_bytes", "30"),
            ("xivo_ha_replication_merged_back", "2"),
            ("xivo_ha_replication_merge_conflicts", "0"),
            ("xivo_ha_replication_slave_tables_overwritten", "1"),
            ("xivo_ha_draining", "1"),
            ("xivo_ha_drain_active_calls", "3"),
            ("xivo_ha_verdict_changes_total", "3"),
            ("xivo_ha_docker_api_errors_total", "5"),
            ("xivo_ha_service_start_failures_total", "2"),
            ("xivo_ha_config_error", "0"),
        ] {
            assert_eq!(value(&text, name), Some(want), "{name}: {text}");
        }
        for want in [
            "xivo_ha_last_run_duration_seconds{job=\"sync-back\"} 0.5",
            "xivo_ha_probe_rounds_total{result=\"host_down\"} 4",
            "xivo_ha_last_success_age_seconds{job=\"replication\"} 3600.0",
            "xivo_ha_last_success_age_seconds{job=\"sync\"} 60.0",
            "xivo_ha_last_run_duration_seconds{job=\"sync\"} 2.5",
            "xivo_ha_dbreplic_rows_behind{table=\"cel\",sink=\"elasticsearch\"} 5",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert!(
            text.contains(
                "xivo_ha_dbreplic_last_delivered_id{table=\"cel\",sink=\"postgresql\"} 42"
            ),
            "{text}"
        );
        assert!(
            text.contains("xivo_ha_dbreplic_holes_waiting{table=\"cel\",sink=\"postgresql\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "xivo_ha_dbreplic_rows_recovered_total{table=\"cel\",sink=\"postgresql\"} 7"
            ),
            "{text}"
        );
        assert!(
            text.trim_end().ends_with("# EOF"),
            "OpenMetrics ends with # EOF"
        );
    }

    #[test]
    fn an_undecided_verdict_is_not_a_master_down() {
        let components = Documents {
            monitor: Some(monitor(Verdict::Unknown)),
            ..Documents::default()
        };
        let text = render_from(
            &components,
            &Heartbeat::new(std::time::Duration::from_secs(5)),
            Utc::now(),
        );
        assert!(line(&text, "xivo_ha_master_up").is_none(), "{text}");
        assert_eq!(line(&text, "xivo_ha_isolated "), Some("xivo_ha_isolated 0"));
    }

    #[test]
    fn a_refused_peer_is_a_config_error() {
        let components = Documents {
            monitor: Some(MonitorDoc {
                peer_refused: Some("ha.conf: 127.0.0.1 is not usable".into()),
                ..MonitorDoc::bare(NodeType::Slave, Utc::now())
            }),
            ..Documents::default()
        };
        let text = render_from(
            &components,
            &Heartbeat::new(std::time::Duration::from_secs(5)),
            Utc::now(),
        );
        assert_eq!(
            line(&text, "xivo_ha_config_error "),
            Some("xivo_ha_config_error 1"),
            "{text}"
        );
    }

    #[test]
    fn a_master_shows_its_slaves_state_and_configuration_lag() {
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        let peer = |state| crate::monitor::peer::PeerStatus {
            address: "127.0.0.1".parse().unwrap(),
            state,
            since: None,
            last_answer_at: None,
            last_silence_at: None,
            reachable: true,
            failbacks: 0,
        };
        let master = |state| Documents {
            monitor: Some(MonitorDoc {
                peer: Some(peer(state)),
                replicated_at: Some("2026-11-25T11:59:20Z".parse().unwrap()),
                ..MonitorDoc::bare(NodeType::Master, now)
            }),
            ..Documents::default()
        };
        let heartbeat = Heartbeat::new(std::time::Duration::from_secs(5));
        let text = render_from(&master(PeerState::Active), &heartbeat, now);
        assert_eq!(
            line(&text, "xivo_ha_peer_active "),
            Some("xivo_ha_peer_active 1"),
            "{text}"
        );
        assert_eq!(
            line(&text, "xivo_ha_config_lag_seconds "),
            Some("xivo_ha_config_lag_seconds 40.0"),
            "{text}"
        );
        let text = render_from(&master(PeerState::Standby), &heartbeat, now);
        assert_eq!(
            line(&text, "xivo_ha_peer_active "),
            Some("xivo_ha_peer_active 0")
        );
        let text = render_from(&master(PeerState::Unknown), &heartbeat, now);
        assert!(line(&text, "xivo_ha_peer_active").is_none(), "{text}");
    }
}
