//! `cargo bench --bench failover`: failover and failback times of the slave monitor with its
//! default settings, against real containers (the stand-in Asterisk as master and as the
//! slave's services), and the number of verdict changes ("flaps") while the master's link
//! loses 30 % of its packets in each direction (nftables `numgen random` drops in the master's
//! network namespace: this kernel has no netem).
//!
//! Each cycle breaks the master one way (stopped, paused, or SIP silent with the container up),
//! measures from just before the command to both slave containers running (failover), keeps it
//! broken until the hold-down has passed, brings it back and measures from the end of that
//! command to both slave containers stopped (failback). Then one failback with a call held on
//! the slave for 20 s after the master's return: `drain_s` is the time from the call's end to
//! the exit of the slave's Asterisk (drained with `core stop gracefully`, no call cut).
//!
//! Prints `name=value` lines; the last one is the summary.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker_lab::*;
use xivo_ha::context::Context;
use xivo_ha::monitor::Monitor;
use xivo_ha::monitor::settings::MonitorSettings;
use xivo_ha::monitor::witness::{Witness, Witnesses};

/// Failover/failback cycles (`XIVO_HA_BENCH_CYCLES` to change; the goal asks for 10 or more).
const CYCLES: usize = 12;
/// Seconds of 30 % loss (`XIVO_HA_BENCH_LOSS_S` to change).
const LOSS_SECONDS: u64 = 90;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().expect("runs");
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Drops `percent` % of the packets the master receives and of those it sends, at random,
/// with nftables inside its network namespace only (the kernel here has no netem qdisc;
/// `numgen random` gives the same independent loss). The rules go away with the container.
fn lossy_link(pid: u32, percent: u32) {
    let pid = pid.to_string();
    let nft = |args: &[&str]| {
        let mut all = vec!["-t", pid.as_str(), "-n", "nft"];
        all.extend(args);
        run("nsenter", &all);
    };
    nft(&["add", "table", "inet", "xivoha_loss"]);
    let rule = format!("numgen random mod 100 < {percent} drop");
    for (chain, hook) in [("in", "input"), ("out", "output")] {
        let spec = format!("{{ type filter hook {hook} priority 0; }}");
        nft(&["add", "chain", "inet", "xivoha_loss", chain, &spec]);
        nft(&["add", "rule", "inet", "xivoha_loss", chain, &rule]);
    }
}

fn counters(root: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["counters"].clone()
}

