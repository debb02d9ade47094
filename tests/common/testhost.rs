//! A test host: a network namespace of its own joined to this machine by a veth pair on a
//! private /24, so that a test can run real servers (sshd, PostgreSQL, ...) at an address that
//! is not this host's, and take them away. Everything is removed on drop.

use std::net::Ipv4Addr;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};

static HOSTS: AtomicU32 = AtomicU32::new(0);

pub struct TestHost {
    /// The namespace's name (`ip netns exec <name> ...`).
    pub netns: String,
    host_link: String,
    peer_link: String,
    /// This machine's end of the link.
    pub gateway: Ipv4Addr,
    /// The test host's address.
    pub ip: Ipv4Addr,
    children: Vec<Child>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl TestHost {
    /// Creates the namespace and the link (tests run as root).
    pub fn create() -> TestHost {
        let n = HOSTS.fetch_add(1, Ordering::SeqCst);
        let tag = (std::process::id() % 10_000) * 10 + n % 10;
        // A /24 per host, picked from the process id so that parallel test binaries differ.
        let subnet = 1 + (std::process::id().wrapping_mul(31).wrapping_add(n * 7)) % 250;
        let host = TestHost {
            netns: format!("xivoha-t{tag}"),
            host_link: format!("xht{tag}h"),
            peer_link: format!("xht{tag}p"),
            gateway: Ipv4Addr::new(10, 213, subnet as u8, 1),
            ip: Ipv4Addr::new(10, 213, subnet as u8, 2),
            children: Vec::new(),
        };
        // Safety net: were a test host's link ever gone, its traffic must hit this unreachable
        // route, never the default gateway (it stays on this machine; "exists" is fine).
        let _ = ip(&[
            "route",
            "add",
            "unreachable",
            "10.213.0.0/16",
            "metric",
            "4000",
        ]);
        let peer_link = host.peer_link.clone();
        let gateway = format!("{}/24", host.gateway);
        let address = format!("{}/24", host.ip);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &host.netns],
            vec![
                "link",
                "add",
                &host.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &peer_link,
            ],
            vec!["link", "set", &peer_link, "netns", &host.netns],
            vec!["addr", "add", &gateway, "dev", &host.host_link],
            vec!["link", "set", &host.host_link, "up"],
            vec![
                "-n",
                &host.netns,
                "addr",
                "add",
                &address,
                "dev",
                &peer_link,
            ],
            vec!["-n", &host.netns, "link", "set", &peer_link, "up"],
            vec!["-n", &host.netns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(&step) {
                drop(host);
                panic!("cannot create the test host: {e}");
            }
        }
        host
    }

    /// `program args...` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]);
        command
    }

    /// Starts a long-running process inside the namespace; killed on drop.
    pub fn spawn(&mut self, mut command: Command) -> u32 {
        let child = command.spawn().expect("the test host's process starts");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Keeps `child` (started inside the namespace) to kill on drop.
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }

    /// The name of the test host's end of the link (inside its namespace).
    pub fn peer_link(&self) -> &str {
        &self.peer_link
    }

    /// Cuts the link at the test host's end: it stops answering at all (as a host that lost
    /// power). Our end stays up, so the route to it stays and nothing leaves this machine.
    pub fn unplug(&self) {
        ip(&["-n", &self.netns, "link", "set", &self.peer_link, "down"]).unwrap();
    }

    /// Limits what this machine sends to the test host to `rate` (tc's syntax, e.g. `2mbit`) on
    /// our end of the link: a transfer lasts long enough to be caught in the middle.
    pub fn throttle(&self, rate: &str) {
        let mut tc = Command::new("tc");
        tc.args([
            "qdisc",
            "add",
            "dev",
            &self.host_link,
            "root",
            "tbf",
            "rate",
            rate,
        ])
        .args(["burst", "32kbit", "latency", "1s"]);
        super::output_of("tc qdisc add", &mut tc);
    }

    pub fn plug(&self) {
        ip(&["-n", &self.netns, "link", "set", &self.peer_link, "up"]).unwrap();
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Removing the namespace removes its end of the veth pair, and with it ours.
        let _ = ip(&["netns", "del", &self.netns]);
        let _ = ip(&["link", "del", &self.host_link]);
    }
}
