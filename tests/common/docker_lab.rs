//! A private Docker lab for the monitor's tests and its benchmark: the stand-in Asterisk image
//! (built FROM scratch with `scripts/scratch-image.sh`, no registry), a private network, and
//! containers whose names all start with a prefix unique to the process and the lab
//! (`xivoha-t<pid>-<n>-`). Everything is removed when the lab is dropped, also when a test
//! fails. Uses the docker CLI: it is what an administrator would type.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The stand-in image's tag: one per source build, shared by the labs of a run.
pub const IMAGE: &str = "xivoha-sip-standin:test";
/// The stand-in binary inside the image.
pub const STANDIN: &str = "/usr/local/bin/xivo-ha-sip-standin";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static IMAGE_BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// `docker <args>`; panics with docker's message when it fails.
pub fn docker(args: &[&str]) -> String {
    let what = format!("docker {}", args.join(" "));
    let output = super::output_of(&what, Command::new("docker").args(args));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The same, ignoring failures (clean-up).
pub fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker").args(args).output();
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the stand-in image once per process from the freshly built stand-in binary (and
/// /bin/sh, which Docker's shell-form health checks need).
pub fn build_image(standin: &Path) {
    let result = IMAGE_BUILT.get_or_init(|| {
        let output = Command::new("bash")
            .arg(manifest_dir().join("scripts/scratch-image.sh"))
            .arg(IMAGE)
            .arg(standin)
            .arg("/bin/sh=/bin/sh")
            // The stand-in's remote console under Asterisk's name: `asterisk -rx COMMAND`.
            .args(["--links", "/usr/local/bin/asterisk=xivo-ha-sip-standin"])
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    });
    if let Err(e) = result {
        panic!("cannot build the stand-in image: {e}");
    }
}

/// One lab: a network and containers, removed on drop.
pub struct Lab {
    pub prefix: String,
    pub network: String,
    containers: Vec<String>,
}

impl Lab {
    pub fn new(standin: &Path) -> Lab {
        build_image(standin);
        let prefix = format!(
            "xivoha-t{}-{}-",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let network = format!("{prefix}net");
        docker(&["network", "create", "--driver", "bridge", &network]);
        Lab {
            prefix,
            network,
            containers: Vec::new(),
        }
    }

    pub fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The "master": the stand-in answering SIP on 5060/udp and TCP on 5432, on the lab's
    /// network. Returns its name and address.
    pub fn master(&mut self) -> (String, IpAddr) {
        let name = self.name("master");
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.network,
            IMAGE,
            STANDIN,
            "--tcp-port",
            "5432",
        ]);
        self.containers.push(name.clone());
        let ip = self.ip(&name);
        (name, ip)
    }

    /// One of the slave's services, running, with a restart policy as `docker compose` would
    /// give it (`always`) so that the tests see the monitor change it. `healthy` adds a health
    /// check (an OPTIONS to itself). No network: it only has to run.
    pub fn service(&mut self, suffix: &str, healthy: bool) -> String {
        let name = self.name(suffix);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "--restart",
            "always",
        ];
        let check = format!("{STANDIN} --check");
        if healthy {
            args.extend([
                "--health-cmd",
                &check,
                "--health-interval",
                "200ms",
                "--health-timeout",
                "2s",
                "--health-retries",
                "3",
            ]);
        }
        args.extend([IMAGE, STANDIN]);
        docker(&args);
        self.containers.push(name.clone());
        name
    }

    pub fn ip(&self, name: &str) -> IpAddr {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network
        );
        docker(&["inspect", "-f", &format, name])
            .parse()
            .expect("the container has an address on the lab network")
    }

    /// `running`, `exited`, `paused`, ...
    pub fn state(&self, name: &str) -> String {
        docker(&["inspect", "-f", "{{.State.Status}}", name])
    }

    /// The states of several containers in one `docker inspect`.
    pub fn states(&self, names: &[&str]) -> Vec<String> {
        let mut args = vec!["inspect", "-f", "{{.State.Status}}"];
        args.extend(names);
        docker(&args).lines().map(str::to_owned).collect()
    }

    pub fn health(&self, name: &str) -> String {
        docker(&[
            "inspect",
            "-f",
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
            name,
        ])
    }

    pub fn restart_policy(&self, name: &str) -> String {
        docker(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", name])
    }

    /// The PID of the container's process on the host (to enter its network namespace).
    pub fn pid(&self, name: &str) -> u32 {
        docker(&["inspect", "-f", "{{.State.Pid}}", name])
            .parse()
            .expect("a PID")
    }

    /// Waits until every container in `names` is in `state`; returns the time it took, or
    /// panics with the states seen after `timeout`.
    pub fn wait_state(&self, names: &[&str], state: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let states = self.states(names);
            if states.iter().all(|s| s == state) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "after {timeout:?}, wanted {state} for {names:?}, got {states:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in &self.containers {
            docker_quiet(&["rm", "-f", name]);
        }
        docker_quiet(&["network", "rm", &self.network]);
    }
}