fn main() {
    let standin = Path::new(env!("CARGO_BIN_EXE_xivo-ha-sip-standin"));
    let mut lab = Lab::new(standin);
    let (master, master_ip) = lab.master();
    let asterisk = lab.service("asterisk", false);
    let monit = lab.service("monit", false);
    let services = [asterisk.as_str(), monit.as_str()];
    let root = tempfile::tempdir().unwrap();
    slave_node(root.path(), master_ip, &[]);

    // The defaults, except which containers to act on.
    let settings = MonitorSettings {
        containers: vec![asterisk.clone(), monit.clone()],
        // Loopback as the witness: the default (this machine's gateway) is no test address.
        witnesses: Witnesses::List(vec![Witness::Icmp(Ipv4Addr::LOCALHOST.into())]),
        ..MonitorSettings::default()
    };
    let hold_down = settings.hold_down;
    println!(
        "settings: interval_s={} down_after={} up_after={} hold_down_s={} timeout_s={}",
        settings.interval.as_secs_f64(),
        settings.down_after,
        settings.up_after,
        hold_down.as_secs_f64(),
        settings.round_timeout().as_secs_f64()
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ctx = Context::new(root.path(), "", None);
    let monitor = runtime.spawn(Monitor::new(ctx, settings).run(async move {
        let _ = stopped.await;
    }));

    let long = Duration::from_secs(60);
    lab.wait_state(&services, "exited", long);

    let mut failovers = Vec::new();
    let mut failbacks = Vec::new();
    for cycle in 0..env_or("XIVO_HA_BENCH_CYCLES", CYCLES) {
        let mode = ["stop", "pause", "sip-silent"][cycle % 3];
        let broken = Instant::now();
        match mode {
            "stop" => docker(&["stop", "-t", "0", &master]),
            "pause" => docker(&["pause", &master]),
            _ => docker(&["kill", "-s", "USR1", &master]),
        };
        lab.wait_state(&services, "running", long);
        let failover = broken.elapsed().as_secs_f64();
        println!("failover_{cycle}_{mode}_s={failover:.2}");
        failovers.push(failover);

        // Keep the master down until the hold-down has passed, as a real outage would.
        std::thread::sleep(hold_down + Duration::from_millis(500));
        match mode {
            "stop" => docker(&["start", &master]),
            "pause" => docker(&["unpause", &master]),
            _ => docker(&["kill", "-s", "USR1", &master]),
        };
        let back = Instant::now();
        assert_eq!(lab.ip(&master), master_ip, "the master kept its address");
        lab.wait_state(&services, "exited", long);
        let failback = back.elapsed().as_secs_f64();
        println!("failback_{cycle}_{mode}_s={failback:.2}");
        failbacks.push(failback);
    }

    // A failback with a call: held on the slave's Asterisk for 20 s after the master's return,
    // then ended; drain_s is the time from its end to the container's exit.
    docker(&["stop", "-t", "0", &master]);
    lab.wait_state(&services, "running", long);
    docker(&["exec", &asterisk, "asterisk", "-rx", "standin call start"]);
    std::thread::sleep(hold_down + Duration::from_millis(500));
    docker(&["start", &master]);
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(lab.state(&asterisk), "running", "the call was cut");
    let ended = Instant::now();
    docker(&["exec", &asterisk, "asterisk", "-rx", "standin call end"]);
    lab.wait_state(&[asterisk.as_str()], "exited", long);
    let drain = ended.elapsed().as_secs_f64();
    println!("drain_s={drain:.2}");
    lab.wait_state(&services, "exited", long);

    // 30 % loss both ways on the master's link; the master stays up: any verdict change is a
    // flap, and the slave's services must stay down.
    lossy_link(lab.pid(&master), 30);
    // The loss as a plain ping sees it (request and reply: about 51 % lost).
    let ping = Command::new("ping")
        .args([
            "-q",
            "-n",
            "-c",
            "200",
            "-i",
            "0.02",
            "-W",
            "1",
            &master_ip.to_string(),
        ])
        .output()
        .expect("ping runs");
    let ping = String::from_utf8_lossy(&ping.stdout).into_owned();
    let lost = ping
        .split(", ")
        .find(|part| part.ends_with("packet loss"))
        .and_then(|part| part.split('%').next())
        .unwrap_or("?");
    println!("loss_ping_round_trip_pct={lost}");
    // Wait for a state write so that the counters read below are current.
    std::thread::sleep(Duration::from_secs(6));
    let before = counters(root.path());
    let started = Instant::now();
    let mut services_started = 0;
    while started.elapsed() < Duration::from_secs(env_or("XIVO_HA_BENCH_LOSS_S", LOSS_SECONDS)) {
        if lab.states(&services).iter().any(|s| s != "exited") {
            services_started += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(6));
    let after = counters(root.path());
    let delta = |key: &str| after[key].as_u64().unwrap() - before[key].as_u64().unwrap();
    let flaps = delta("to_down") + delta("to_up");
    println!("loss_rounds={}", delta("rounds"));
    println!("loss_bad_rounds={}", delta("sip_dead") + delta("host_down"));
    println!("loss_icmp_silent_rounds={}", delta("icmp_silent"));
    println!("loss_tcp_silent_rounds={}", delta("tcp_silent"));
    println!("loss_services_seen_up={services_started}");

    let _ = stop.send(());
    runtime.block_on(monitor).unwrap().unwrap();
    drop(lab);

    println!(
        "failover_p50_s={:.2} failover_max_s={:.2} failback_p50_s={:.2} flaps={flaps} drain_s={drain:.2}",
        percentile(&failovers, 50.0),
        failovers.iter().cloned().fold(0.0, f64::max),
        percentile(&failbacks, 50.0),
    );
}
