//! The master's monitor against a real slave on a test host (a network namespace of the
//! test's own): `xivo-ha monitor` runs as a process on a master whose slave is the test host
//! (its configuration database a PostgreSQL server there, its Asterisk the
//! `xivo-ha-sip-standin` binary there). While the slave answers SIP the master must not replicate; it must replicate right
//! after the slave stops answering (the failback), and then every interval; status and
//! `/metrics` show the slave's state and the configuration lag; a DND set on the slave while it
//! serves is on the master after the failback. At the failback it first brings back the
//! voicemail and recordings made on the slave (the copy-back, over a real sshd and rsync on the
//! test host), without any command.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::cluster::start_cluster_on;
use common::files::{read, set_mtime, snapshot, write};
use common::monitor_process::*;
use common::testhost::TestHost;
use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The slave's Asterisk: the SIP stand-in on the test host, answering (or `silent`: a slave
/// standing by); returns its pid.
fn start_slave_sip(host: &mut TestHost, silent: bool) -> u32 {
    let mut command = host.command(env!("CARGO_BIN_EXE_xivo-ha-sip-standin"));
    command
        .args(["--sip-port", "5060"])
        .args(silent.then_some("--silent"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    host.spawn(command)
}

/// SIGUSR1: SIP silent, or answering again (the process stays up).
fn toggle_sip(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR1).unwrap();
}

/// The slave's Asterisk answering on `host`, then the master's monitor on `root` (its log in
/// `<root>/monitor.log`), once it sees the slave active; returns the SIP stand-in's pid.
async fn start_while_the_slave_serves(
    host: &mut TestHost,
    root: &Path,
    http_port: u16,
    master: &TestDb,
) -> (u32, MonitorProcess) {
    let sip = start_slave_sip(host, false);
    let monitor = MonitorProcess::start_with_db(root, http_port, Some(&master.url()));
    monitor.wait_healthy().await;
    monitor
        .wait_metric("xivo_ha_peer_active 1", Duration::from_secs(10))
        .await;
    (sip, monitor)
}

fn monitor_doc(root: &Path) -> serde_json::Value {
    std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Waits for the copy-back record (`sync-back.json`) of a run that considered only what the
/// slave changed since the last copy-back, and returns it.
async fn wait_for_a_copy_back_of_what_changed(root: &Path) -> serde_json::Value {
    let doc = || -> serde_json::Value {
        std::fs::read_to_string(root.join("var/lib/xivo-ha/sync-back.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    };
    wait_for(
        "a copy-back of what the slave changed since the last one",
        Duration::from_secs(20),
        async || {
            doc()["summary"]
                .as_str()
                .is_some_and(|s| s.contains("considered what the slave changed after"))
        },
    )
    .await;
    doc()
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
    let (sip, monitor) =
        start_while_the_slave_serves(&mut host, root.path(), http_port, &master).await;
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
    let lag = monitor.metric_value("xivo_ha_config_lag_seconds").await;
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

    // A user sets DND on the slave while it serves: after this failback it is on the master
    // (merged back before the copy), and still on the slave.
    connect(&slave)
        .await
        .batch_execute("UPDATE userfeatures SET enablednd = 1 WHERE id = 2")
        .await
        .unwrap();
    toggle_sip(sip);
    let dnd = async |db: &str| -> i32 {
        connect(db)
            .await
            .query_one("SELECT enablednd FROM userfeatures WHERE id = 2", &[])
            .await
            .unwrap()
            .get(0)
    };
    wait_for(
        "the DND set on the slave on the master",
        Duration::from_secs(15),
        async || dnd(&master.url()).await == 1,
    )
    .await;
    wait_for(
        "the user made during the second failover on the slave",
        Duration::from_secs(15),
        async || has_user(&slave, "u-made-during-second-failover").await,
    )
    .await;
    assert_eq!(dnd(&slave).await, 1, "kept on the slave");
    let replication: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.path().join("var/lib/xivo-ha/replication.json")).unwrap(),
    )
    .unwrap();
    let merged = replication["merged_back"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The failback's run merged it; a later interval run (nothing left) may have replaced the
    // document since: the log keeps the merge.
    let log = std::fs::read_to_string(root.path().join("monitor.log")).unwrap();
    assert!(
        merged.len() == 1 || log.contains("merge-back: userfeatures id=2 enablednd"),
        "{replication:#}\n{log}"
    );
    drop(monitor);
    let log = std::fs::read_to_string(root.path().join("monitor.log")).unwrap();
    assert!(log.contains("run skipped"), "{log}");
    assert!(log.contains("failback done"), "{log}");
}

/// Issue 14 part 4: the voicemail and recordings made on the slave while it served come back
/// to the master by themselves at the failback, before the replication and the sync: the
/// master's monitor runs the copy-back over SSH (a real sshd and rsync on the slave's test
/// host), never deleting and never overwriting a newer file of the master, lists what came
/// back in `status`, `/metrics` and a mail (a real SMTP server). At a second failback it brings
/// only what the slave made since, not the message the master deleted meanwhile.
/// A master whose slave (a test host) runs a real sshd that trusts the master's sync key, the
/// slave's tree a temporary directory; the master's monitor settings fast, its replication
/// failing at once (nothing listens for the slave's database), its mails to `smtp`.
struct CopyBackPair {
    _sshd: common::sshd::Sshd,
    slave_tree: tempfile::TempDir,
    root: tempfile::TempDir,
    http_port: u16,
    /// Dropped after its sshd.
    host: TestHost,
}

impl CopyBackPair {
    fn new(smtp: &str) -> CopyBackPair {
        let host = TestHost::create();
        let slave_tree = tempfile::tempdir().unwrap();
        let authorized_keys = slave_tree.path().join("root/.ssh/authorized_keys");
        std::fs::create_dir_all(authorized_keys.parent().unwrap()).unwrap();
        let sshd = common::sshd::start_sshd_on(&host, 2222, &authorized_keys);
        let root = tempfile::tempdir().unwrap();
        let key = root.path().join("root/.ssh/xivo_id_rsa");
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        common::sshd::keygen(&key, "XiVO HA");
        std::fs::copy(key.with_extension("pub"), &authorized_keys).unwrap();
        write_ha_conf(root.path(), "master", &host.ip.to_string());
        let http_port = free_port();
        write_custom_env(
            root.path(),
            &format!(
                "XIVO_HA_REPLICATION_INTERVAL_S=1\n\
                 XIVO_HA_MONITOR_INTERVAL_MS=200\nXIVO_HA_MONITOR_SIP_TIMEOUT_MS=150\n\
                 XIVO_HA_MONITOR_TCP_TIMEOUT_MS=150\nXIVO_HA_MONITOR_ICMP_TIMEOUT_MS=150\n\
                 XIVO_HA_MONITOR_PG_PORT={port}\n\
                 XIVO_HA_HTTP_LISTEN=127.0.0.1:{http_port}\n\
                 XIVO_HA_SSH_PORT={port}\nXIVO_HA_SSH_CONNECT_TIMEOUT=5\n\
                 XIVO_HA_SYNC_REMOTE_ROOT={remote}\n\
                 XIVO_HA_ALERT_SMTP={smtp}\nXIVO_HA_ALERT_TO=root@localhost\n\
                 XIVO_HA_ALERT_FROM=xivo-ha@xivo1.test\n",
                // The slave's database: nothing listens there, the replication fails at once.
                port = sshd.port,
                remote = slave_tree.path().display(),
            ),
        );
        CopyBackPair {
            _sshd: sshd,
            slave_tree,
            root,
            http_port,
            host,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_brings_back_the_slaves_voicemail_and_recordings_at_the_failback() {
    let master = TestDb::create().await;
    let smtp = common::smtp::start_smtp_server();
    let mut pair = CopyBackPair::new(&smtp.address());
    let (root, slave_tree, http_port) = (&pair.root, &pair.slave_tree, pair.http_port);
    let host = &mut pair.host;
    let m = |path: &str| root.path().join(path);
    let s = |path: &str| slave_tree.path().join(path);
    let inbox = "var/spool/asterisk/voicemail/default/1000/INBOX";
    // On the master before the failover: one message only here, one that the slave also has
    // in an older copy (the master's is newer and must stay).
    write(&m(&format!("{inbox}/msg0002.txt")), "master only");
    write(&m(&format!("{inbox}/msg0001.txt")), "master's newer copy");

    // The slave serves (a failover in progress) when the master's monitor starts.
    let (sip, monitor) = start_while_the_slave_serves(host, root.path(), http_port, &master).await;
    // Users leave a message and record a call on the slave meanwhile (half a minute ago).
    write(&s(&format!("{inbox}/msg0000.txt")), "left on the slave");
    write(&s(&format!("{inbox}/msg0000.wav")), "RIFF audio");
    write(&s("var/spool/asterisk/monitor/call-1.wav"), "recording");
    for made in [
        format!("{inbox}/msg0000.txt"),
        format!("{inbox}/msg0000.wav"),
        "var/spool/asterisk/monitor/call-1.wav".to_owned(),
    ] {
        set_mtime(&s(&made), 30);
    }
    write(&s(&format!("{inbox}/msg0001.txt")), "slave's older copy");
    set_mtime(&s(&format!("{inbox}/msg0001.txt")), 3600);
    let skipped = monitor_doc(root.path())["jobs_skipped"]
        .as_u64()
        .unwrap_or(0);
    wait_for(
        "two runs skipped while the slave is active",
        Duration::from_secs(15),
        async || monitor_doc(root.path())["jobs_skipped"].as_u64() >= Some(skipped + 2),
    )
    .await;
    assert!(
        !m(&format!("{inbox}/msg0000.txt")).exists(),
        "nothing copied back while the slave serves"
    );
    let slave_before = snapshot(slave_tree.path());

    // The failback: the slave's Asterisk goes silent; no command is typed.
    toggle_sip(sip);
    wait_for(
        "the slave's voicemail and recording on the master",
        Duration::from_secs(20),
        async || {
            m(&format!("{inbox}/msg0000.wav")).exists()
                && m("var/spool/asterisk/monitor/call-1.wav").exists()
        },
    )
    .await;
    assert_eq!(
        read(&m(&format!("{inbox}/msg0000.txt"))),
        "left on the slave"
    );
    assert_eq!(read(&m(&format!("{inbox}/msg0000.wav"))), "RIFF audio");
    assert_eq!(
        read(&m("var/spool/asterisk/monitor/call-1.wav")),
        "recording"
    );
    assert_eq!(
        read(&m(&format!("{inbox}/msg0001.txt"))),
        "master's newer copy",
        "a newer file of the master is never overwritten"
    );
    assert_eq!(
        read(&m(&format!("{inbox}/msg0002.txt"))),
        "master only",
        "nothing deleted on the master"
    );
    assert_eq!(
        snapshot(slave_tree.path()),
        slave_before,
        "nothing changed on the slave"
    );

    // What came back: in status, in /metrics, in a mail.
    wait_for(
        "the copy-back's record",
        Duration::from_secs(10),
        async || m("var/lib/xivo-ha/sync-back.json").exists(),
    )
    .await;
    let status = stdout(&xivo_ha(root.path(), &master.url(), &["status"]));
    let line = status
        .lines()
        .find(|l| l.starts_with("sync-back:"))
        .unwrap_or_else(|| panic!("no sync-back line in:\n{status}"));
    assert!(line.contains("3 files (36 bytes) transferred"), "{line}");
    for file in [
        format!("/{inbox}/msg0000.txt"),
        format!("/{inbox}/msg0000.wav"),
        "/var/spool/asterisk/monitor/call-1.wav".to_owned(),
    ] {
        assert!(line.contains(&file), "{file} not in {line}");
    }
    monitor
        .wait_metric("xivo_ha_copy_back_files 3", Duration::from_secs(5))
        .await;
    let copy_back_mail = || {
        smtp.messages()
            .into_iter()
            .find(|m| m.subject().contains("brought back from the slave"))
    };
    wait_for("the copy-back mail", Duration::from_secs(20), async || {
        copy_back_mail().is_some()
    })
    .await;
    let mail = copy_back_mail().unwrap();
    assert!(
        mail.subject().contains("3 files (36 bytes) brought back"),
        "{}",
        mail.subject()
    );
    let body = mail.body();
    assert!(
        body.contains(&format!("/{inbox}/msg0000.wav")) && body.contains("monitor/call-1.wav"),
        "{body}"
    );

    // The user deletes the message on the master; the slave serves again and a message is left
    // there for another user; at the second failback only that one comes home.
    std::fs::remove_file(m(&format!("{inbox}/msg0000.txt"))).unwrap();
    std::fs::remove_file(m(&format!("{inbox}/msg0000.wav"))).unwrap();
    toggle_sip(sip);
    monitor
        .wait_metric("xivo_ha_peer_active 1", Duration::from_secs(10))
        .await;
    let second = "var/spool/asterisk/voicemail/default/1001/INBOX/msg0000.txt";
    write(&s(second), "left during the second failover");
    toggle_sip(sip);
    let doc = wait_for_a_copy_back_of_what_changed(root.path()).await;
    assert_eq!(doc["files_transferred"], 1, "{doc:#}");
    assert_eq!(read(&m(second)), "left during the second failover");
    assert!(
        !m(&format!("{inbox}/msg0000.txt")).exists()
            && !m(&format!("{inbox}/msg0000.wav")).exists(),
        "the message deleted on the master came back"
    );
    assert_eq!(monitor_doc(root.path())["peer"]["failbacks"], 2);

    // The copy-back ran first at the failback, before the replication and the sync.
    drop(monitor);
    let log = std::fs::read_to_string(root.path().join("monitor.log")).unwrap();
    let position = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no `{what}` in:\n{log}"))
    };
    assert!(
        position("failback job copy-back started") < position("failback job replication started"),
        "{log}"
    );
    assert!(
        position("failback job replication started") < position("failback job sync started"),
        "{log}"
    );
}

/// A master that was down while its slave served (the usual failover) starts its monitor when
/// the slave stands by again: the start run's copy-back brings home what the slave made since
/// the last copy-back, and not the slave's copy of a message that an earlier copy-back brought
/// and that the master deleted since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_run_brings_back_only_what_the_slave_made_since_the_last_copy_back() {
    let master = TestDb::create().await;
    let smtp = common::smtp::start_smtp_server();
    let mut pair = CopyBackPair::new(&smtp.address());
    let m = |path: &str| pair.root.path().join(path);
    let s = |path: &str| pair.slave_tree.path().join(path);
    let inbox = "var/spool/asterisk/voicemail/default/1000/INBOX";
    let deleted = format!("{inbox}/msg0000.txt");
    // An earlier failover's message, brought home by an earlier copy-back (here by hand).
    write(&s(&deleted), "heard and deleted on the master");
    set_mtime(&s(&deleted), 60);
    assert_success(&xivo_ha(
        pair.root.path(),
        &master.url(),
        &["sync", "--back"],
    ));
    assert_eq!(read(&m(&deleted)), "heard and deleted on the master");
    std::fs::remove_file(m(&deleted)).unwrap();
    // Then the master went down; the slave served: a message left, a call recorded.
    let made = format!("{inbox}/msg0001.txt");
    write(&s(&made), "left on the slave");
    write(&s("var/spool/asterisk/monitor/call-2.wav"), "recording");

    // The master back, its slave standing by: the start run.
    start_slave_sip(&mut pair.host, true);
    let monitor =
        MonitorProcess::start_with_db(pair.root.path(), pair.http_port, Some(&master.url()));
    monitor.wait_healthy().await;
    let doc = wait_for_a_copy_back_of_what_changed(pair.root.path()).await;
    assert_eq!(doc["ok"], true, "{doc:#}");
    assert_eq!(doc["files_transferred"], 2, "{doc:#}");
    assert_eq!(read(&m(&made)), "left on the slave");
    assert_eq!(
        read(&m("var/spool/asterisk/monitor/call-2.wav")),
        "recording"
    );
    assert!(!m(&deleted).exists(), "the deleted message came back");
    drop(monitor);
    let log = std::fs::read_to_string(m("monitor.log")).unwrap();
    assert!(log.contains("start job copy-back started"), "{log}");
    assert!(!log.contains("no earlier copy-back"), "{log}");
}
