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
    for name in [
        "xivo-check-master-status",
        "xivo-manage-slave-services",
        "xivo-master-slave-db-replication",
        "xivo-sync",
        "xivo-monitoring-update",
    ] {
        let link = dir.path().join(name);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            xivo_ha_bin().canonicalize().unwrap()
        );
        // Every link runs its subcommand.
        let output = Command::new(&link).arg("--help").output().unwrap();
        assert_success(&output);
        let help = stdout(&output);
        assert!(
            help.contains("Usage: xivo-ha") || help.contains(&format!("Usage: {name}")),
            "{name}: {help}"
        );
    }
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
