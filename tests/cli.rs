//! The command line as an administrator meets it: help, the classic XiVO command names.

mod common;

use std::process::Command;

use common::*;

#[test]
fn help_lists_the_commands() {
    let output = Command::new(xivo_ha_bin()).arg("--help").output().unwrap();
    assert_success(&output);
    let help = stdout(&output);
    for command in ["configure", "status", "install-links"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn install_links_creates_xivos_command_names() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(xivo_ha_bin())
        .arg("install-links")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_success(&output);
    for (name, usage) in [
        ("xivo-check-master-status", "<master_ip>"),
        ("xivo-manage-slave-services", "<start|stop>"),
        ("xivo-master-slave-db-replication", "<slave_ip>"),
        ("xivo-sync", "[-i | --back]"),
        ("xivo-monitoring-update", "[--no-reload]"),
    ] {
        let link = dir.path().join(name);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            xivo_ha_bin().canonicalize().unwrap()
        );
        // Every link runs its subcommand, whose help shows XiVO's usage.
        let output = Command::new(&link).arg("--help").output().unwrap();
        assert_success(&output);
        let help = stdout(&output);
        assert!(
            help.contains(&format!("Usage: {name} {usage}\n")),
            "{name}: {help}"
        );
    }
    // A mistake through a classic name is explained in its own words.
    let output = Command::new(dir.path().join("xivo-master-slave-db-replication"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_refused(
        &output,
        "Usage: xivo-master-slave-db-replication <slave_ip>",
    );
    // Again: already there, nothing to do.
    assert_success(
        &Command::new(xivo_ha_bin())
            .arg("install-links")
            .arg(dir.path())
            .output()
            .unwrap(),
    );
    // A foreign file of the same name is not replaced without --force.
    std::fs::remove_file(dir.path().join("xivo-sync")).unwrap();
    std::fs::write(dir.path().join("xivo-sync"), "#!/bin/sh\n").unwrap();
    let output = Command::new(xivo_ha_bin())
        .arg("install-links")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--force"));
    assert_success(
        &Command::new(xivo_ha_bin())
            .args(["install-links", "--force"])
            .arg(dir.path())
            .output()
            .unwrap(),
    );
}

#[test]
fn a_status_on_a_fresh_root_says_disabled() {
    let root = tempfile::tempdir().unwrap();
    let output = xivo_ha(
        root.path(),
        "host=/nonexistent dbname=asterisk",
        &["status"],
    );
    assert_success(&output);
    assert!(stdout(&output).starts_with("HA: disabled"));
}

#[test]
fn help_shows_the_settings_this_node_has_where_they_are_not_the_defaults() {
    let root = tempfile::tempdir().unwrap();
    let run_help = |args: &[&str]| {
        let output = xivo_ha(root.path(), "", args);
        assert_success(&output);
        stdout(&output)
    };
    // The defaults: nothing to add.
    let plain = run_help(&["db-replication", "--help"]);
    assert!(plain.contains("Usage: xivo-ha db-replication"), "{plain}");
    assert!(!plain.contains("Configured on this node"), "{plain}");

    write_custom_env(
        root.path(),
        "XIVO_HA_SLAVE_DB_PORT=5433\nXIVO_HA_SLAVE_DB_NAME=asterisk_copy\nXIVO_HA_SLAVE_DB_USER=postgres\nXIVO_HA_SLAVE_DB_PASSWORD=secret\nXIVO_HA_MONITOR_CONTAINERS=asterisk,monit,nginx\n",
    );
    // Through a classic name too, and for the monitor's settings.
    let bin = tempfile::tempdir().unwrap();
    let link = bin.path().join("xivo-check-master-status");
    std::os::unix::fs::symlink(xivo_ha_bin(), &link).unwrap();
    let output = Command::new(&link)
        .arg("--root")
        .arg(root.path())
        .arg("--help")
        .env_remove("XIVO_HA_MONITOR_CONTAINERS")
        .output()
        .unwrap();
    assert_success(&output);
    let help = stdout(&output);
    assert_holds(
        &help,
        &[
            "Usage: xivo-check-master-status <master_ip>\n",
            "  containers asterisk,monit,nginx (XIVO_HA_MONITOR_CONTAINERS)\n",
        ],
    );
    assert!(!help.contains("XIVO_HA_SLAVE_DB"), "{help}");
    for args in [
        &["db-replication", "--help"][..],
        &["help", "db-replication"],
    ] {
        let help = run_help(args);
        let custom_env = root.path().join("etc/docker/xivo/custom.env");
        let configured = format!(
            "Configured on this node ({} and the environment), differing from the defaults:",
            custom_env.display()
        );
        assert_holds(
            &help,
            &[
                configured.as_str(),
                "  port 5433 (XIVO_HA_SLAVE_DB_PORT)\n",
                "  database asterisk_copy (XIVO_HA_SLAVE_DB_NAME)\n",
                "  password set (XIVO_HA_SLAVE_DB_PASSWORD)",
            ],
        );
        // The user is the default one, the password's value is never shown.
        assert!(!help.contains("XIVO_HA_SLAVE_DB_USER"), "{help}");
        assert!(!help.contains("secret"), "{help}");
    }
    // --env-file names another file: its settings are the ones shown.
    let other = root.path().join("other.env");
    std::fs::write(&other, "XIVO_HA_SLAVE_DB_PORT=6432\n").unwrap();
    let help = run_help(&[
        "--env-file",
        other.to_str().unwrap(),
        "db-replication",
        "--help",
    ]);
    assert!(
        help.contains("  port 6432 (XIVO_HA_SLAVE_DB_PORT)\n"),
        "{help}"
    );
    assert!(!help.contains("asterisk_copy"), "{help}");

    // A broken file does not hide the help: it is said in one line.
    write_custom_env(root.path(), "XIVO_HA_SLAVE_DB_PORT=high\n");
    let help = run_help(&["db-replication", "--help"]);
    assert!(help.contains("Usage: xivo-ha db-replication"), "{help}");
    assert!(
        help.contains("This node's settings cannot be read: XIVO_HA_SLAVE_DB_PORT"),
        "{help}"
    );
}
