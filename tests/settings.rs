//! Settings through the binary: every command reads the site file (custom.env under --root)
//! and the environment the same way — `--db` over `XIVO_HA_DB` in the environment over the
//! site file — and warns once about names that look like ours but are not, and about names
//! given twice.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// `xivo-ha --root <root> <args>` with no `--db` and only `env` of xivo-ha's variables, in a
/// network namespace of its own (`unshare -n`): the arguments may hold documentation addresses.
fn run_by_hand(root: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new("unshare");
    clear_xivo_env(&mut command);
    command.envs(env.iter().copied());
    command
        .arg("-n")
        .arg(xivo_ha_bin())
        .arg("--root")
        .arg(root)
        .args(args);
    command.output().expect("unshare runs (tests run as root)")
}

fn node_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let configs = root.path().join("var/lib/xivo-provd/jsondb/configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(
        configs.join("default"),
        r#"{"id": "default", "X_type": "registrar", "raw_config": {}, "registrar_main": "10.20.0.1", "proxy_main": "10.20.0.1"}"#,
    )
    .unwrap();
    root
}

async fn minexpiry(db: &TestDb) -> String {
    db.client()
        .await
        .query_one(
            "SELECT var_val FROM staticsip WHERE filename = 'sip.conf' AND category = 'general'
               AND var_name = 'minexpiry'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn xivo_ha_db_in_the_site_file_is_read_by_a_command_run_by_hand() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    write_custom_env(r, &format!("XIVO_HA_DB={}\n", db.socket_url()));

    let output = run_by_hand(r, &[], &["configure", "slave", "192.0.2.10"]);
    assert_success(&output);
    assert_eq!(
        minexpiry(&db).await,
        "180",
        "the slave's expiry, in the site file's database"
    );

    // The environment wins over the file, and --db over both.
    let output = run_by_hand(
        r,
        &[("XIVO_HA_DB", "host=/nonexistent/env dbname=asterisk")],
        &["configure", "disabled"],
    );
    assert_refused(&output, "/nonexistent/env");
    let output = run_by_hand(
        r,
        &[("XIVO_HA_DB", "host=/nonexistent/env dbname=asterisk")],
        &[
            "--db",
            "host=/nonexistent/flag dbname=asterisk",
            "configure",
            "disabled",
        ],
    );
    assert_refused(&output, "/nonexistent/flag");
    assert_eq!(minexpiry(&db).await, "180", "nothing changed");
}

#[test]
fn unknown_and_repeated_names_are_warned_once_each() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write_custom_env(
        r,
        "XUC_HOST=xivocc\nDB_REPLIC_ORIGN=node1\nXIVO_HA_MONITORING_DOCKER=/usr/bin/docker\n\
         XIVO_HA_MONITORING_DOCKER=/usr/local/bin/docker\n",
    );
    // monitoring-update reads the site file several times (its settings and the monitor's).
    let output = run_by_hand(r, &[], &["monitoring-update", "--no-reload"]);
    assert_success(&output);
    let stderr = stderr(&output);
    let typo = "unknown setting `DB_REPLIC_ORIGN`: did you mean `DB_REPLIC_ORIGIN`?";
    assert_eq!(stderr.matches(typo).count(), 1, "{stderr}");
    let twice = "`XIVO_HA_MONITORING_DOCKER` is given twice, on lines 3 and 4";
    assert_eq!(stderr.matches(twice).count(), 1, "{stderr}");
    assert!(
        !stderr.contains("XUC_HOST"),
        "XiVO CC's own names are not ours: {stderr}"
    );
}
