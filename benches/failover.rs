//! `cargo bench --bench failover`: failover and failback times of the slave monitor with its
//! default settings, against real containers (the stand-in Asterisk as master and as the
//! slave's services), and the number of verdict changes ("flaps") and false failovers while
//! the master's link loses 30 % of its packets in each direction (nftables `numgen random`
//! drops in the master's network namespace: this kernel has no netem), then while it delays
//! every packet by 100 to 300 ms each way (a userspace delay line on a TUN device in the
//! master's namespace: this binary run again with `--delay-line`).
//!
//! Each cycle breaks the master one way (stopped, paused, or SIP silent with the container up),
//! measures from just before the command to both slave containers running (failover), keeps it
//! broken until the hold-down has passed, brings it back and measures from the end of that
//! command to both slave containers stopped (failback). Then one failback with a call held on
//! the slave for 20 s after the master's return: `drain_s` is the time from the call's end to
//! the exit of the slave's Asterisk (drained with `core stop gracefully`, no call cut).
//!
//! The monitor's CPU: during the loss phase, the threads of the in-process monitor's runtime
//! (from /proc/self/task); during the delay phase, a child `xivo-ha monitor` (from /proc/PID),
//! whose resident memory is `monitor_rss_mb`.
//!
//! Prints `name=value` lines; the last one is the summary.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::docker_lab::*;
use common::monitor_process::MonitorProcess;
use common::testhost::TestHost;
use xivo_ha::context::Context;
use xivo_ha::monitor::Monitor;
use xivo_ha::monitor::settings::MonitorSettings;
use xivo_ha::monitor::witness::{Witness, Witnesses};

/// Failover/failback cycles (`XIVO_HA_BENCH_CYCLES` to change; the goal asks for 10 or more).
const CYCLES: usize = 12;
/// Seconds of 30 % loss, and of delay (`XIVO_HA_BENCH_LOSS_S` to change).
const LOSS_SECONDS: u64 = 120;
/// The delay line's delay of each packet, each way: 200 ms ± 100 ms, uniform.
const DELAY_MS: (u64, u64) = (100, 300);

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

/// CPU ticks (user + system) of the threads of this process named `tokio-…` (the
/// monitor's runtime; the bench's own thread and the docker commands are not counted).
fn runtime_ticks() -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if stat.contains("(tokio-") {
            ticks += stat_ticks(&stat);
        }
    }
    ticks
}

