//! The slave monitor against the real Docker engine: a stand-in master on a private network,
//! the slave's service containers, the monitor running in this process. The master is stopped,
//! paused, disconnected, and made SIP-silent while its container stays up; the slave's
//! containers must start and stop accordingly, with their restart policy set to `no`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::docker_lab::*;
use common::*;
use xivo_ha::context::Context;
use xivo_ha::monitor::Monitor;
use xivo_ha::monitor::settings::MonitorSettings;

/// The monitor running in a task of this test, stopped (and awaited) on drop of the handle.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), xivo_ha::monitor::MonitorError>>>,
}

impl Running {
    fn start(root: &Path) -> Running {
        let ctx = Context::new(root, "", None);
        let settings = MonitorSettings::load(&ctx.env().unwrap()).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(Monitor::new(ctx, settings).run(async move {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn state(root: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Blocking waits run on a blocking thread so that the monitor's task keeps running.
async fn wait_services(slave: &SlaveLab, wanted: &str, timeout: Duration) -> Duration {
    tokio::task::block_in_place(|| slave.wait_services(wanted, timeout))
}

fn flag(root: &Path) -> bool {
    root.join("var/lib/xivo/disabled").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_stopped_and_paused_fails_over_and_back() {
    let slave = start_slave_lab(&[("asterisk", true), ("monit", false)], &[]);
    let (lab, master, master_ip, root) = (&slave.lab, &slave.master, slave.master_ip, &slave.root);
    let asterisk = &slave.services[0];

    let monitor = Running::start(root.path());
    // The master answers: the slave's services go down, for good (restart policy no).
    wait_services(&slave, "exited", Duration::from_secs(10)).await;
    assert!(
        flag(root.path()),
        "the flag file records the services as kept down"
    );
    for name in slave.service_names() {
        assert_eq!(lab.restart_policy(name), "no", "{name}");
    }

    // Master stopped: failover.
    docker(&["stop", "-t", "0", master]);
    let took = wait_services(&slave, "running", Duration::from_secs(15)).await;
    assert!(took < Duration::from_secs(8), "failover took {took:?}");
    // Started side by side: the keeper's pass ends once Asterisk's health check passed.
    common::wait_for(
        "the keeper's start to settle",
        Duration::from_secs(15),
        async || {
            let doc = state(root.path());
            doc["services"]["desired"] == "running" && doc["services"]["settled"] == true
        },
    )
    .await;
    assert_eq!(
        lab.health(asterisk),
        "healthy",
        "start waits for the health check"
    );
    assert!(!flag(root.path()));
    let doc = state(root.path());
    assert_eq!(doc["verdict"], "down", "{doc:#}");
    let reason = doc["last_transition"]["reason"].as_str().unwrap();
    assert!(reason.contains("host down"), "{reason}");

    // Master back: failback after the hold-down.
    docker(&["start", master]);
    wait_services(&slave, "exited", Duration::from_secs(15)).await;
    assert_eq!(state(root.path())["verdict"], "up");
    assert!(flag(root.path()));

    // Master frozen (paused): no answer on any path.
    docker(&["pause", master]);
    wait_services(&slave, "running", Duration::from_secs(15)).await;
    docker(&["unpause", master]);
    wait_services(&slave, "exited", Duration::from_secs(15)).await;

    let doc = state(root.path());
    assert_eq!(doc["counters"]["to_down"], 2, "{doc:#}");
    assert_eq!(doc["counters"]["to_up"], 3, "{doc:#}");
    assert_eq!(doc["services"]["errors"], 0, "{doc:#}");
    assert!(
        doc["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("master {master_ip} up since"))
    );

    // HA disabled on this node: it no longer stands by, its services come back.
    std::fs::write(
        root.path().join("etc/xivo/ha.conf"),
        r#"{"node_type": "disabled", "remote_address": ""}"#,
    )
    .unwrap();
    wait_services(&slave, "running", Duration::from_secs(15)).await;
    assert!(!flag(root.path()));
    monitor.stop().await;
    assert_eq!(state(root.path())["summary"], "HA disabled: idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_dead_on_a_live_master_and_a_disconnected_master_fail_over() {
    let slave = start_slave_lab(&[("asterisk", false), ("monit", false)], &[]);
    let (lab, master, root) = (&slave.lab, &slave.master, &slave.root);
    let asterisk = &slave.services[0];

    let monitor = Running::start(root.path());
    wait_services(&slave, "exited", Duration::from_secs(10)).await;

    // Only SIP goes silent; the container, ICMP and TCP stay up: XiVO's blind spot.
    docker(&["kill", "-s", "USR1", master]);
    wait_services(&slave, "running", Duration::from_secs(15)).await;
    assert_eq!(lab.state(master), "running");
    let doc = state(root.path());
    let transition = &doc["last_transition"];
    assert!(
        transition["reason"]
            .as_str()
            .unwrap()
            .contains("Asterisk dead"),
        "{doc:#}"
    );
    let evidence = transition["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("icmp echo reply") && evidence.contains("tcp connected"),
        "{evidence}"
    );

    docker(&["kill", "-s", "USR1", master]);
    wait_services(&slave, "exited", Duration::from_secs(15)).await;

    // Cut from the network.
    docker(&["network", "disconnect", &lab.network, master]);
    wait_services(&slave, "running", Duration::from_secs(15)).await;
    monitor.stop().await;

    // The monitor is gone; the containers stay as they were left, and the state file says why.
    assert_eq!(lab.state(asterisk), "running");
    assert_eq!(state(root.path())["verdict"], "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_commands_act_once() {
    let slave = start_slave_lab(&[("asterisk", false), ("monit", false)], &[]);
    let (lab, master, master_ip, root) = (&slave.lab, &slave.master, slave.master_ip, &slave.root);
    let (asterisk, monit) = (&slave.services[0], &slave.services[1]);
    let ip = master_ip.to_string();

    let run = |args: &[&str]| xivo_ha(root.path(), "", args);
    let output = run(&["check-master-status", &ip]);
    assert_says(&output, &format!("master {ip} up"));
    assert_eq!(lab.state(asterisk), "exited");
    assert_eq!(lab.state(monit), "exited");
    assert_eq!(lab.restart_policy(asterisk), "no");
    assert!(flag(root.path()));

    docker(&["stop", "-t", "0", master]);
    let output = run(&["check-master-status", &ip]);
    assert_says(&output, "down (no answer)");
    slave.wait_services("running", Duration::from_secs(1));
    assert!(!flag(root.path()));

    let output = run(&["manage-slave-services", "stop"]);
    assert_success(&output);
    slave.wait_services("exited", Duration::from_secs(1));
    assert!(flag(root.path()));
    let output = run(&["manage-slave-services", "stop"]);
    assert!(
        stdout(&output).contains("already stopped"),
        "{}",
        stdout(&output)
    );

    // The busybox name works the same.
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("xivo-manage-slave-services");
    std::os::unix::fs::symlink(xivo_ha_bin(), &link).unwrap();
    let output = std::process::Command::new(&link)
        .args(["--root", root.path().to_str().unwrap(), "start"])
        .output()
        .unwrap();
    assert_success(&output);
    slave.wait_services("running", Duration::from_secs(1));

    // A master or a disabled node: check-master-status does nothing.
    std::fs::write(
        root.path().join("etc/xivo/ha.conf"),
        format!(r#"{{"node_type": "master", "remote_address": "{ip}"}}"#),
    )
    .unwrap();
    let output = run(&["check-master-status", &ip]);
    assert_says(&output, "not a slave");
    assert_eq!(lab.state(asterisk), "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_clear_line_and_touches_nothing() {
    let slave = start_slave_lab(&[("asterisk", false)], &[]);
    let (lab, master_ip, root) = (&slave.lab, slave.master_ip, &slave.root);
    let asterisk = &slave.services[0];
    let missing = lab.name("no-such-container");
    slave.configure(&[asterisk, &missing], &[]);
    let ip = master_ip.to_string();

    // An unknown container: named, nothing stopped (the master answers, so `asterisk` would go).
    for args in [
        vec!["check-master-status", ip.as_str()],
        vec!["manage-slave-services", "stop"],
        vec!["monitor"],
    ] {
        let output = xivo_ha(root.path(), "", &args);
        let err = assert_one_line_exit(&output, 1, &format!("{args:?}"));
        assert!(
            err.contains(&format!("container `{missing}` does not exist")),
            "{err}"
        );
        assert_eq!(lab.state(asterisk), "running", "{args:?}");
        assert_eq!(lab.restart_policy(asterisk), "always", "{args:?}");
    }
    assert!(!flag(root.path()));

    // The same through the library: the monitor refuses to start.
    let ctx = Context::new(root.path(), "", None);
    let settings = MonitorSettings::load(&ctx.env().unwrap()).unwrap();
    let error = Monitor::new(ctx, settings)
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");

    // A master address that is not an IP: usage error, exit 2.
    slave.configure(&[asterisk], &[]);
    let output = xivo_ha(root.path(), "", &["check-master-status", "master.example"]);
    assert_eq!(output.status.code(), Some(2));
    assert_refused(&output, "`master.example` is not an IP address");

    // An unreadable ha.conf: exit 1 naming the file, nothing touched.
    std::fs::write(
        root.path().join("etc/xivo/ha.conf"),
        "{\"node_type\": \"slave\",",
    )
    .unwrap();
    for args in [vec!["check-master-status", ip.as_str()], vec!["monitor"]] {
        let output = xivo_ha(root.path(), "", &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains("ha.conf:"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(lab.state(asterisk), "running");
    assert_eq!(lab.restart_policy(asterisk), "always");

    // A bad setting: named with its file and line.
    write_custom_env(root.path(), "XIVO_HA_MONITOR_INTERVAL_MS=soon\n");
    let output = xivo_ha(root.path(), "", &["monitor"]);
    assert_eq!(output.status.code(), Some(1));
    assert_refused(&output, "XIVO_HA_MONITOR_INTERVAL_MS");
}

/// Docker unreachable: the monitor keeps probing, logs, retries with backoff and shows the
/// error in `status`; it does not crash. (No Docker lab needed: the monitor runs in a network
/// namespace without routes and the "master" is a documentation address, never contacted: no
/// answer, so the master is down and the monitor wants the services started.)
#[test]
fn an_unreachable_docker_engine_is_retried_and_shown_never_fatal() {
    let root = tempfile::tempdir().unwrap();
    // No witness check: this namespace has no loopback up to answer (the check has its test).
    let mut env = fast_env(&["asterisk", "monit"]);
    env.retain(|(k, _)| *k != "XIVO_HA_MONITOR_WITNESSES");
    env.push(("XIVO_HA_MONITOR_WITNESSES", "none".into()));
    slave_node(root.path(), "198.51.100.7".parse().unwrap(), &env);
    let mut child = std::process::Command::new("unshare")
        .arg("-n")
        .arg(xivo_ha_bin())
        .arg("--root")
        .arg(root.path())
        .arg("monitor")
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-docker.sock", root.path().display()),
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let doc = loop {
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "the monitor exited");
        if let Ok(text) = std::fs::read_to_string(root.path().join("var/lib/xivo-ha/monitor.json"))
        {
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            if doc["services"]["errors"].as_u64().unwrap_or(0) >= 2 {
                break doc;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no Docker error recorded"
        );
    };
    assert_eq!(doc["verdict"], "down", "{doc:#}");
    assert_eq!(doc["services"]["desired"], "running", "{doc:#}");
    assert_eq!(doc["services"]["settled"], false, "{doc:#}");
    let summary = doc["summary"].as_str().unwrap();
    assert!(
        summary.contains("docker errors") && summary.contains("cannot reach the Docker engine"),
        "{summary}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("retrying"), "{log}");
}

/// A Docker lab of its own, without a master (the tests here name one that is never reached).
fn new_lab() -> Lab {
    Lab::new(Path::new(env!("CARGO_BIN_EXE_xivo-ha-sip-standin")))
}

/// `xivo-ha monitor` in a network namespace of its own (`unshare -n`) holding loopback and a
/// veth pair whose one end has 192.0.2.1/24, so that this node has an address and a subnet
/// broadcast of its own, and no route out: every address written in its ha.conf is data that
/// no packet reaches. Its log goes to a file; stopped with SIGTERM (and reaped) on drop.
struct Isolated {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Isolated {
    fn start(root: &Path) -> Isolated {
        let log = root.join("monitor.log");
        let script = "ip link set lo up && ip link add xha0 type veth peer name xha1 \
             && ip addr add 192.0.2.1/24 dev xha0 && ip link set xha0 up && ip link set xha1 up \
             && exec \"$0\" --root \"$1\" monitor";
        let child = std::process::Command::new("unshare")
            .args(["-n", "sh", "-c", script])
            .arg(xivo_ha_bin())
            .arg(root)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("unshare runs (tests run as root)");
        Isolated { child, log }
    }

    /// `/metrics` of the monitor's HTTP endpoint (default 127.0.0.1:9660 in its namespace).
    fn metrics(&self) -> String {
        let output = std::process::Command::new("nsenter")
            .arg("-t")
            .arg(self.child.id().to_string())
            .args(["-n", "curl", "-sf", "http://127.0.0.1:9660/metrics"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Waits (up to `timeout`) for the monitor's state document to satisfy `wanted`; returns it.
fn wait_doc(
    root: &Path,
    what: &str,
    timeout: Duration,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = std::time::Instant::now();
    loop {
        let doc = std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        if let Some(doc) = &doc
            && wanted(doc)
        {
            return doc.clone();
        }
        assert!(
            started.elapsed() < timeout,
            "after {timeout:?}, still no {what}: {doc:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// What Docker did to `names` between two `unix_now()` instants (start, stop, update...).
fn docker_events(names: &[&str], since: &str, until: &str) -> Vec<String> {
    let mut args = vec!["events", "--since", since, "--until", until];
    let filters: Vec<String> = names.iter().map(|n| format!("container={n}")).collect();
    for filter in &filters {
        args.extend(["--filter", filter.as_str()]);
    }
    args.extend(["--format", "{{.Actor.Attributes.name}} {{.Action}}"]);
    docker(&args)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A ha.conf written by hand with a peer that `configure` refuses (unspecified, loopback, this
/// node's own address, a broadcast, multicast): the monitor neither probes nor starts nor stops
/// anything, and says why in its state, its log (once per peer) and `/metrics`; fixed, it
/// follows ha.conf again by itself.
#[test]
fn a_peer_that_configure_refuses_makes_the_monitor_do_nothing_until_fixed() {
    let mut lab = new_lab();
    let asterisk = lab.service("asterisk", false);
    let monit = lab.service("monit", false);
    docker(&["stop", "-t", "0", &monit]);
    let services = [asterisk.as_str(), monit.as_str()];
    let root = tempfile::tempdir().unwrap();
    let write_peer = |peer: &str| {
        std::fs::write(
            root.path().join("etc/xivo/ha.conf"),
            format!(r#"{{"node_type": "slave", "remote_address": "{peer}"}}"#),
        )
        .unwrap()
    };
    let bad = [
        "0.0.0.0",
        "127.0.0.1",
        "192.0.2.1",
        "192.0.2.255",
        "255.255.255.255",
        "224.0.0.1",
        "ff02::1",
        "::ffff:127.0.0.1",
    ];
    slave_node(
        root.path(),
        bad[0].parse().unwrap(),
        &fast_env(&[&asterisk, &monit]),
    );
    // Recorded as kept down: a slave monitor would stop asterisk at once, before any verdict.
    std::fs::create_dir_all(root.path().join("var/lib/xivo")).unwrap();
    std::fs::write(root.path().join("var/lib/xivo/disabled"), "").unwrap();
    let since = unix_now();
    let monitor = Isolated::start(root.path());

    let mut doc = serde_json::Value::Null;
    for (i, peer) in bad.iter().enumerate() {
        if i > 0 {
            write_peer(peer);
        }
        let refusal = format!(": {peer} is not usable as the master's address");
        doc = wait_doc(root.path(), &refusal, Duration::from_secs(15), |doc| {
            doc["peer_refused"]
                .as_str()
                .is_some_and(|r| r.contains(&refusal))
        });
        let summary = doc["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("slave: doing nothing: ") && summary.contains("ha.conf"),
            "{summary}"
        );
        assert!(
            doc.get("verdict").is_none() && doc.get("services").is_none(),
            "{doc:#}"
        );
    }
    // The state is saved again after 5 s unchanged: 25 more rounds of doing nothing.
    let saved = doc["updated_at"].clone();
    wait_doc(root.path(), "new save", Duration::from_secs(15), |doc| {
        doc["updated_at"] != saved
    });
    let metrics = monitor.metrics();
    assert!(
        metrics.lines().any(|l| l == "xivo_ha_config_error 1"),
        "{metrics}"
    );
    // XiVO's cron command refuses the same addresses.
    for peer in ["127.0.0.1", "224.0.0.1"] {
        let output = xivo_ha_isolated(root.path(), "", &["check-master-status", peer]);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(
            stderr(&output).contains(&format!("{peer} is not usable as the master's address")),
            "{}",
            stderr(&output)
        );
    }
    let until = unix_now();
    assert_eq!(
        docker_events(&services, &since, &until),
        Vec::<String>::new()
    );
    assert_eq!(lab.states(&services), ["running", "exited"]);
    assert_eq!(lab.restart_policy(&asterisk), "always");
    assert!(flag(root.path()));
    let log = monitor.log();
    for peer in bad {
        let refusal = format!(": {peer} is not usable as the master's address");
        assert_eq!(
            log.lines().filter(|l| l.contains(&refusal)).count(),
            1,
            "{peer} logged once:\n{log}"
        );
    }

    // Fixed (a master with no route to it: down): the monitor acts again, by itself.
    write_peer("198.51.100.7");
    lab.wait_state(&services, "running", Duration::from_secs(15));
    let doc = wait_doc(
        root.path(),
        "verdict down",
        Duration::from_secs(15),
        |doc| doc["verdict"] == "down",
    );
    assert!(doc.get("peer_refused").is_none(), "{doc:#}");
    assert_eq!(lab.restart_policy(&asterisk), "no");
    assert!(
        monitor
            .metrics()
            .lines()
            .any(|l| l == "xivo_ha_config_error 0"),
        "{}",
        monitor.metrics()
    );
    assert!(monitor.log().contains("ha.conf's peer is usable again"));
}

/// An image FROM scratch with this machine's /bin/sh and /bin/sleep (no registry), for
/// services that fail: built once per process.
const SHELL_IMAGE: &str = "xivoha-shell:test";
static SHELL_IMAGE_BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Containers of a test outside the lab's own list, removed on drop.
struct Extra(Vec<String>);

impl Extra {
    /// A stopped service container named `name` whose command is the shell `script`.
    fn failing(&mut self, name: String, script: &str) -> String {
        SHELL_IMAGE_BUILT.get_or_init(|| {
            let output = std::process::Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/scratch-image.sh"))
                .args([SHELL_IMAGE, "/bin/sh=/bin/sh", "/bin/sleep=/bin/sleep"])
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
        });
        docker(&[
            "create",
            "--name",
            &name,
            "--network",
            "none",
            SHELL_IMAGE,
            "/bin/sh",
            "-c",
            script,
        ]);
        self.0.push(name.clone());
        name
    }
}

impl Drop for Extra {
    fn drop(&mut self) {
        for name in &self.0 {
            docker_quiet(&["rm", "-f", name]);
        }
    }
}

/// A lab with a healthy `asterisk` (with a health check) and a plain `monit`, both stopped,
/// and none yet of the failing services a test adds.
fn lab_with_stopped_services() -> (Lab, Extra, String, String) {
    let mut lab = new_lab();
    let asterisk = lab.service("asterisk", true);
    let monit = lab.service("monit", false);
    docker(&["stop", "-t", "0", &asterisk, &monit]);
    (lab, Extra(Vec::new()), asterisk, monit)
}

/// A service's script that fails a moment after its start, as an Asterisk that cannot bind.
const CANNOT_BIND: &str = "echo 'ERROR: chan_sip.so: cannot bind 5060' >&2; sleep 0.3; exit 3";

/// A service that exits at once, or a moment after `docker start`: a failed start, named with
/// its exit code and the end of its log, while the healthy and the plain services around it
/// count as started.
#[test]
fn a_service_that_exits_right_after_its_start_is_a_failed_start() {
    let (lab, mut extra, asterisk, monit) = lab_with_stopped_services();
    let late = format!("echo loading modules; {CANNOT_BIND}");
    let late = extra.failing(lab.name("late"), &late);
    let early = extra.failing(
        lab.name("early"),
        "echo 'fatal: no asterisk.conf' >&2; exit 1",
    );
    let root = tempfile::tempdir().unwrap();
    let mut env = fast_env(&[&asterisk, &late, &early, &monit]);
    env.push(("XIVO_HA_MONITOR_START_SETTLE_MS", "1000".into()));
    slave_node(root.path(), "198.51.100.7".parse().unwrap(), &env);

    let output = xivo_ha(root.path(), "", &["manage-slave-services", "start"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    // One error line, after the log of what was done.
    let log = stderr(&output);
    let err = log.trim().lines().last().unwrap();
    assert!(err.starts_with("xivo-ha: error: "), "{log}");
    for (name, code, log) in [
        (&late, 3, "ERROR: chan_sip.so: cannot bind 5060"),
        (&early, 1, "fatal: no asterisk.conf"),
    ] {
        assert!(
            err.contains(&format!("container `{name}` exited with code {code} ")),
            "{err}"
        );
        assert!(err.contains(log), "{err}");
    }
    assert!(
        err.contains("loading modules"),
        "stdout is in the tail too: {err}"
    );
    assert_eq!(
        lab.states(&[&asterisk, &late, &early, &monit]),
        ["running", "exited", "exited", "running"]
    );
    assert_eq!(lab.health(&asterisk), "healthy");
}

/// The monitor keeping a slave's services up while one exits a moment after each start: the
/// failure is in its state (exit code, log tail), its log (ERROR) and `/metrics`, and the tries,
/// each running the start hook again, back off instead of coming every 10 s.
#[test]
fn a_failing_start_is_shown_and_retried_with_backoff() {
    let (lab, mut extra, asterisk, monit) = lab_with_stopped_services();
    let broken = extra.failing(lab.name("broken"), CANNOT_BIND);
    let root = tempfile::tempdir().unwrap();
    let hook_log = root.path().join("pre-start.log");
    let mut env = fast_env(&[&asterisk, &broken, &monit]);
    env.push(("XIVO_HA_MONITOR_START_SETTLE_MS", "1000".into()));
    env.push((
        "XIVO_HA_MONITOR_HOOK_PRE_START",
        format!("date +%s.%N >> {}", hook_log.display()),
    ));
    // No route to the master: it is down, the services are wanted running.
    slave_node(root.path(), "198.51.100.7".parse().unwrap(), &env);
    let monitor = Isolated::start(root.path());

    // Four tries: the first starts all three (the healthy one takes its health checks), then
    // 1 s, 2 s and 4 s of backoff, each try taking its own time on a loaded machine.
    let doc = wait_doc(
        root.path(),
        "4 failed starts",
        Duration::from_secs(45),
        |doc| doc["services"]["start_failures"].as_u64().unwrap_or(0) >= 4,
    );
    let services = &doc["services"];
    assert_eq!(services["settled"], false, "{doc:#}");
    assert_eq!(services["errors"], 0, "{doc:#}");
    let failed = &services["failed_starts"][0];
    assert_eq!(failed["container"], broken.as_str(), "{doc:#}");
    assert_eq!(failed["exit_code"], 3, "{doc:#}");
    assert_eq!(
        failed["log_tail"],
        serde_json::json!(["ERROR: chan_sip.so: cannot bind 5060"]),
        "{doc:#}"
    );
    let summary = doc["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "FAILED TO START: container `{broken}` exited with code 3"
        )),
        "{summary}"
    );
    // The healthy service and the plain one count as started.
    assert_eq!(lab.states(&[&asterisk, &monit]), ["running", "running"]);
    let count = services["start_failures"].as_u64().unwrap();
    let metrics = monitor.metrics();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("xivo_ha_service_start_failures_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    let counted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= count, "{line} after {count}");
    let log = monitor.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(&format!("container `{broken}` exited with code 3"))
            && l.contains("cannot bind 5060")),
        "{log}"
    );

    // The hook ran once per try, and the tries back off (1 s, 2 s, 4 s... after each failure).
    let runs: Vec<f64> = std::fs::read_to_string(&hook_log)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(runs.len() >= 4, "{runs:?}");
    let gaps: Vec<f64> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    // The first try also waited for the healthy service; each later gap is the try plus a
    // wait of at least 1.6 s, then 3.2 s (the backoff from 1 s, jitter taken off).
    assert!(
        gaps[1] >= 1.6 && gaps[2] >= 3.2 && gaps[2] > gaps[1],
        "the tries do not back off: {gaps:?}"
    );
}

/// A process of the test, killed when the test ends (also when it fails).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on this host for `bind` (the stand-in master binds it again).
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// The split-brain guard with the slave's monitor inside a network namespace (a test host):
/// the master is a stand-in on this machine's end of the link, the witness a TCP port there.
/// Unplugging the slave's far end cuts it from both: it must not take over, and say so; with the
/// link back and then the master gone while the witness answers, it takes over as before.
#[test]
fn a_slave_cut_off_from_master_and_witness_does_not_take_over() {
    let mut lab = Lab::new(Path::new(env!("CARGO_BIN_EXE_xivo-ha-sip-standin")));
    let asterisk = lab.service("asterisk", false);
    let mut slave = common::testhost::TestHost::create();
    let (sip_port, pg_port) = (free_port(true), free_port(false));
    let mut master = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_xivo-ha-sip-standin"))
            .args(["--sip-port", &sip_port.to_string()])
            .args(["--tcp-port", &pg_port.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let witness = std::net::TcpListener::bind((slave.gateway, 0)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut env: Vec<(&str, String)> = fast_env(&[&asterisk])
        .into_iter()
        .filter(|(k, _)| *k != "XIVO_HA_MONITOR_WITNESSES")
        .collect();
    env.extend([
        ("XIVO_HA_MONITOR_SIP_PORT", sip_port.to_string()),
        ("XIVO_HA_MONITOR_PG_PORT", pg_port.to_string()),
        (
            "XIVO_HA_MONITOR_WITNESSES",
            witness.local_addr().unwrap().to_string(),
        ),
    ]);
    slave_node(root.path(), slave.gateway.into(), &env);
    let log = root.path().join("monitor.log");
    let mut command = slave.command(xivo_ha_bin().to_str().unwrap());
    for (key, _) in std::env::vars() {
        if key.starts_with("XIVO_HA_") {
            command.env_remove(key);
        }
    }
    command
        .arg("--root")
        .arg(root.path())
        .arg("monitor")
        .stderr(std::fs::File::create(&log).unwrap());
    let monitor = slave.spawn(command);
    let doc = |key: &str| state(root.path())[key].clone();
    let summary = || {
        std::fs::read_to_string(root.path().join("var/lib/xivo-ha/monitor.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|d| d["summary"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let long = Duration::from_secs(20);

    // The master answers: the slave's services go down.
    lab.wait_state(&[&asterisk], "exited", long);

    // Cut off: the master looks down, but no witness answers either.
    slave.unplug();
    wait_for_blocking("the slave says it is isolated", long, || {
        summary().contains("isolated: no witness answers, not taking over")
    });
    let rounds = doc("counters")["rounds"].as_u64().unwrap();
    wait_for_blocking("five more rounds", long, || {
        doc("counters")["rounds"].as_u64().unwrap() >= rounds + 5
    });
    assert_eq!(doc("verdict"), "down");
    assert_eq!(
        lab.state(&asterisk),
        "exited",
        "a cut-off slave never starts"
    );
    assert!(flag(root.path()));
    assert!(
        doc("isolated")["witnesses"]
            .as_str()
            .unwrap()
            .contains("(tcp)"),
        "{}",
        doc("isolated")
    );

    // The network back: the master answers, the episode ends without a takeover.
    slave.plug();
    wait_for_blocking("the isolation ends", long, || {
        let s = summary();
        s.contains(" up since") && !s.contains("isolated")
    });
    assert_eq!(lab.state(&asterisk), "exited");

    // The master gone, the witness answering: takeover as before.
    master.0.kill().unwrap();
    master.0.wait().unwrap();
    lab.wait_state(&[&asterisk], "running", long);
    assert_eq!(doc("verdict"), "down");
    assert!(doc("isolated").is_null());
    assert!(!flag(root.path()));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for_blocking("the monitor stops", long, || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("monitor stopping")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("isolated: no witness answers, not taking over")
            .count(),
        1,
        "logged once per episode: {text}"
    );
    assert!(text.contains("network back after"), "{text}");
}

/// `asterisk -rx COMMAND` in the container `name` (the stand-in's remote console).
fn asterisk_rx(name: &str, command: &str) -> String {
    docker(&["exec", name, "asterisk", "-rx", command])
}

/// Waits until the stand-in's remote console in the container `name` answers: its control
/// socket comes a moment after the container runs.
async fn wait_console(name: &str) {
    wait_for(
        "the stand-in's console",
        Duration::from_secs(10),
        async || {
            std::process::Command::new("docker")
                .args(["exec", name, "asterisk", "-rx", "core show channels count"])
                .output()
                .is_ok_and(|output| output.status.success())
        },
    )
    .await;
}

async fn wait_summary(root: &Path, what: &str, check: impl Fn(&str) -> bool) {
    wait_for(what, Duration::from_secs(20), async || {
        check(&monitor_summary(root))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failback_lets_the_calls_finish() {
    let slave = start_slave_lab(&[("asterisk", false)], &[]);
    let (lab, master, root) = (&slave.lab, &slave.master, slave.root());
    let asterisk = slave.services[0].as_str();
    // The stand-in logs on stderr.
    let logs = || {
        let output = std::process::Command::new("docker")
            .args(["logs", asterisk])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let graceful_exits = || logs().matches("last call ended, exiting").count();

    let monitor = Running::start(root);
    wait_services(&slave, "exited", Duration::from_secs(15)).await;

    // Failover, and a call on the slave.
    docker(&["stop", "-t", "0", master]);
    wait_services(&slave, "running", Duration::from_secs(15)).await;
    wait_console(asterisk).await;
    assert_eq!(asterisk_rx(asterisk, "standin call start"), "1 active call");

    // The master back: the slave drains instead of cutting the call.
    docker(&["start", master]);
    wait_summary(root, "draining 1 call", |s| s.contains("draining 1 call")).await;
    assert_eq!(lab.state(asterisk), "running");
    assert!(logs().contains("stopping gracefully"), "{}", logs());
    let doc = state(root);
    assert_eq!(doc["services"]["draining"]["calls"], 1, "{doc:#}");

    // The master down again: the drain is cancelled, the slave takes new calls again.
    docker(&["stop", "-t", "0", master]);
    wait_summary(root, "the drain cancelled", |s| {
        s.contains(" down since") && !s.contains("draining")
    })
    .await;
    assert_eq!(lab.state(asterisk), "running");
    assert_eq!(
        asterisk_rx(asterisk, "standin call start"),
        "2 active calls"
    );
    let check = std::process::Command::new("docker")
        .args(["exec", asterisk, STANDIN, "--check"])
        .status()
        .unwrap();
    assert!(check.success(), "SIP answers 200 again");

    // Back again: both calls held, then released; the container exits by itself.
    docker(&["start", master]);
    wait_summary(root, "draining 2 calls", |s| s.contains("draining 2 calls")).await;
    asterisk_rx(asterisk, "standin call end");
    wait_summary(root, "draining 1 call", |s| s.contains("draining 1 call")).await;
    assert_eq!(lab.state(asterisk), "running");
    let released = std::time::Instant::now();
    asterisk_rx(asterisk, "standin call end");
    lab.wait_state(&[asterisk], "exited", Duration::from_secs(5));
    let took = released.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "exited {took:?} after the last call"
    );
    assert_eq!(graceful_exits(), 2, "no call cut: {}", logs());
    wait_summary(root, "the drain over", |s| !s.contains("draining")).await;
    monitor.stop().await;

    // XIVO_HA_MONITOR_DRAIN_MAX_S=0: stopped at once, as before.
    slave.configure(&[asterisk], &[("XIVO_HA_MONITOR_DRAIN_MAX_S", "0".into())]);
    docker(&["start", asterisk]);
    lab.wait_state(&[asterisk], "running", Duration::from_secs(10));
    wait_console(asterisk).await;
    asterisk_rx(asterisk, "standin call start");
    std::fs::remove_file(root.join("var/lib/xivo/disabled")).unwrap();
    let monitor = Running::start(root);
    wait_services(&slave, "exited", Duration::from_secs(15)).await;
    assert_eq!(graceful_exits(), 2, "stopped, not drained: {}", logs());
    assert_eq!(
        logs().matches("stopping gracefully").count(),
        3,
        "{}",
        logs()
    );
    monitor.stop().await;
}

/// The drain's `docker exec`: a container without the command is told apart (it is then stopped
/// as before), and the stand-in's console answers with Asterisk's lines.
#[tokio::test]
async fn exec_tells_a_missing_asterisk_command_apart() {
    use xivo_ha::monitor::docker::{Engine, Exec};
    let mut lab = Lab::new(Path::new(env!("CARGO_BIN_EXE_xivo-ha-sip-standin")));
    let service = lab.service("asterisk", false);
    let engine = Engine::connect().await.unwrap();
    let timeout = Duration::from_secs(10);
    let run = async |command: &str| {
        let args = [command, "-rx", "core show channels count"];
        engine.exec(&service, &args, timeout).await.unwrap()
    };
    assert_eq!(run("no-asterisk-here").await, Exec::NotFound);
    let count = run("asterisk").await;
    let Exec::Ran { exit: 0, output } = count else {
        panic!("{count:?}")
    };
    let parsed = xivo_ha::monitor::drain::parse_channels_count(&output).unwrap();
    assert_eq!((parsed.channels, parsed.calls), (0, 0), "{output}");
}

/// Log lines written to a shared buffer (the monitor's WARN lines, for counting).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A state directory that cannot be written fails every round (five a second): one warning,
/// then at most one every 10 minutes; so does reading the maintenance file there. Half an hour
/// of rounds in paused time.
#[tokio::test(start_paused = true)]
async fn an_unwritable_state_directory_is_warned_about_once_per_ten_minutes() {
    let root = tempfile::tempdir().unwrap();
    // A file where the directory should be: no write gets through, root's included.
    std::fs::create_dir_all(root.path().join("var/lib")).unwrap();
    std::fs::write(root.path().join("var/lib/xivo-ha"), "").unwrap();
    let log = LogBuffer::default();
    let writer = log.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let monitor = Running::start(root.path());
    tokio::time::sleep(Duration::from_secs(30 * 60 - 1)).await;
    monitor.stop().await;
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warned = |about: &str| -> Vec<&str> {
        text.lines()
            .filter(|line| line.contains("WARN") && line.contains(about))
            .collect()
    };
    let warnings = warned("cannot create directory");
    // At 0, 10 and 20 minutes; the last two count the rounds left quiet.
    assert_eq!(warnings.len(), 3, "{text}");
    assert!(warnings[1].contains("2999 more times"), "{text}");
    // The maintenance file is read at start, then each round: 3000 reads in 10 minutes.
    let unreadable = warned("maintenance.json");
    assert_eq!(unreadable.len(), 3, "{text}");
    assert!(unreadable[0].contains("cannot read"), "{text}");
    assert!(unreadable[1].contains("3000 more times"), "{text}");
}
