//! The master's monitor against a real slave database and a slave SIP stand-in on loopback:
//! `xivo-ha monitor` runs as a process on a master whose slave is 127.0.0.1 (its configuration
//! database another database of the test PostgreSQL, its Asterisk the `xivo-ha-sip-standin`
//! binary). While the slave answers SIP the master must not replicate; it must replicate right
//! after the slave stops answering (the failback), and then every interval; status and
//! `/metrics` show the slave's state and the configuration lag.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::monitor_process::*;
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The slave's Asterisk: the SIP stand-in on a loopback port, killed on drop.
struct SlaveSip {
    child: Child,
}

impl SlaveSip {
    fn start(port: u16, silent: bool) -> SlaveSip {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xivo-ha-sip-standin"));
        command.args(["--sip-port", &port.to_string()]);
        if silent {
            command.arg("--silent");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the SIP stand-in starts");
        SlaveSip { child }
    }

    /// SIGUSR1: SIP silent, or answering again (the process stays up).
    fn toggle(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGUSR1).unwrap();
    }
}

impl Drop for SlaveSip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn monitor_doc(root: &Path) -> serde_json::Value {
    std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

async fn has_user(db: &TestDb, uuid: &str) -> bool {
    let client = db.client().await;
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
async fn slave_fingerprints(slave: &TestDb) -> Vec<(String, String)> {
    let client = slave.client().await;
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
    let (master, slave) = tokio::join!(TestDb::create(), TestDb::create());
    let root = tempfile::tempdir().unwrap();
    let (http_port, sip_port) = (free_port(), free_udp_port());
    std::fs::create_dir_all(root.path().join("etc/xivo")).unwrap();
    std::fs::write(
        root.path().join("etc/xivo/ha.conf"),
        r#"{"node_type": "master", "remote_address": "127.0.0.1"}"#,
    )
    .unwrap();
    write_custom_env(
        root.path(),
        &format!(
            "XIVO_HA_SLAVE_DB_NAME={}\nXIVO_HA_SLAVE_DB_PORT={}\n\
             XIVO_HA_REPLICATION_INTERVAL_S=1\n\
             XIVO_HA_MONITOR_INTERVAL_MS=200\nXIVO_HA_MONITOR_SIP_TIMEOUT_MS=150\n\
             XIVO_HA_MONITOR_TCP_TIMEOUT_MS=150\nXIVO_HA_MONITOR_ICMP_TIMEOUT_MS=150\n\
             XIVO_HA_MONITOR_SIP_PORT={sip_port}\nXIVO_HA_MONITOR_PG_PORT={}\n\
             XIVO_HA_MONITOR_DOWN_AFTER=2\nXIVO_HA_MONITOR_UP_AFTER=3\n\
             XIVO_HA_HTTP_LISTEN=127.0.0.1:{http_port}\n\
             XIVO_HA_SSH_PORT={}\nXIVO_HA_SSH_CONNECT_TIMEOUT=1\n\
             XIVO_HA_SYNC_REMOTE_ROOT={}\n",
            slave.name,
            pg_port(),
            pg_port(),
            // Nothing listens there: the sync that follows the failback fails at once, and
            // never reaches this machine's own sshd.
            free_port(),
            root.path().join("slave-root").display(),
        ),
    );

    // The slave serves (a failover in progress) when the master's monitor starts.
    let sip = SlaveSip::start(sip_port, false);
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
        status.contains("slave 127.0.0.1 active") && status.contains("held"),
        "{status}"
    );

    // The failback: the slave's Asterisk goes silent, the master replicates at once.
    sip.toggle();
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
        status.contains("slave 127.0.0.1 standby")
            && status.contains("the slave's configuration is the master's of"),
        "{status}"
    );

    // The slave serves again: the fingerprints it holds stay while it does.
    sip.toggle();
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