/// utime + stime of a /proc stat line.
fn stat_ticks(stat: &str) -> u64 {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn process_ticks(pid: u32) -> u64 {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap())
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// The delay line (this binary run inside the master's namespace): creates the TUN device
/// `name`, prints `ready`, then writes every packet it reads back into it after a delay drawn
/// uniformly from `min_ms..=max_ms` (so packets may be reordered, as with netem's jitter).
fn delay_line(name: &str, min_ms: u64, max_ms: u64) {
    use rand::RngExt;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;

    let path = std::ffi::CString::new("/dev/net/tun").unwrap();
    // SAFETY: a plain open(2) of a path we own.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    let mut request = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        pad: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `request` lays out.
    let rc = unsafe { libc::ioctl(fd, TUNSETIFF as _, &mut request) };
    assert!(
        rc == 0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is ours and open; the File owns it from here.
    let mut reader = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut writer = reader.try_clone().unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();

    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut due: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
        let mut order = 0u64;
        loop {
            let wait = due
                .peek()
                .map(|Reverse((at, ..))| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(wait) {
                Ok((at, packet)) => {
                    order += 1;
                    due.push(Reverse((at, order, packet)));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            while due
                .peek()
                .is_some_and(|Reverse((at, ..))| *at <= Instant::now())
            {
                let Reverse((_, _, packet)) = due.pop().unwrap();
                let _ = writer.write(&packet);
            }
        }
    });
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = reader.read(&mut buf).expect("read from the TUN device");
        let delay = Duration::from_millis(rng.random_range(min_ms..=max_ms));
        if tx
            .send((Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
        {
            return;
        }
    }
}

/// `ip -n <netns> args...`, or `ip netns exec <netns> sysctl ...` when `args[0]` is sysctl.
fn in_netns(netns: &str, args: &[&str]) {
    if args[0] == "sysctl" {
        let mut all = vec!["netns", "exec", netns];
        all.extend(args);
        run("ip", &all);
    } else {
        let mut all = vec!["-n", netns];
        all.extend(args);
        run("ip", &all);
    }
}

/// Sends every packet to and from `host` through the delay line: a TUN device `tun` in its
/// namespace, the packets arriving on its link and those it sends (locally made) routed into
/// it by policy rules; the delay line writes them back into the device after their delay and
/// the kernel delivers them (incoming) or forwards them out of the link (outgoing).
fn delay_link(host: &mut TestHost, tun: &str) {
    let mut line = host.command(std::env::current_exe().unwrap().to_str().unwrap());
    line.args([
        "--delay-line",
        tun,
        &DELAY_MS.0.to_string(),
        &DELAY_MS.1.to_string(),
    ])
    .stdout(std::process::Stdio::piped());
    let mut child = line.spawn().expect("the delay line starts");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready", "the delay line did not start");
    host.adopt(child);
    let netns = host.netns.clone();
    let link = host.peer_link().to_owned();
    let (ip, gateway) = (host.ip.to_string(), host.gateway.to_string());
    let sysctls = [
        "net.ipv4.ip_forward=1".to_owned(),
        "net.ipv4.conf.all.rp_filter=0".to_owned(),
        format!("net.ipv4.conf.{tun}.rp_filter=0"),
        format!("net.ipv4.conf.{link}.rp_filter=0"),
        // The replies come back from the device with this host's own source address.
        format!("net.ipv4.conf.{tun}.accept_local=1"),
    ];
    for sysctl in &sysctls {
        in_netns(&netns, &["sysctl", "-q", "-w", sysctl]);
    }
    in_netns(&netns, &["link", "set", tun, "up"]);
    // In: what arrives on the link for this host goes to the device first.
    in_netns(&netns, &["route", "add", &ip, "dev", tun, "table", "100"]);
    in_netns(
        &netns,
        &["rule", "add", "pref", "10", "iif", &link, "lookup", "100"],
    );
    // Out: what this host sends to this machine goes to the device first.
    in_netns(
        &netns,
        &[
            "route", "add", &gateway, "dev", tun, "src", &ip, "table", "101",
        ],
    );
    in_netns(
        &netns,
        &[
            "rule", "add", "pref", "11", "iif", "lo", "to", &gateway, "lookup", "101",
        ],
    );
    // The local table after those rules (it comes first by default).
    in_netns(&netns, &["rule", "add", "pref", "50", "lookup", "local"]);
    in_netns(&netns, &["rule", "del", "pref", "0"]);
}

/// `count` ICMP echoes to `ip`, 20 ms apart, each waiting 2 s: the share lost (%) and the
/// round trips of the others (min/avg/max ms). (No `ping` binary here: surge-ping, as the
/// monitor.)
fn ping_stats(runtime: &tokio::runtime::Runtime, ip: IpAddr, count: u16) -> (f64, String) {
    runtime.block_on(async move {
        let client = xivo_ha::monitor::probe::icmp_client(ip).expect("an ICMP socket (root)");
        let mut pings = Vec::new();
        for seq in 0..count {
            let client = client.clone();
            pings.push(tokio::spawn(async move {
                let mut pinger = client
                    .pinger(ip, surge_ping::PingIdentifier(rand::random()))
                    .await;
                pinger.timeout(Duration::from_secs(2));
                pinger
                    .ping(surge_ping::PingSequence(seq), &[0; 16])
                    .await
                    .ok()
                    .map(|(_, rtt)| rtt.as_secs_f64() * 1000.0)
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut rtts = Vec::new();
        for ping in pings {
            if let Some(rtt) = ping.await.unwrap() {
                rtts.push(rtt);
            }
        }
        let lost = 100.0 * (count as f64 - rtts.len() as f64) / count as f64;
        let summary = if rtts.is_empty() {
            "none".to_owned()
        } else {
            format!(
                "{:.1}/{:.1}/{:.1}",
                rtts.iter().cloned().fold(f64::MAX, f64::min),
                rtts.iter().sum::<f64>() / rtts.len() as f64,
                rtts.iter().cloned().fold(0.0, f64::max)
            )
        };
        (lost, summary)
    })
}

/// Counts the times the services went from all exited to not all exited, sampling every
/// 500 ms for `seconds`.
fn false_failovers(lab: &Lab, services: &[&str], seconds: u64) -> u32 {
    let started = Instant::now();
    let mut events = 0;
    let mut up = false;
    while started.elapsed() < Duration::from_secs(seconds) {
        let now_up = lab.states(services).iter().any(|s| s != "exited");
        events += u32::from(now_up && !up);
        up = now_up;
        std::thread::sleep(Duration::from_millis(500));
    }
    events
}

/// What a watch of a master that stays up saw.
struct Watched {
    rounds: u64,
    rounds_without_sip: u64,
    icmp_silent: u64,
    tcp_silent: u64,
    /// Verdict changes.
    flaps: u64,
    false_failovers: u32,
    /// `ticks` per second of the time, as % of one core.
    cpu_pct: f64,
}

impl Watched {
    fn print(&self, phase: &str) {
        println!("{phase}_rounds={}", self.rounds);
        println!("{phase}_rounds_without_sip={}", self.rounds_without_sip);
        println!("{phase}_flaps={}", self.flaps);
        println!("{phase}_false_failovers={}", self.false_failovers);
    }
}

/// `seconds` of the monitor at `root` watching a master that stays up: the counters of its
/// state file before and after (each read after a state write), the services' false starts
/// and the CPU `ticks` gives (the monitor's).
fn watch(
    lab: &Lab,
    services: &[&str],
    root: &Path,
    seconds: u64,
    ticks: impl Fn() -> u64,
) -> Watched {
    // The state is written every 5 s: wait for a write so that the counters are current.
    std::thread::sleep(Duration::from_secs(6));
    let before = counters(root);
    let (ticks_before, started) = (ticks(), Instant::now());
    let false_failovers = false_failovers(lab, services, seconds);
    let cpu_pct =
        (ticks() - ticks_before) as f64 / clock_ticks_per_s() / started.elapsed().as_secs_f64()
            * 100.0;
    std::thread::sleep(Duration::from_secs(6));
    let after = counters(root);
    let delta = |key: &str| after[key].as_u64().unwrap() - before[key].as_u64().unwrap();
    Watched {
        rounds: delta("rounds"),
        rounds_without_sip: delta("sip_dead") + delta("host_down"),
        icmp_silent: delta("icmp_silent"),
        tcp_silent: delta("tcp_silent"),
        flaps: delta("to_down") + delta("to_up"),
        false_failovers,
        cpu_pct,
    }
}

fn verdict(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("var/lib/xivo-ha/monitor.json")).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    doc["verdict"].as_str().map(str::to_owned)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--delay-line") {
        delay_line(&args[2], args[3].parse().unwrap(), args[4].parse().unwrap());
        return;
    }
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
        "settings: round_s={} sip_interval_s={} down_after_s={} up_after_s={} hold_down_s={} timeout_s={}",
        settings.interval.as_secs_f64(),
        settings.sip_interval.as_secs_f64(),
        settings.down_after.as_secs_f64(),
        settings.up_after.as_secs_f64(),
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
    let (lost, _) = ping_stats(&runtime, master_ip, 200);
    println!("loss_ping_round_trip_pct={lost:.0}");
    let loss_seconds = env_or("XIVO_HA_BENCH_LOSS_S", LOSS_SECONDS);
    let loss = watch(&lab, &services, root.path(), loss_seconds, runtime_ticks);
    loss.print("loss");
    println!("loss_icmp_silent_rounds={}", loss.icmp_silent);
    println!("loss_tcp_silent_rounds={}", loss.tcp_silent);
    println!("loss_monitor_threads_cpu_pct={:.2}", loss.cpu_pct);

    let _ = stop.send(());
    runtime.block_on(monitor).unwrap().unwrap();

    // 100 to 300 ms added to every packet each way on a master in a namespace of its own,
    // watched by `xivo-ha monitor` as a child process on its defaults (the same services).
    let mut host = TestHost::create();
    let mut answering = host.command(standin.to_str().unwrap());
    answering
        .args(["--sip-port", "5060", "--tcp-port", "5432"])
        .stdout(std::process::Stdio::null());
    host.spawn(answering);
    let host_ip: IpAddr = host.ip.into();
    println!(
        "delay_rtt_before_ms={}",
        ping_stats(&runtime, host_ip, 20).1
    );
    delay_link(&mut host, "xhdelay0");
    println!("delay_rtt_ms={}", ping_stats(&runtime, host_ip, 50).1);
    let child_root = tempfile::tempdir().unwrap();
    slave_node(
        child_root.path(),
        host.ip.into(),
        &[
            ("XIVO_HA_MONITOR_CONTAINERS", services.join(",")),
            ("XIVO_HA_MONITOR_WITNESSES", "127.0.0.1".into()),
            ("XIVO_HA_HTTP_LISTEN", String::new()),
            ("XIVO_HA_ALERT_SMTP", String::new()),
        ],
    );
    let child = MonitorProcess::start(child_root.path(), 0);
    let pid = child.child.id();
    common::wait_for_blocking("the child monitor's verdict up", long, || {
        verdict(child_root.path()).as_deref() == Some("up")
    });
    let delay = watch(&lab, &services, child_root.path(), loss_seconds, || {
        process_ticks(pid)
    });
    let monitor_rss_mb = rss_mb(pid);
    delay.print("delay");
    println!("monitor_process_cpu_pct={:.2}", delay.cpu_pct);
    println!("monitor_rss_mb={monitor_rss_mb:.1}");
    drop(child);
    drop(host);
    drop(lab);

    println!(
        "failover_p50_s={:.2} failover_max_s={:.2} failback_p50_s={:.2} flaps={} false_failovers={} monitor_cpu_pct={:.2} drain_s={drain:.2} monitor_rss_mb={monitor_rss_mb:.1}",
        percentile(&failovers, 50.0),
        failovers.iter().cloned().fold(0.0, f64::max),
        percentile(&failbacks, 50.0),
        loss.flaps + delay.flaps,
        loss.false_failovers + delay.false_failovers,
        delay.cpu_pct.max(loss.cpu_pct),
    );
}
