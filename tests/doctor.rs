//! `xivo-ha doctor` against the real PostgreSQL, temporary node roots and this host's real
//! interfaces. Peer addresses that are only data run under `unshare -n`.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use xivo_ha::doctor::{Level, checks};

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {report:#}"))
}

/// What the doctor found for `check`, which must have failed saying `words`.
fn failed<'a>(report: &'a Value, check: &str, words: &str) -> &'a str {
    let finding = finding(report, check);
    assert_eq!(finding["level"], "failed", "{finding}");
    let found = finding["found"].as_str().unwrap();
    assert!(found.contains(words), "{check}: {found}");
    found
}

fn doctor_json(root: &Path, db: &str) -> (Value, Option<i32>) {
    let output = xivo_ha_isolated(root, db, &["doctor", "--json"]);
    let report = serde_json::from_str(&stdout(&output))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&output), stderr(&output)));
    (report, output.status.code())
}

#[tokio::test]
async fn a_node_without_ha_fails_the_first_check() {
    let db = TestDb::create().await;
    let root = tempfile::tempdir().unwrap();
    let output = xivo_ha(root.path(), &db.url(), &["doctor"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.starts_with("failed   ha-configured"), "{text}");
    assert!(text.contains("fix: xivo-ha configure"), "{text}");
    // The report is kept for `status` and the dashboard.
    let kept: Value = serde_json::from_slice(
        &std::fs::read(root.path().join("var/lib/xivo-ha/doctor.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept["node_type"], "disabled", "{kept:#}");
    assert_eq!(finding(&kept, "ha-configured")["level"], "failed");
    assert!(
        kept["summary"]
            .as_str()
            .unwrap()
            .contains("(ha-configured)"),
        "{kept:#}"
    );
    let status = stdout(&xivo_ha(root.path(), &db.url(), &["status"]));
    assert!(status.contains("doctor: "), "{status}");
}

#[tokio::test]
async fn a_slave_with_xivo_defaults_is_told_what_to_fix() {
    let db = TestDb::create().await;
    let root = tempfile::tempdir().unwrap();
    write_ha_conf(root.path(), "slave", "192.0.2.10");
    let plugin = root
        .path()
        .join("var/lib/xivo-provd/plugins/xivo-aastra-4.3");
    std::fs::create_dir_all(&plugin).unwrap();

    let (report, code) = doctor_json(root.path(), &db.socket_url());
    assert_eq!(code, Some(1));
    assert_eq!(finding(&report, "ha-configured")["level"], "ok");
    assert_eq!(finding(&report, "peer-address")["level"], "ok");
    failed(&report, "sip-expiry", "maxexpiry is 3600 (HA needs 300)");
    let found = failed(&report, "trunk-expiry", "Provider 2 (3600 s)");
    assert!(
        !found.contains("Provider 1"),
        "Provider 1 uses the default expiry (120 s): {found}"
    );
    // No witness configured and, in this namespace, no default route: said.
    let no_witness = "no witness configured and no default route";
    failed(&report, "witnesses", no_witness);
    failed(&report, "provd-plugins", "xivo-aastra-4.3");

    // Fix what the doctor said: HA expiry, short trunk registration, no plugin.
    db.execute(
            "UPDATE staticsip SET var_val = '180' WHERE var_name = 'minexpiry';
             UPDATE staticsip SET var_val = '300' WHERE var_name = 'maxexpiry';
             UPDATE staticsip SET var_val = '240' WHERE var_name = 'defaultexpiry';
             UPDATE staticsip SET var_val = replace(var_val, '~3600', '~120') WHERE var_name = 'register';",
        ).await;
    std::fs::remove_dir(&plugin).unwrap();
    let (report, _) = doctor_json(root.path(), &db.socket_url());
    for check in ["sip-expiry", "trunk-expiry", "provd-plugins"] {
        assert_eq!(
            finding(&report, check)["level"],
            "ok",
            "{check}: {report:#}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_configuration_database_is_a_failed_check() {
    let root = tempfile::tempdir().unwrap();
    write_ha_conf(root.path(), "slave", "192.0.2.10");
    let (report, code) = doctor_json(
        root.path(),
        "host=/nonexistent user=postgres dbname=asterisk",
    );
    assert_eq!(code, Some(1));
    let db = finding(&report, "configuration-db");
    assert_eq!(db["level"], "failed");
    assert!(
        db["found"].as_str().unwrap().contains("cannot connect"),
        "{db}"
    );
}

#[test]
fn the_peer_must_share_a_subnet_of_this_host() {
    let interfaces = xivo_ha::net::interface_addresses();
    let neighbour_net = interfaces
        .iter()
        .find(|a| a.address.is_ipv4() && !a.address.is_loopback() && a.prefix_len <= 30)
        .expect("this host has a non-loopback IPv4 interface (docker0 at least)");
    let std::net::IpAddr::V4(mine) = neighbour_net.address else {
        unreachable!()
    };
    // Another host address of the same subnet: data only, never contacted.
    let neighbour = std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from(mine) ^ 1));
    let finding = checks::same_subnet(neighbour, &interfaces);
    assert_eq!(finding.level, Level::Ok, "{finding:?}");
    assert!(
        finding.found.contains(&neighbour_net.interface),
        "{finding:?}"
    );

    // A documentation address on none of this host's subnets (the machine's own network may
    // itself be a documentation range).
    let far = ["198.51.100.20", "203.0.113.20", "192.0.2.20"]
        .iter()
        .map(|a| a.parse().unwrap())
        .find(|far| !interfaces.iter().any(|a| a.contains(*far)))
        .expect("one documentation range is not local");
    let finding = checks::same_subnet(far, &interfaces);
    assert_eq!(finding.level, Level::Failed);
    assert!(finding.fix.unwrap().contains("DHCP"));
}

/// A master whose slave is a test host in its own network namespace, with a real sshd.
#[tokio::test]
async fn a_master_checks_its_slaves_ports_and_the_sync_key() {
    use common::sshd::{keygen, start_sshd_on};
    use common::testhost::TestHost;
    use std::os::unix::fs::PermissionsExt;

    let db = TestDb::create().await;
    let mut slave = TestHost::create();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write_ha_conf(r, "master", &slave.ip.to_string());
    let ssh_dir = r.join("root/.ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let key = ssh_dir.join("xivo_id_rsa");
    keygen(&key, "XiVO HA");
    let authorized = tempfile::tempdir().unwrap();
    let authorized_keys = authorized.path().join("authorized_keys");
    std::fs::copy(ssh_dir.join("xivo_id_rsa.pub"), &authorized_keys).unwrap();
    let sshd = start_sshd_on(&slave, 22, &authorized_keys);

    let run = || {
        let output = xivo_ha(r, &db.url(), &["doctor", "--json"]);
        let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
        (report, output.status.code())
    };
    let (report, code) = run();
    assert_eq!(code, Some(1), "nothing answers on the slave's 5432");
    assert_eq!(finding(&report, "same-subnet")["level"], "ok", "{report:#}");
    assert_eq!(finding(&report, "slave-ssh")["level"], "ok", "{report:#}");
    assert_eq!(finding(&report, "sync-key")["level"], "ok", "{report:#}");
    let postgresql = finding(&report, "slave-postgresql");
    assert_eq!(postgresql["level"], "failed");
    assert!(
        postgresql["fix"].as_str().unwrap().contains("5432"),
        "{postgresql}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (report, _) = run();
    let sync_key = finding(&report, "sync-key");
    assert_eq!(sync_key["level"], "failed");
    assert!(
        sync_key["fix"].as_str().unwrap().starts_with("chmod 600"),
        "{sync_key}"
    );

    // A key the slave does not know.
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(ssh_dir.join("xivo_id_rsa.pub")).unwrap();
    keygen(&key, "XiVO HA");
    let (report, _) = run();
    let sync_key = finding(&report, "sync-key");
    assert_eq!(sync_key["level"], "failed", "{report:#}");
    assert!(
        sync_key["fix"].as_str().unwrap().contains("sync -i"),
        "{sync_key}"
    );

    std::fs::remove_file(&key).unwrap();
    let (report, _) = run();
    assert!(
        finding(&report, "sync-key")["found"]
            .as_str()
            .unwrap()
            .starts_with("no sync key")
    );

    // The slave gone from the network.
    slave.unplug();
    let (report, _) = run();
    assert_eq!(
        finding(&report, "slave-ssh")["level"],
        "failed",
        "{report:#}"
    );
    drop(sshd);
    slave.plug();
    let _ = &mut slave;
}

/// A slave whose master is a stand-in container on a private Docker network.
#[test]
fn a_slave_checks_its_master_and_its_telephony_containers() {
    use common::docker_lab::{docker, start_slave_lab};
    let slave = start_slave_lab(&[("asterisk", false)], &[]);
    let (master, asterisk, r) = (&slave.master, &slave.services[0], slave.root());
    let missing = slave.lab.name("never-created");
    // The doctor with XiVO's settings, not the monitor's short rounds.
    write_custom_env(
        r,
        &format!(
            "XIVO_HA_MONITOR_CONTAINERS={asterisk},{missing}\nXIVO_HA_MONITOR_WITNESSES=127.0.0.1\n"
        ),
    );
    let run = || {
        let output = xivo_ha(
            r,
            "host=/nonexistent dbname=asterisk",
            &["doctor", "--json"],
        );
        let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
        report
    };
    let containers = |report: &Value| -> Vec<(String, String)> {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check"] == "telephony-containers")
            .map(|f| {
                (
                    f["level"].as_str().unwrap().to_owned(),
                    f["found"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    let report = run();
    assert_eq!(finding(&report, "master-icmp")["level"], "ok", "{report:#}");
    assert_eq!(finding(&report, "witnesses")["level"], "ok", "{report:#}");
    let found = containers(&report);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "failed");
    assert!(found[0].1.contains("restart policy `always`"), "{found:?}");
    assert_eq!(found[1].0, "failed");
    assert!(found[1].1.contains(&missing), "{found:?}");

    docker(&["update", "--restart", "no", asterisk]);
    let report = run();
    let found = containers(&report);
    assert_eq!(found[0].0, "ok", "{found:?}");

    // The master goes away: no echo any more (its bridge stays, so nothing leaves the machine).
    docker(&["stop", "-t", "1", master]);
    let report = run();
    assert_eq!(
        finding(&report, "master-icmp")["level"],
        "failed",
        "{report:#}"
    );
}

/// Where XiVO CC enabled DB Replic: its settings, both sinks and its log directory are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_replic_is_checked_where_it_is_enabled() {
    let sinks = common::dbreplic::Sinks::start().await;
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_owned();
    // HA disabled: the DB Replic checks apply anyway, and no peer is probed.
    let port = pg_port();
    let good = format!("{}IS_HA_SLAVE=true\n", sinks.env());
    // The stand-in is dropped below, to be found down.
    let common::dbreplic::Sinks {
        source: config,
        reporting: _reporting,
        es,
    } = sinks;
    let run = |env: String| {
        let r = r.clone();
        let db = config.url();
        async move {
            write_custom_env(&r, &env);
            let output =
                tokio::task::spawn_blocking(move || xivo_ha(&r, &db, &["doctor", "--json"]))
                    .await
                    .unwrap();
            let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
            report
        }
    };

    // Not enabled: not checked.
    let report = run(good.clone()).await;
    assert!(
        !report.to_string().contains("db-replic-settings"),
        "{report:#}"
    );

    std::fs::create_dir_all(r.join("var/lib/xivo")).unwrap();
    std::fs::write(r.join("var/lib/xivo/xc_enabled"), "").unwrap();
    let report = run(good.clone()).await;
    for check in [
        "db-replic-settings",
        "reporting-db",
        "elasticsearch",
        "db-replic-log",
    ] {
        assert_eq!(
            finding(&report, check)["level"],
            "ok",
            "{check}: {report:#}"
        );
    }
    assert!(
        finding(&report, "db-replic-settings")["found"]
            .as_str()
            .unwrap()
            .contains("HA mode")
    );

    let report = run(good.replace("IS_HA_SLAVE=true", "IS_HA_SLAVE=maybe")).await;
    let settings = failed(&report, "db-replic-settings", "line 6");
    assert!(settings.starts_with("IS_HA_SLAVE ("), "{settings}");

    let report =
        run(good.replace(&format!("REPORTING_DB_PORT={port}"), "REPORTING_DB_PORT=1")).await;
    assert_eq!(
        finding(&report, "reporting-db")["level"],
        "failed",
        "{report:#}"
    );
    assert_eq!(finding(&report, "elasticsearch")["level"], "ok");

    let url = es.url.clone();
    drop(es);
    let report = run(good.clone()).await;
    let elasticsearch = finding(&report, "elasticsearch");
    assert_eq!(elasticsearch["level"], "failed", "{report:#}");
    assert!(
        elasticsearch["found"].as_str().unwrap().contains(&url),
        "{elasticsearch}"
    );

    // The log directory is a file: not writable as a directory.
    let log_dir = r.join("var/log/xivo-db-replication");
    std::fs::remove_dir_all(&log_dir).unwrap();
    std::fs::write(&log_dir, "").unwrap();
    let report = run(good).await;
    let log = finding(&report, "db-replic-log");
    assert_eq!(log["level"], "failed", "{report:#}");
    assert!(
        log["fix"].as_str().unwrap().contains("daemon:daemon"),
        "{log}"
    );
}
