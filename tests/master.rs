//! The master's monitor against a real slave on a test host (a network namespace of the
//! test's own): `xivo-ha monitor` runs as a process on a master whose slave is the test host
//! (its configuration database a PostgreSQL server there, its Asterisk the
//! `xivo-ha-sip-standin` binary there). While the slave answers SIP the master must not replicate; it must replicate right
//! after the slave stops answering (the failback), and then every interval; status and
//! `/metrics` show the slave's state and the configuration lag.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::cluster::start_cluster_on;
use common::monitor_process::*;
use common::testhost::TestHost;
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The slave's Asterisk: the SIP stand-in on the test host, answering; returns its pid.
fn start_slave_sip(host: &mut TestHost) -> u32 {
    let mut command = host.command(env!("CARGO_BIN_EXE_xivo-ha-sip-standin"));
    command
        .args(["--sip-port", "5060"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    host.spawn(command)
}

/// SIGUSR1: SIP silent, or answering again (the process stays up).
fn toggle_sip(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).unwrap();
}

fn monitor_doc(root: &Path) -> serde_json::Value {
    std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

async fn has_user(db: &str, uuid: &str) -> bool {
    let client = connect(db).await;
    let rows = client
        .query("SELECT 1 FROM userfeatures WHERE uuid = $1", &[&uuid])
        .await
        .unwrap_or_default();
    !rows.is_empty()
}

async fn add_user(db: &TestDb, uuid: &str) {
    db.client()
        .await
        .execute(
            "INSERT INTO userfeatures (uuid, firstname, lastname) VALUES ($1, 'New', 'User')",
            &[&uuid],
        )
        .await
        .unwrap();
}

/// The slave's bookkeeping of what it last received (empty before the first replication).
async fn slave_fingerprints(slave: &str) -> Vec<(String, String)> {
    let client = connect(slave).await;
    client
        .query(
            "SELECT table_name, fingerprint FROM xivo_ha.replication_fingerprint ORDER BY 1",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_holds_its_jobs_while_the_slave_serves_and_replicates_at_the_failback() {
    let master = TestDb::create().await;
    let mut host = TestHost::create();
    let cluster = start_cluster_on(&host);
    let admin = connect(&cluster.socket_url("postgres")).await;
    admin
        .batch_execute("CREATE DATABASE asterisk ENCODING 'UTF8' TEMPLATE template0")
        .await
        .unwrap();
    let slave = cluster.socket_url("asterisk");
    let client = connect(&slave).await;
    client.batch_execute(SCHEMA_SQL).await.unwrap();
    client.batch_execute(DATA_SQL).await.unwrap();
    drop(client);
    let root = tempfile::tempdir().unwrap();
    let http_port = free_port();
    std::fs::create_dir_all(root.path().join("etc/xivo")).unwrap();
    std::fs::write(
        root.path().join("etc/xivo/ha.conf"),
        format!(
            r#"{{"node_type": "master", "remote_address": "{}"}}"#,
            host.ip
        ),
    )
    .unwrap();
    write_custom_env(
        root.path(),
        &format!(
            "XIVO_HA_SLAVE_DB_PORT={}\n\
             XIVO_HA_REPLICATION_INTERVAL_S=1\n\
             XIVO_HA_MONITOR_INTERVAL_MS=200\nXIVO_HA_MONITOR_SIP_TIMEOUT_MS=150\n\
             XIVO_HA_MONITOR_TCP_TIMEOUT_MS=150\nXIVO_HA_MONITOR_ICMP_TIMEOUT_MS=150\n\
             XIVO_HA_MONITOR_PG_PORT={}\n\
             XIVO_HA_MONITOR_DOWN_AFTER_MS=400\nXIVO_HA_MONITOR_UP_AFTER_MS=600\n\
             XIVO_HA_HTTP_LISTEN=127.0.0.1:{http_port}\n\
             XIVO_HA_SSH_PORT={}\nXIVO_HA_SSH_CONNECT_TIMEOUT=1\n\
             XIVO_HA_SYNC_REMOTE_ROOT={}\n",
            cluster.port,
            cluster.port,
            // Nothing listens there on the test host: the sync that follows the failback
            // fails at once.
            free_port(),
            root.path().join("slave-root").display(),
        ),
    );

    // The slave serves (a failover in progress) when the master's monitor starts.
    let sip = start_slave_sip(&mut host);
    let monitor = MonitorProcess::start_with_db(root.path(), http_port, Some(&master.url()));
    monitor.wait_healthy().await;
    monitor
        .wait_metric("xivo_ha_peer_active 1", Duration::from_secs(10))
        .await;
    add_user(&master, "u-made-during-failover").await;
    wait_for(
        "three interval runs skipped while the slave is active",
        Duration::from_secs(15),
        async || monitor_doc(root.path())["jobs_skipped"].as_u64() >= Some(3),
    )
    .await;
    let doc = monitor_doc(root.path());
    assert_eq!(doc["peer"]["state"], "active", "{doc:#}");
    assert!(
        doc["jobs_held"]
            .as_str()
            .unwrap()
            .contains("the slave is active"),
        "{doc:#}"
    );
    assert!(
        slave_fingerprints(&slave).await.is_empty(),
        "never replicated"
    );
    assert!(!has_user(&slave, "u-made-during-failover").await);
    assert!(
        !monitor
            .metrics()
            .await
            .contains("xivo_ha_config_lag_seconds"),
        "no lag before the first replication"
    );
    let status = stdout(&xivo_ha(root.path(), &master.url(), &["status"]));
    assert!(
        status.contains(&format!("slave {} active", host.ip)) && status.contains("held"),
        "{status}"
    );

    // The failback: the slave's Asterisk goes silent, the master replicates at once.
    toggle_sip(sip);
    wait_for(
        "the user made on the master during the failover on the slave",
        Duration::from_secs(15),
        async || has_user(&slave, "u-made-during-failover").await,
    )
    .await;
    monitor
        .wait_metric("xivo_ha_peer_active 0", Duration::from_secs(5))
        .await;
    let doc = monitor_doc(root.path());
    assert_eq!(doc["peer"]["failbacks"], 1, "{doc:#}");
    let fingerprints = slave_fingerprints(&slave).await;
    assert!(!fingerprints.is_empty());

    // Then every interval: a new user reaches the slave within the interval (1 s here, plus
    // the run), and the lag is shown.
    add_user(&master, "u-made-after-failback").await;
    wait_for(
        "the user made after the failback on the slave",
        Duration::from_secs(10),
        async || has_user(&slave, "u-made-after-failback").await,
    )
    .await;
    let metrics = monitor.metrics().await;
    let lag: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("xivo_ha_config_lag_seconds "))
        .unwrap_or_else(|| panic!("no config lag in:\n{metrics}"))
        .parse()
        .unwrap();
    assert!((0.0..30.0).contains(&lag), "{lag}");
    let status = stdout(&xivo_ha(root.path(), &master.url(), &["status"]));
    assert!(
        status.contains(&format!("slave {} standby", host.ip))
            && status.contains("the slave's configuration is the master's of"),
        "{status}"
    );

    // The slave serves again: the fingerprints it holds stay while it does.
    toggle_sip(sip);
    monitor
        .wait_metric("xivo_ha_peer_active 1", Duration::from_secs(5))
        .await;
    let before = slave_fingerprints(&slave).await;
    add_user(&master, "u-made-during-second-failover").await;
    let skipped = monitor_doc(root.path())["jobs_skipped"].as_u64().unwrap();
    wait_for(
        "two more interval runs skipped",
        Duration::from_secs(15),
        async || monitor_doc(root.path())["jobs_skipped"].as_u64() >= Some(skipped + 2),
    )
    .await;
    assert_eq!(slave_fingerprints(&slave).await, before);
    assert!(!has_user(&slave, "u-made-during-second-failover").await);
    drop(monitor);
    let log = std::fs::read_to_string(root.path().join("monitor.log")).unwrap();
    assert!(log.contains("run skipped"), "{log}");
    assert!(log.contains("failback done"), "{log}");
}
