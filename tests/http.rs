//! The monitor's HTTP endpoint over real HTTP: `xivo-ha monitor` runs as a process, and the
//! figures of `/metrics` and the JSON of `/status` follow a real failover (Docker lab) and a
//! real replication (PostgreSQL).

mod common;

use std::path::Path;
use std::time::Duration;

use common::docker_lab::docker;
use common::monitor_process::{MonitorProcess, free_port, start_monitored_slave_lab};
use common::*;

/// Waits until the monitor on `root` has written its state document.
async fn wait_state_recorded(root: &Path) {
    let state = root.join("var/lib/xivo-ha/monitor.json");
    wait_for(
        "the monitor to record its state",
        Duration::from_secs(10),
        async || state.exists(),
    )
    .await;
}

/// A monitor on a node without HA (a temp root), its endpoint on a free loopback port.
async fn start_bare_monitor() -> (tempfile::TempDir, MonitorProcess) {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    write_custom_env(
        root.path(),
        &format!("XIVO_HA_HTTP_LISTEN=127.0.0.1:{port}\n"),
    );
    let monitor = MonitorProcess::start(root.path(), port);
    monitor.wait_healthy().await;
    (root, monitor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_follow_a_failover() {
    let (slave, monitor) = start_monitored_slave_lab().await;
    let (master, root) = (&slave.master, &slave.root);

    // Alive, and the master seen up.
    monitor
        .wait_metrics(&[
            ("xivo_ha_master_up 1", 10),
            ("xivo_ha_failovers_total 0", 1),
        ])
        .await;

    // /status is `status --json`.
    let (code, body) = monitor.get("/status").await.unwrap();
    assert_eq!(code, 200);
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    let output = xivo_ha(
        root.path(),
        "host=/nonexistent dbname=asterisk",
        &["status", "--json"],
    );
    assert_success(&output);
    let printed: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(served["node_type"], "slave");
    assert_eq!(served["node_type"], printed["node_type"]);
    assert_eq!(served["remote_address"], printed["remote_address"]);
    assert_eq!(
        served["components"]["monitor"]["verdict"],
        printed["components"]["monitor"]["verdict"]
    );

    // Failover, then failback.
    docker(&["stop", "-t", "0", master]);
    monitor
        .wait_metrics(&[
            ("xivo_ha_master_up 0", 10),
            ("xivo_ha_failovers_total 1", 2),
        ])
        .await;
    docker(&["start", master]);
    monitor
        .wait_metrics(&[
            ("xivo_ha_master_up 1", 15),
            ("xivo_ha_verdict_changes_total 3", 2),
        ])
        .await;
    let text = monitor.metrics().await;
    assert!(text.contains("xivo_ha_docker_api_errors_total 0"), "{text}");
}

#[tokio::test]
async fn metrics_follow_a_replication_and_healthz_stays_up_while_idle() {
    let master_db = TestDb::create().await;
    let slave_db = TestDb::create().await;
    slave_db.execute("DELETE FROM dialaction").await;
    let (root, monitor) = start_bare_monitor().await;
    assert!(!monitor.metrics().await.contains("job=\"replication\""));

    // 198.51.100.20 is data only (--target-db gives the slave): run in `unshare -n`.
    let replicate_to = |target: &str| {
        xivo_ha_isolated(
            root.path(),
            &master_db.socket_url(),
            &["db-replication", "198.51.100.20", "--target-db", target],
        )
    };
    assert_success(&replicate_to(&slave_db.socket_url()));
    let age = monitor
        .metric_value("xivo_ha_last_success_age_seconds{job=\"replication\"}")
        .await;
    assert!((0.0..60.0).contains(&age), "{age}");
    let text = monitor.metrics().await;
    assert!(
        text.contains("xivo_ha_last_run_duration_seconds{job=\"replication\"}"),
        "{text}"
    );

    // A failed run keeps the time of the last good one.
    let output = replicate_to("host=/nonexistent user=postgres dbname=x");
    assert!(!output.status.success());
    let (_, status) = monitor.get("/status").await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["components"]["replication"]["result"], "failed");
    assert!(
        monitor
            .metrics()
            .await
            .contains("xivo_ha_last_success_age_seconds{job=\"replication\"}")
    );
}

#[tokio::test]
async fn a_busy_port_does_not_stop_the_monitor() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let root = tempfile::tempdir().unwrap();
    write_custom_env(
        root.path(),
        &format!("XIVO_HA_HTTP_LISTEN=127.0.0.1:{port}\n"),
    );
    let mut monitor = MonitorProcess::start(root.path(), port);
    wait_state_recorded(root.path()).await;
    assert!(
        monitor.child.try_wait().unwrap().is_none(),
        "the monitor exited"
    );

    // A malformed address, by contrast, is a configuration error: nothing starts.
    write_custom_env(root.path(), "XIVO_HA_HTTP_LISTEN=localhost\n");
    let output = xivo_ha(
        root.path(),
        "host=/nonexistent dbname=asterisk",
        &["monitor"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert_refused(
        &output,
        "XIVO_HA_HTTP_LISTEN: `localhost` is not an address:port",
    );
}

/// ha.conf corrupted under a running monitor: `/status` gives the error and every
/// component's last state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_with_a_corrupt_ha_conf_shows_the_error_and_the_components() {
    let (root, monitor) = start_bare_monitor().await;
    wait_state_recorded(root.path()).await;
    std::fs::create_dir_all(root.path().join("etc/xivo")).unwrap();
    std::fs::write(root.path().join("etc/xivo/ha.conf"), "{\"node_type\": \n").unwrap();

    let (code, body) = monitor.get("/status").await.unwrap();
    assert_eq!(code, 500, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        status["error"].as_str().unwrap().contains("ha.conf:2:"),
        "{status}"
    );
    assert!(status["components"]["monitor"].is_object(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_db_replic_progress() {
    let sinks = common::dbreplic::Sinks::start().await;
    let source = &sinks.source;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::create_dir_all(root.path().join("var/lib/xivo")).unwrap();
    std::fs::write(root.path().join("var/lib/xivo/xc_enabled"), "").unwrap();
    write_custom_env(
        root.path(),
        &format!(
            "XIVO_HA_HTTP_LISTEN=127.0.0.1:{port}\n{}IS_HA_SLAVE=true\n\
             DB_REPLIC_ORIGIN=node-b\nDB_REPLIC_POLL_MS=100\n",
            sinks.env()
        ),
    );
    let monitor = MonitorProcess::start(root.path(), port);
    monitor.wait_healthy().await;

    // 200 CELs more than the fixture's one, then DB Replic until it has caught up.
    common::dbreplic::insert_cel(source, 200).await;
    let max_id: i32 = source.value("SELECT max(id) FROM cel").await;
    let root_path = root.path().to_owned();
    let url = source.url();
    let output = tokio::task::spawn_blocking(move || {
        xivo_ha(&root_path, &url, &["db-replic", "--exit-when-idle"])
    })
    .await
    .unwrap();
    assert_success(&output);
    for sink in ["postgresql", "elasticsearch"] {
        let labels = format!("{{table=\"cel\",sink=\"{sink}\"}}");
        let delivered = format!("xivo_ha_dbreplic_last_delivered_id{labels} {max_id}");
        let behind = format!("xivo_ha_dbreplic_rows_behind{labels} 0");
        monitor.wait_metrics(&[(&delivered, 5), (&behind, 5)]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_maintenance_a_stopped_master_is_not_taken_over_and_off_it_is() {
    let (slave, monitor) = start_monitored_slave_lab().await;
    let (master, root) = (&slave.master, slave.root());
    monitor
        .wait_metric("xivo_ha_master_up 1", Duration::from_secs(10))
        .await;
    tokio::task::block_in_place(|| slave.wait_services("exited", Duration::from_secs(10)));
    monitor
        .wait_metric("xivo_ha_maintenance 0", Duration::from_secs(1))
        .await;

    let output = xivo_ha(root, "", &["maintenance", "on", "--reason", "upgrade"]);
    assert_success(&output);
    let said = stdout(&output);
    assert!(said.contains("set it on the other node too"), "{said}");
    monitor
        .wait_metric("xivo_ha_maintenance 1", Duration::from_secs(2))
        .await;
    wait_for(
        "the monitor to see the maintenance",
        Duration::from_secs(10),
        async || monitor_summary(root).contains("MAINTENANCE until"),
    )
    .await;

    // The master goes: the slave sees it (verdict down) but leaves its services as they are.
    docker(&["stop", "-t", "0", master]);
    monitor
        .wait_metric("xivo_ha_master_up 0", Duration::from_secs(10))
        .await;
    assert_eq!(
        slave.lab.states(&slave.service_names()),
        vec!["exited"],
        "not taken over in maintenance"
    );
    assert!(
        root.join("var/lib/xivo/disabled").exists(),
        "the services stay recorded as kept down"
    );
    let summary = monitor_summary(root);
    assert!(
        summary.contains("(upgrade, set by ") && summary.contains("services left as they are"),
        "{summary}"
    );
    let (_, body) = monitor.get("/status").await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let maintenance = &status["components"]["maintenance"];
    assert_eq!(maintenance["reason"], "upgrade", "{status:#}");
    assert!(maintenance["set_by"].as_str().unwrap().contains('@'));
    let output = xivo_ha(root, "", &["status"]);
    assert!(
        stdout(&output).contains("maintenance: ON until"),
        "{}",
        stdout(&output)
    );

    // Off: the verdict reached meanwhile is acted on, the slave takes over.
    let output = xivo_ha(root, "", &["maintenance", "off"]);
    assert_success(&output);
    assert!(stdout(&output).starts_with("maintenance mode off (was \"upgrade\""));
    tokio::task::block_in_place(|| slave.wait_services("running", Duration::from_secs(15)));
    assert!(!root.join("var/lib/xivo/disabled").exists());
    monitor
        .wait_metric("xivo_ha_maintenance 0", Duration::from_secs(2))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_ends_by_its_deadline_with_a_mail() {
    let smtp = common::smtp::start_smtp_server();
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    write_custom_env(
        root.path(),
        &format!(
            "XIVO_HA_HTTP_LISTEN=127.0.0.1:{port}\nXIVO_HA_ALERT_SMTP={}\nXIVO_HA_ALERT_TO=root@localhost\n",
            smtp.address()
        ),
    );
    let monitor = MonitorProcess::start(root.path(), port);
    monitor.wait_healthy().await;

    let output = xivo_ha(
        root.path(),
        "",
        &["maintenance", "on", "--for", "2s", "--reason", "quick fix"],
    );
    assert_success(&output);
    let file = root.path().join("var/lib/xivo-ha/maintenance.json");
    assert!(file.exists());
    wait_for(
        "the monitor to end the maintenance at its deadline",
        Duration::from_secs(15),
        async || !file.exists(),
    )
    .await;
    let mails = tokio::task::block_in_place(|| smtp.wait_messages(1, Duration::from_secs(15)));
    let subject = mails[0].subject();
    assert!(
        subject.contains("Maintenance mode ended by its deadline") && subject.contains("quick fix"),
        "{subject}"
    );
    assert_eq!(
        mails[0].header("X-RcptTo").as_deref(),
        Some("root@localhost")
    );
    monitor
        .wait_metric("xivo_ha_maintenance 0", Duration::from_secs(2))
        .await;
    let output = xivo_ha(root.path(), "", &["maintenance", "status"]);
    assert_eq!(stdout(&output), "maintenance mode off\n");
}
