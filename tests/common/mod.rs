//! Fixtures shared by the black-box tests, one submodule each: `db` (a fresh XiVO `asterisk`
//! database per test in the real PostgreSQL), `dbreplic` (DB Replic's whole pipeline: source,
//! reporting database, Elasticsearch stand-in, settings, the running component), `docker_lab`
//! (the slave's Docker lab), `es_server` (the Elasticsearch stand-in), `cluster` (a PostgreSQL
//! server on a test host), `monitor_process` (`xivo-ha monitor` as a process with its HTTP
//! endpoint), `nginx` (a real nginx and a stand-in xivo-auth), `smtp` (a real SMTP server
//! storing what it receives), `sshd`, `testhost` and `files` (node trees: write, read,
//! snapshot, modification times); here, temporary node roots, the `xivo-ha` binary, the checks
//! of a command's output, daemons killed on drop and waiting for an event.
//!
//! Every test file says `mod common;`; a fixture some test binaries do not use is not dead code.
#![allow(dead_code)]

pub mod cluster;
pub mod db;
pub mod dbreplic;
pub mod docker_lab;
pub mod es_server;
pub mod files;
pub mod monitor_process;
pub mod nginx;
pub mod smtp;
pub mod sshd;
pub mod testhost;

#[allow(unused_imports)]
pub use db::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A child process (a daemon a test started) killed and reaped when dropped.
pub struct KilledOnDrop(pub Child);

impl std::ops::Deref for KilledOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KilledOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes the node's ha.conf, `<root>/etc/xivo/ha.conf`.
pub fn write_ha_conf(root: &Path, node_type: &str, peer: &str) {
    std::fs::create_dir_all(root.join("etc/xivo")).unwrap();
    std::fs::write(
        root.join("etc/xivo/ha.conf"),
        format!(r#"{{"node_type": "{node_type}", "remote_address": "{peer}"}}"#),
    )
    .unwrap();
}

/// Writes `text` as the node's settings file, `<root>/etc/docker/xivo/custom.env`.
pub fn write_custom_env(root: &Path, text: &str) {
    let path = root.join("etc/docker/xivo/custom.env");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The `xivo-ha` binary built for these tests.
pub fn xivo_ha_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_xivo-ha"))
}

/// `xivo-ha --root <root> --db <db> <args>`, with a clean environment for xivo-ha's variables.
pub fn xivo_ha(root: &Path, db: &str, args: &[&str]) -> Output {
    xivo_ha_env(root, db, &[], args)
}

/// The same with `env` set (over custom.env), e.g. `XIVO_HA_ALERT_SMTP` at a test's server.
pub fn xivo_ha_env(root: &Path, db: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(xivo_ha_bin());
    test_env(&mut command);
    command.envs(env.iter().copied());
    command
        .arg("--root")
        .arg(root)
        .arg("--db")
        .arg(db)
        .args(args);
    command.output().expect("xivo-ha runs")
}

/// The same, inside a fresh network namespace without routes (`unshare -n`): for commands whose
/// arguments hold documentation addresses that must never be contacted.
pub fn xivo_ha_isolated(root: &Path, db: &str, args: &[&str]) -> Output {
    let mut command = Command::new("unshare");
    command.arg("-n");
    run_xivo_ha_under(command, root, db, args)
}

/// The same as [`xivo_ha_isolated`], with `read_only` (a directory under the root) mounted
/// read-only: a bind mount remounted `ro` in a private mount namespace (`unshare -m`), which
/// refuses every write with EROFS, root's included (root ignores permission bits, so a chmod
/// would not do), and vanishes with the process.
pub fn xivo_ha_read_only(root: &Path, read_only: &Path, db: &str, args: &[&str]) -> Output {
    let mut command = Command::new("unshare");
    command
        .args(["-m", "-n", "sh", "-c"])
        .arg(r#"dir=$1; shift; mount --bind "$dir" "$dir" && mount -o remount,bind,ro "$dir" && exec "$@""#)
        .arg("sh")
        .arg(read_only);
    run_xivo_ha_under(command, root, db, args)
}

/// `command` (unshare and its options) running `xivo-ha --root <root> --db <db> <args>`.
fn run_xivo_ha_under(mut command: Command, root: &Path, db: &str, args: &[&str]) -> Output {
    test_env(&mut command);
    command
        .arg(xivo_ha_bin())
        .arg("--root")
        .arg(root)
        .arg("--db")
        .arg(db)
        .args(args);
    command.output().expect("unshare runs (tests run as root)")
}

/// Removes xivo-ha's variables (`XIVO_HA_*`) of the test process from `command`'s environment.
pub fn clear_xivo_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("XIVO_HA_") {
            command.env_remove(key);
        }
    }
}

/// [`clear_xivo_env`], and mail off (never to a port 25 of the machine) unless the test sets
/// `XIVO_HA_ALERT_SMTP` at its own server.
fn test_env(command: &mut Command) {
    clear_xivo_env(command);
    command.env("XIVO_HA_ALERT_SMTP", "");
}

/// The summary line of the monitor's state document on `root` (empty while there is none).
pub fn monitor_summary(root: &Path) -> String {
    std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|doc| doc["summary"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails the test with the command's output when it did not exit 0.
pub fn assert_success(output: &Output) {
    assert_ran("the command", output);
}

/// The same, naming `what` ran (e.g. `tc`, `chromium <args>`) in the failure.
pub fn assert_ran(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
}

/// Fails the test unless the command exited `code` with one line on stderr (`what` names the
/// case in a failure); gives that line.
pub fn assert_one_line_exit(output: &Output, code: i32, what: &str) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{what}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
    err.trim().to_owned()
}

/// Runs `command` (`what` names it in a failure, e.g. `docker ps`); fails the test when it
/// does not start or does not exit 0. Gives its output.
pub fn output_of(what: &str, command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    assert_ran(what, &output);
    output
}

/// Fails the test unless `text` holds every one of `parts`, naming the first it lacks.
pub fn assert_holds(text: &str, parts: &[impl AsRef<str>]) {
    for part in parts {
        let part = part.as_ref();
        assert!(text.contains(part), "`{part}` not in:\n{text}");
    }
}

/// Fails the test unless the command exited 0 and its stdout holds `words`; gives the stdout.
pub fn assert_says(output: &Output, words: &str) -> String {
    assert_success(output);
    let said = stdout(output);
    assert!(said.contains(words), "`{words}` not in stdout:\n{said}");
    said
}

/// Fails the test unless the command failed and its stderr holds `words`; gives the stderr.
pub fn assert_refused(output: &Output, words: &str) -> String {
    let message = stderr(output);
    assert!(!output.status.success(), "exit 0, stderr:\n{message}");
    assert!(
        message.contains(words),
        "`{words}` not in stderr:\n{message}"
    );
    message
}

/// Polls `check` every 50 ms until it holds; fails the test naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same for a blocking test.
pub fn wait_for_blocking(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
