//! End to end, against the real Docker engine: the two-node demo (`scripts/demo.sh`, the
//! README's first command) run as a test, on an image built from the binaries `cargo test`
//! just built (the release build would take minutes). The scenario lives once, in the script:
//! this test gives it its own name prefix and a results file, then checks the measurements:
//! B's configuration equals A's after the replication, B stands by while A serves, fails over
//! within 10 s of A being stopped, hands back after A returns (not before the hold-down), a CEL
//! written on B meanwhile reaches the reporting database with B as origin (DB Replic, when the
//! binary has it), the voicemail message and the recording made on B and the DND set on B are
//! on A after the failback without any command (issue 14: the copy-back over B's sshd, the
//! merge-back in the replication), and nothing the run created is left, even when the test
//! fails (the script's trap, then this test's Drop guard).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::output_of;

/// The whole demo must end within this (it takes about 50 s here); then it is stopped.
const DEADLINE: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// What is left on the engine under `prefix`: container names and network names.
fn leftovers(prefix: &str) -> (Vec<String>, Vec<String>) {
    let containers = docker_lines(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^/{prefix}"),
        "--format",
        "{{.Names}}",
    ]);
    let networks = docker_lines(&[
        "network",
        "ls",
        "--filter",
        &format!("name=^{prefix}"),
        "--format",
        "{{.Name}}",
    ]);
    (containers, networks)
}

/// Removes whatever the run left (containers, then the network) and the test's image tags,
/// whatever happened to the test.
struct Guard {
    prefix: String,
    repository: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let (containers, networks) = leftovers(&self.prefix);
        for name in containers {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
        for name in networks {
            let _ = Command::new("docker")
                .args(["network", "rm", &name])
                .output();
        }
        for tag in ["latest", env!("CARGO_PKG_VERSION")] {
            let _ = Command::new("docker")
                .args(["rmi", &format!("{}:{tag}", self.repository)])
                .output();
        }
    }
}

fn read_results(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn number(results: &BTreeMap<String, String>, key: &str, log: &str) -> f64 {
    results
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the demo reported no {key}; its output:\n{log}"))
}

#[test]
fn the_demo_pair_replicates_fails_over_and_back_and_leaves_nothing() {
    let pid = std::process::id();
    let prefix = format!("xivoha-e2e{pid}-");
    let repository = format!("xivoha-e2e{pid}");
    let _guard = Guard {
        prefix: prefix.clone(),
        repository: repository.clone(),
    };

    // The xivo-ha image from the debug binaries, with the classic names and the stand-in.
    let mut build = Command::new("bash");
    build
        .arg(repo().join("docker/build-local.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_xivo-ha")])
        .args(["--standin", env!("CARGO_BIN_EXE_xivo-ha-sip-standin")])
        .args(["--repository", &repository]);
    output_of("docker/build-local.sh", &mut build);
    let image = format!("{repository}:{}", env!("CARGO_PKG_VERSION"));

    let dir = tempfile::tempdir().unwrap();
    let results_file = dir.path().join("results");
    let log_file = dir.path().join("demo.log");
    let log = std::fs::File::create(&log_file).unwrap();
    let mut demo = Command::new("bash")
        .arg(repo().join("scripts/demo.sh"))
        .args(["--image", &image, "--prefix", &prefix, "--results"])
        .arg(&results_file)
        // The monitor on its defaults, whatever the caller's environment says.
        .env_remove("XIVO_HA_MONITOR_INTERVAL_MS")
        .env_remove("XIVO_HA_MONITOR_SIP_INTERVAL_MS")
        .env_remove("XIVO_HA_MONITOR_DOWN_AFTER_MS")
        .env_remove("XIVO_HA_MONITOR_UP_AFTER_MS")
        .env_remove("XIVO_HA_MONITOR_HOLD_DOWN_MS")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("bash runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > DEADLINE {
            // SIGTERM: the script's trap tears down; SIGKILL if it does not end.
            let _ = Command::new("kill")
                .args(["-TERM", &demo.id().to_string()])
                .status();
            let stopping = Instant::now();
            while demo.try_wait().unwrap().is_none() && stopping.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = demo.kill();
            let _ = demo.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    println!("{log}");
    let results = read_results(&results_file);

    // Nothing left by the script's own teardown (checked before the guard cleans up).
    let (containers, networks) = leftovers(&prefix);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "left behind: containers {containers:?}, networks {networks:?}"
    );
    assert_eq!(
        results.get("containers_left").map(String::as_str),
        Some("0")
    );
    assert_eq!(results.get("networks_left").map(String::as_str), Some("0"));

    let status =
        status.unwrap_or_else(|| panic!("the demo did not end within {DEADLINE:?}:\n{log}"));
    assert!(status.success(), "the demo failed ({status}):\n{log}");

    // The replication: every replicated table of B equals A's.
    assert_eq!(
        results.get("config_equal").map(String::as_str),
        Some("yes"),
        "{log}"
    );
    assert!(number(&results, "config_tables", &log) >= 10.0, "{log}");
    assert!(number(&results, "config_rows", &log) >= 30.0, "{log}");
    assert_eq!(results.get("standby").map(String::as_str), Some("yes"));

    // Failover within 10 s of stopping A (the defaults: 1.2 s without a SIP answer, then docker start).
    let failover = number(&results, "failover_s", &log);
    assert!(failover <= 10.0, "failover took {failover} s:\n{log}");

    // Failback after A came back, and not before the 10 s hold-down since the failover.
    let failback = number(&results, "failback_s", &log);
    let served = number(&results, "standin_s", &log);
    assert!(failback > 0.0, "{log}");
    assert!(served >= 9.0, "B handed back after {served} s only:\n{log}");

    // DB Replic: a CEL written on B while A is down reaches the reporting database with B as
    // its origin.
    assert_eq!(
        results.get("dbreplic").map(String::as_str),
        Some("yes"),
        "{log}"
    );
    assert_eq!(
        results.get("cel_origin").map(String::as_str),
        Some("xivo-b"),
        "{log}"
    );

    // The copy-back: B's voicemail message (text and audio) and its recording are on A, the
    // same bytes, without any command; the summary says how many came back.
    assert_eq!(
        results.get("copy_back").map(String::as_str),
        Some("yes"),
        "{log}"
    );
    assert_eq!(number(&results, "copied_back_files", &log), 3.0, "{log}");
    assert!(
        log.contains("after failback: ")
            && log.contains(" user statuses merged back, 3 files copied back"),
        "{log}"
    );

    // Alice's DND, set on B during the failover, is on A after the failback, and the
    // replication record lists it among its `merged_back`.
    assert_eq!(
        results.get("dnd_on_a").map(String::as_str),
        Some("yes"),
        "{log}"
    );
    assert!(number(&results, "merged_back", &log) >= 1.0, "{log}");
}

/// The script's own copy of the tables replication leaves out (its equality check skips them)
/// is the replication's list.
#[test]
fn the_demo_compares_exactly_the_replicated_tables() {
    let script = std::fs::read_to_string(repo().join("scripts/demo.sh")).unwrap();
    let listed: Vec<String> = script
        .lines()
        .filter(|l| l.trim_start().starts_with("excluded") || l.contains("local excluded="))
        .flat_map(|l| {
            l.split('\'')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    let mut expected: Vec<String> = xivo_ha::replication::EXCLUDED_TABLES
        .iter()
        .map(|t| t.to_string())
        .collect();
    expected.sort();
    assert_eq!(listed_sorted, expected);
}
