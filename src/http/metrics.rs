//! `GET /metrics`: the state documents turned into Prometheus metrics with prometheus-client,
//! built anew at each scrape. The documents are the single source: the monitor's verdict and
//! counters, the replication's and sync's last runs, DB Replic's per-table, per-sink progress.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::Heartbeat;
use crate::paths::Paths;
use crate::state;

type Labels = Vec<(String, String)>;

fn float_gauge() -> Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>> {
    Family::default()
}

fn int(value: &Value, pointer: &str) -> Option<u64> {
    value.pointer(pointer).and_then(Value::as_u64)
}

fn time(value: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    value.pointer(pointer)?.as_str()?.parse().ok()
}

/// The text exposition of every metric, from the state documents under `paths`.
pub fn render(paths: &Paths, heartbeat: &Heartbeat) -> String {
    render_from(&state::load_all(paths), heartbeat, Utc::now())
}

/// Same, from documents already loaded (unit tests give their own).
pub fn render_from(
    components: &BTreeMap<String, Value>,
    heartbeat: &Heartbeat,
    now: DateTime<Utc>,
) -> String {
    let mut registry = Registry::with_prefix("xivo_ha");

    let loop_silence = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    loop_silence.set(heartbeat.silence_ms() as f64 / 1000.0);
    registry.register(
        "monitor_loop_silence_seconds",
        "Seconds since the monitor's loop last ran a round",
        loop_silence,
    );

    if let Some(monitor) = components.get("monitor") {
        if let Some(verdict) = monitor
            .get("verdict")
            .and_then(Value::as_str)
            .filter(|v| *v != "unknown")
        {
            let up = Gauge::<i64>::default();
            up.set(i64::from(verdict == "up"));
            registry.register(
                "master_up",
                "1 while the slave sees the master up, 0 while it is down",
                up,
            );
        }
        let to_down = int(monitor, "/counters/to_down").unwrap_or(0);
        let to_up = int(monitor, "/counters/to_up").unwrap_or(0);
        let changes = Counter::<u64>::default();
        changes.inc_by(to_down + to_up);
        registry.register(
            "verdict_changes",
            "Changes of the master's verdict since the monitor started",
            changes,
        );
        let failovers = Counter::<u64>::default();
        failovers.inc_by(to_down);
        registry.register(
            "failovers",
            "Failovers (master declared down) since the monitor started",
            failovers,
        );
        let rounds: Family<Labels, Counter> = Family::default();
        for result in ["good", "sip_dead", "host_down"] {
            if let Some(n) = int(monitor, &format!("/counters/{result}")) {
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
        docker_errors.inc_by(int(monitor, "/services/errors").unwrap_or(0));
        registry.register(
            "docker_api_errors",
            "Docker API errors since the monitor started",
            docker_errors,
        );
    }

    let since_success = float_gauge();
    let duration = float_gauge();
    let jobs = [
        ("replication", "/seconds", 1.0),
        ("sync", "/duration_ms", 0.001),
    ];
    for (job, duration_pointer, scale) in jobs {
        let Some(doc) = components.get(job) else {
            continue;
        };
        let labels = vec![("job".to_owned(), job.to_owned())];
        if let Some(at) = time(doc, "/last_success_at") {
            since_success
                .get_or_create(&labels)
                .set((now - at).num_milliseconds() as f64 / 1000.0);
        }
        if let Some(seconds) = doc.pointer(duration_pointer).and_then(Value::as_f64) {
            duration.get_or_create(&labels).set(seconds * scale);
        }
    }
    registry.register(
        "last_success_age_seconds",
        "Seconds since the job's last successful run (replication, sync)",
        since_success,
    );
    registry.register(
        "last_run_duration_seconds",
        "Duration of the job's last run",
        duration,
    );

    if let Some(tables) = components
        .get("dbreplic")
        .and_then(|d| d.get("tables"))
        .and_then(Value::as_object)
    {
        let last_id: Family<Labels, Gauge> = Family::default();
        let behind: Family<Labels, Gauge> = Family::default();
        for (table, sinks) in tables {
            for (sink, status) in sinks.as_object().into_iter().flatten() {
                let labels = vec![
                    ("table".to_owned(), table.clone()),
                    ("sink".to_owned(), sink.clone()),
                ];
                if let Some(id) = status.get("last_id").and_then(Value::as_i64) {
                    last_id.get_or_create(&labels).set(id);
                }
                if let Some(rows) = status.get("behind").and_then(Value::as_i64) {
                    behind.get_or_create(&labels).set(rows);
                }
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
    }

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn documents_become_metrics() {
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        let mut components = BTreeMap::new();
        components.insert(
            "monitor".to_owned(),
            json!({"verdict": "down", "counters": {"to_down": 2, "to_up": 1, "good": 10, "sip_dead": 3, "host_down": 4},
                   "services": {"errors": 5}}),
        );
        components.insert(
            "replication".to_owned(),
            json!({"result": "failed", "seconds": 1.5, "last_success_at": "2026-11-25T11:00:00Z"}),
        );
        components.insert(
            "sync".to_owned(),
            json!({"ok": true, "duration_ms": 2500, "last_success_at": "2026-11-25T11:59:00Z"}),
        );
        components.insert(
            "dbreplic".to_owned(),
            json!({"tables": {"cel": {"postgresql": {"last_id": 42, "behind": 3}, "elasticsearch": {"last_id": 40, "behind": 5}}}}),
        );
        let text = render_from(
            &components,
            &Heartbeat::new(std::time::Duration::from_secs(5)),
            now,
        );
        assert_eq!(
            line(&text, "xivo_ha_master_up "),
            Some("xivo_ha_master_up 0"),
            "{text}"
        );
        assert_eq!(
            line(&text, "xivo_ha_failovers_total"),
            Some("xivo_ha_failovers_total 2")
        );
        assert_eq!(
            line(&text, "xivo_ha_verdict_changes_total"),
            Some("xivo_ha_verdict_changes_total 3")
        );
        assert_eq!(
            line(&text, "xivo_ha_docker_api_errors_total"),
            Some("xivo_ha_docker_api_errors_total 5")
        );
        assert!(
            text.contains("xivo_ha_probe_rounds_total{result=\"host_down\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("xivo_ha_last_success_age_seconds{job=\"replication\"} 3600.0"),
            "{text}"
        );
        assert!(
            text.contains("xivo_ha_last_success_age_seconds{job=\"sync\"} 60.0"),
            "{text}"
        );
        assert!(
            text.contains("xivo_ha_last_run_duration_seconds{job=\"sync\"} 2.5"),
            "{text}"
        );
        assert!(
            text.contains("xivo_ha_dbreplic_rows_behind{table=\"cel\",sink=\"elasticsearch\"} 5"),
            "{text}"
        );
        assert!(
            text.contains(
                "xivo_ha_dbreplic_last_delivered_id{table=\"cel\",sink=\"postgresql\"} 42"
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
        let mut components = BTreeMap::new();
        components.insert("monitor".to_owned(), json!({"verdict": "unknown"}));
        let text = render_from(
            &components,
            &Heartbeat::new(std::time::Duration::from_secs(5)),
            Utc::now(),
        );
        assert!(line(&text, "xivo_ha_master_up").is_none(), "{text}");
    }
}