/// Short windows so that the suite stays fast: rounds (and pings) of 100 ms, SIP every 25 ms,
/// down after 500 ms of SIP silence (as the former 3 rounds of 200 ms), up after 400 ms of
/// answers and 1 s down; loopback as the witness; no alert mail.
pub fn fast_env(containers: &[&str]) -> Vec<(&'static str, String)> {
    vec![
        ("XIVO_HA_MONITOR_INTERVAL_MS", "100".into()),
        ("XIVO_HA_MONITOR_ICMP_TIMEOUT_MS", "150".into()),
        ("XIVO_HA_MONITOR_TCP_TIMEOUT_MS", "150".into()),
        ("XIVO_HA_MONITOR_SIP_TIMEOUT_MS", "150".into()),
        ("XIVO_HA_MONITOR_SIP_INTERVAL_MS", "25".into()),
        ("XIVO_HA_MONITOR_DOWN_AFTER_MS", "500".into()),
        ("XIVO_HA_MONITOR_UP_AFTER_MS", "400".into()),
        ("XIVO_HA_MONITOR_HOLD_DOWN_MS", "1000".into()),
        ("XIVO_HA_MONITOR_STOP_GRACE_S", "1".into()),
        ("XIVO_HA_MONITOR_START_TIMEOUT_S", "15".into()),
        ("XIVO_HA_MONITOR_CONTAINERS", containers.join(",")),
        // No mail unless a test starts its own SMTP server.
        ("XIVO_HA_ALERT_SMTP", String::new()),
        // The witness before a takeover: loopback (the default, this machine's gateway, is no
        // test address).
        ("XIVO_HA_MONITOR_WITNESSES", "127.0.0.1".into()),
    ]
}

/// Writes the node's ha.conf (slave of `master`) and custom.env under `root`.
pub fn slave_node(root: &Path, master: IpAddr, env: &[(&str, String)]) {
    let etc = root.join("etc/xivo");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("ha.conf"),
        format!(r#"{{"node_type": "slave", "remote_address": "{master}"}}"#),
    )
    .unwrap();
    let env_dir = root.join("etc/docker/xivo");
    std::fs::create_dir_all(&env_dir).unwrap();
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(env_dir.join("custom.env"), text).unwrap();
}

/// A slave node in a Docker lab of its own: the stand-in master, the slave's service
/// containers and the node's root, whose ha.conf names the master and whose custom.env gives
/// the monitor short rounds (`fast_env`) over those containers. Removed on drop.
pub struct SlaveLab {
    pub master: String,
    pub master_ip: IpAddr,
    /// The service containers' names, in the order asked.
    pub services: Vec<String>,
    pub root: tempfile::TempDir,
    pub lab: Lab,
}

/// Starts the master and one service container per `(suffix, health check)` of `services`,
/// and writes the node's files with `extra_env` after the monitor's settings.
pub fn start_slave_lab(services: &[(&str, bool)], extra_env: &[(&str, String)]) -> SlaveLab {
    let mut lab = Lab::new(Path::new(env!("CARGO_BIN_EXE_xivo-ha-sip-standin")));
    let (master, master_ip) = lab.master();
    let services = services
        .iter()
        .map(|(suffix, healthy)| lab.service(suffix, *healthy))
        .collect();
    let slave = SlaveLab {
        master,
        master_ip,
        services,
        root: tempfile::tempdir().unwrap(),
        lab,
    };
    slave.configure(&slave.service_names(), extra_env);
    slave
}

impl SlaveLab {
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn service_names(&self) -> Vec<&str> {
        self.services.iter().map(String::as_str).collect()
    }

    /// Rewrites the node's ha.conf and custom.env: the monitor manages `containers`.
    pub fn configure(&self, containers: &[&str], extra_env: &[(&str, String)]) {
        let env = [fast_env(containers), extra_env.to_vec()].concat();
        slave_node(self.root(), self.master_ip, &env);
    }

    /// Waits until every service container is in `state` (see [`Lab::wait_state`]).
    pub fn wait_services(&self, state: &str, timeout: Duration) -> Duration {
        self.lab.wait_state(&self.service_names(), state, timeout)
    }
}
