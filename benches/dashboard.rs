//! `cargo bench --bench dashboard`: how long the monitor's `GET /` takes with a full page: a
//! slave serving, 10 minutes of 300 ms rounds in the timeline with a path silent every 7th
//! round and the witness asked (as many runs as the log keeps), 20 verdict changes, DB Replic
//! with 12 tables × 2 sinks, a replication and a sync, 4 failing alerts and 10 mails, a doctor's
//! report with failed checks; over real HTTP on loopback (the documents read from disk on each
//! request, as the endpoint does), and the rendering alone. The claim: under 50 ms.
//!
//! Prints `name=value` lines; the last one is the summary.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use xivo_ha::http::{self, Heartbeat};
use xivo_ha::monitor::rounds::{Mark, RoundLog};
use xivo_ha::monitor::verdict::Observation;
use xivo_ha::paths::Paths;
use xivo_ha::status::Status;

const REQUESTS: usize = 300;
const CLAIM_MS: f64 = 50.0;

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn write(paths: &Paths, name: &str, doc: serde_json::Value) {
    let dir = paths.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

/// A serving slave's documents, as full as they get.
fn node(paths: &Paths) {
    let now = Utc::now();
    std::fs::create_dir_all(paths.ha_conf().parent().unwrap()).unwrap();
    std::fs::write(
        paths.ha_conf(),
        r#"{"node_type": "slave", "remote_address": "192.0.2.10"}"#,
    )
    .unwrap();
    let transitions: Vec<_> = (0..20)
        .map(|i| {
            let (from, to) = if i % 2 == 0 { ("up", "down") } else { ("down", "up") };
            json!({"from": from, "to": to, "at": now - chrono::Duration::seconds(30 * (20 - i)),
                "reason": "3 consecutive bad rounds (3 rounds host down)",
                "evidence": "icmp no answer within 500 ms (no answer); tcp no answer within 500 ms; sip no answer"})
        })
        .collect();
    let path =
        |answered: bool| json!({"answered": answered, "rtt_ms": null, "detail": "no answer"});
    write(
        paths,
        "monitor.json",
        json!({
            "summary": "master 192.0.2.10 down", "node_type": "slave", "master": "192.0.2.10",
            "verdict": "down", "since": now, "last_transition": transitions.last().unwrap(),
            "transitions": transitions,
            "last_round": {"icmp": path(false), "tcp": path(false), "sip": path(false)},
            "counters": {"rounds": 5000, "good": 4000, "sip_dead": 10, "host_down": 990,
                "icmp_silent": 1000, "tcp_silent": 1000, "to_down": 10, "to_up": 10},
            "services": {"desired": "running", "settled": true, "errors": 0,
                "containers": (0..4).map(|i| json!({"name": format!("service{i}"), "state": "running",
                    "restart_policy": "no"})).collect::<Vec<_>>()},
            "updated_at": now,
        }),
    );
    let sink = |i: i64| {
        json!({"destination": "reporting@127.0.0.1:5433/xc", "last_id": 1000 * i,
        "behind": i, "last_error": "503 Service Unavailable", "last_error_at": now, "state": "retrying"})
    };
    let tables: serde_json::Map<String, serde_json::Value> = (0..12)
        .map(|i| {
            (
                format!("table{i}"),
                json!({"postgresql": sink(i), "elasticsearch": sink(i + 1)}),
            )
        })
        .collect();
    write(
        paths,
        "dbreplic.json",
        json!({"summary": "HA mode", "mode": "HA mode",
        "origin": "xivo1", "tables": tables, "config_tables": null, "updated_at": now}),
    );
    write(
        paths,
        "replication.json",
        json!({"summary": "ok", "started_at": now, "seconds": 1.5,
        "ok": true, "error": null, "last_success_at": now, "slave": "asterisk@192.0.2.20:5432/asterisk",
        "tables_copied": 3, "tables_unchanged": 40, "rows_copied": 1200, "bytes_copied": 90000,
        "copied": ["userfeatures"]}),
    );
    let mail = |i: i64| {
        json!({"at": now - chrono::Duration::minutes(10 * i),
        "subject": "Slave replication failed", "error": (i % 2 == 0).then_some("550 refused")})
    };
    let entry = |kind: &str| {
        json!({"kind": kind, "failing_since": now, "reason": "connection refused",
        "mailed": true, "last_mail_at": now, "held_back": 3})
    };
    write(
        paths,
        "alerts.json",
        json!({"summary": "mail to root via smtp://127.0.0.1:25", "mails_sent": 5, "mails_failed": 5,
            "entries": {"replication": entry("replication"), "sync": entry("sync"),
                "failover": entry("failover"), "dbreplic-sink:cel -> postgresql": entry("dbreplic-sink")},
            "last_mail": mail(0), "last_failure": mail(0),
            "recent": (0..10).rev().map(mail).collect::<Vec<_>>(), "updated_at": now}),
    );
    let finding = |i: usize| {
        let level = ["ok", "warning", "failed"][i % 3];
        json!({"check": format!("check-{i}"),
        "level": level, "found": "what the check found, in a sentence",
        "fix": "what to do about it, in another sentence"})
    };
    write(
        paths,
        "doctor.json",
        json!({"summary": "12 checks", "ran_at": now, "node_type": "slave",
            "findings": (0..12).map(finding).collect::<Vec<_>>()}),
    );
    write(
        paths,
        "sync.json",
        json!({"summary": "ok", "started_at": now, "seconds": 2.5, "ok": true,
        "error": null, "last_success_at": now, "remote": "root@192.0.2.20", "files_transferred": 12,
        "bytes_transferred": 5000, "files_deleted": 0, "skipped": []}),
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path());
    node(&paths);
    let rounds = RoundLog::default();
    const ROUND_MS: i64 = 300;
    let count = 600_000 / ROUND_MS;
    let start = Utc::now() - chrono::Duration::milliseconds(count * ROUND_MS);
    for i in 0..count {
        let up = i % 7 != 0;
        rounds.push(Mark::of(
            start + chrono::Duration::milliseconds(i * ROUND_MS),
            Observation {
                icmp: up,
                tcp: up,
                sip: up && i < count / 2,
            },
            (i >= count / 2).then_some(i % 3 != 0),
        ));
    }

    // The rendering alone (documents read once).
    let status = Status::gather(&paths).unwrap();
    let runs = rounds.snapshot();
    let mut render_ms = Vec::new();
    let mut page = String::new();
    for _ in 0..REQUESTS {
        let t = Instant::now();
        page = http::dashboard::render(&status, &runs, Utc::now());
        render_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let bytes = page.len();
    let svg = page.find("<svg").zip(page.find("</svg>"));
    let timeline_bytes = svg.map_or(0, |(a, b)| b + 6 - a);

    // Over HTTP, as a browser gets it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http_ms: Vec<f64> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let cancel = tokio_util::sync::CancellationToken::new();
        let stopped = cancel.clone();
        let server = tokio::spawn(http::serve(
            listener,
            paths.clone(),
            Heartbeat::new(Duration::from_secs(5)),
            rounds.clone(),
            async move { stopped.cancelled().await },
        ));
        let client = reqwest::Client::new();
        let mut times = Vec::new();
        for _ in 0..REQUESTS {
            let t = Instant::now();
            let page = client.get(&url).send().await.unwrap().text().await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(page.contains("SERVING"), "{page}");
        }
        cancel.cancel();
        server.await.unwrap().unwrap();
        times
    });

    println!("requests={REQUESTS}");
    println!("runs={}", runs.len());
    println!("page_bytes={bytes}");
    println!("timeline_bytes={timeline_bytes}");
    println!("render_p50_ms={:.2}", percentile(&render_ms, 0.5));
    println!("render_p99_ms={:.2}", percentile(&render_ms, 0.99));
    println!("http_p50_ms={:.2}", percentile(&http_ms, 0.5));
    println!("http_p99_ms={:.2}", percentile(&http_ms, 0.99));
    let max = http_ms.iter().cloned().fold(0.0, f64::max);
    println!("http_max_ms={max:.2}");
    let p99 = percentile(&http_ms, 0.99);
    println!(
        "summary=GET / of a full page ({bytes} bytes) p99 {p99:.2} ms, max {max:.2} ms over {REQUESTS} requests: {} the {CLAIM_MS} ms claim",
        if p99 < CLAIM_MS { "within" } else { "OVER" }
    );
}
