//! `xivo-ha monitor` as a child process with its HTTP endpoint on a free loopback port, for
//! the tests that talk to it over real HTTP (tests/http.rs, tests/dashboard.rs).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::docker_lab::{SlaveLab, start_slave_lab};
use super::{KilledOnDrop, clear_xivo_env, wait_for, xivo_ha_bin};

/// A slave's Docker lab (its master and one `asterisk` service) with its monitor running, the
/// endpoint on a free loopback port, `/healthz` answering.
pub async fn start_monitored_slave_lab() -> (SlaveLab, MonitorProcess) {
    let port = free_port();
    let slave = start_slave_lab(
        &[("asterisk", false)],
        &[("XIVO_HA_HTTP_LISTEN", format!("127.0.0.1:{port}"))],
    );
    let monitor = MonitorProcess::start(slave.root(), port);
    monitor.wait_healthy().await;
    (slave, monitor)
}

/// `xivo-ha monitor` as a child process, killed on drop.
pub struct MonitorProcess {
    pub child: KilledOnDrop,
    pub base: String,
}

impl MonitorProcess {
    pub fn start(root: &Path, port: u16) -> MonitorProcess {
        MonitorProcess::start_with_db(root, port, None)
    }

    /// The same with `--db <db>` (the local configuration database); its log goes to
    /// `<root>/monitor.log` when a database is given.
    pub fn start_with_db(root: &Path, port: u16, db: Option<&str>) -> MonitorProcess {
        let mut command = Command::new(xivo_ha_bin());
        clear_xivo_env(&mut command);
        command.arg("--root").arg(root);
        let stderr = match db {
            Some(db) => {
                command.arg("--db").arg(db);
                Stdio::from(std::fs::File::create(root.join("monitor.log")).unwrap())
            }
            None => Stdio::null(),
        };
        let child = command
            .arg("monitor")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("xivo-ha monitor starts");
        MonitorProcess {
            child: KilledOnDrop(child),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits until `/healthz` answers 200.
    pub async fn wait_healthy(&self) {
        wait_for(
            "/healthz to answer 200",
            Duration::from_secs(10),
            async || self.get("/healthz").await.map(|(status, _)| status) == Some(200),
        )
        .await;
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of the sample `name` (with its labels, e.g. `x{job="replication"}`) in
    /// `/metrics`; fails the test when there is none.
    pub async fn metric_value(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
            .parse()
            .unwrap()
    }

    /// Waits for each `(line, seconds)` in turn: [`MonitorProcess::wait_metric`] `line` within
    /// `seconds` after the one before.
    pub async fn wait_metrics(&self, lines: &[(&str, u64)]) {
        for (line, seconds) in lines {
            self.wait_metric(line, Duration::from_secs(*seconds)).await;
        }
    }

    /// Waits until `/metrics` has a line equal to `line`.
    pub async fn wait_metric(&self, line: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no `{line}` within {timeout:?} in:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
