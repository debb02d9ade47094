//! The dashboard page (`GET /`) in a real browser: `xivo-ha monitor` runs as a process and
//! headless Chromium (Debian's `chromium`) loads the page, runs its script and dumps the DOM;
//! the DOM shows the role, the headline and the timeline's marks, on a disabled node, a
//! master with a recorded replication, and a slave through a real failover (Docker lab).
//! Screenshots land in `target/tmp/dashboard/` for a person to look at (not committed).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::docker_lab::{docker, start_slave_lab};
use common::monitor_process::{MonitorProcess, free_port};
use common::*;

/// Where the screenshots go.
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with `args` (a profile of its own, so that tests run side by
/// side); returns its stdout.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs (apt-get install chromium)");
    assert!(
        output.status.success(),
        "chromium {args:?} {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The page's DOM once loaded and its script run.
fn dom(monitor: &MonitorProcess) -> String {
    chromium(&format!("{}/", monitor.base), &["--dump-dom"])
}

/// A screenshot of the page at a phone-ish width, under `target/tmp/dashboard/NAME.png`.
fn screenshot(monitor: &MonitorProcess, name: &str) -> PathBuf {
    let file = artefacts().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    chromium(
        &format!("{}/", monitor.base),
        &[
            &format!("--screenshot={}", file.display()),
            "--window-size=1000,1200",
        ],
    );
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "{} is {size} bytes", file.display());
    file
}

/// The headline's text in `html` (its data-tone, then the text).
fn headline(html: &str) -> (String, String) {
    let start = html
        .find("id=\"headline\"")
        .unwrap_or_else(|| panic!("no headline in:\n{html}"));
    let rest = &html[start..];
    let tone = rest
        .split("data-tone=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or_default()
        .to_owned();
    let text = &rest[rest.find('>').unwrap() + 1..rest.find("</p>").unwrap()];
    (tone, text.to_owned())
}

/// Waits until the page (plain HTTP, cheaper than a browser) has a headline starting with
/// `prefix`.
async fn wait_headline(monitor: &MonitorProcess, prefix: &str, timeout: Duration) {
    wait_for(&format!("a headline `{prefix}…`"), timeout, async || {
        monitor
            .get("/")
            .await
            .is_some_and(|(_, page)| headline(&page).1.starts_with(prefix))
    })
    .await;
}

#[tokio::test]
async fn a_disabled_node_then_a_master_with_its_replication() {
    let master_db = TestDb::create().await;
    let slave_db = TestDb::create().await;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    // The hourly jobs of a master find no database on port 1 of loopback: nothing is copied
    // anywhere should the test run across :00.
    write_custom_env(
        root.path(),
        &format!(
            "XIVO_HA_HTTP_LISTEN=127.0.0.1:{port}\nXIVO_HA_DB=host=127.0.0.1 port=1 user=postgres dbname=none\n"
        ),
    );
    write_ha_conf(root.path(), "disabled", "");
    let monitor = MonitorProcess::start(root.path(), port);
    monitor.wait_healthy().await;
    let page = dom(&monitor);
    assert!(page.contains("<body data-role=\"disabled\""), "{page}");
    assert_eq!(headline(&page), ("idle".into(), "HA disabled".into()));
    assert!(
        !page.contains("class=\"mark"),
        "no timeline on a disabled node"
    );

    // A replication to the slave (as the master's hourly job runs it), then the master's page.
    // The slave's address is a test host's (configure's rules refuse loopback): nothing of it
    // listens, and `--target-db` gives the slave's database.
    let slave_host = common::testhost::TestHost::create();
    let slave_ip = slave_host.ip.to_string();
    let output = xivo_ha(
        root.path(),
        &master_db.url(),
        &["db-replication", &slave_ip, "--target-db", &slave_db.url()],
    );
    assert_success(&output);
    write_ha_conf(root.path(), "master", &slave_ip);
    wait_headline(&monitor, "master: ", Duration::from_secs(10)).await;
    let page = dom(&monitor);
    assert!(page.contains("<body data-role=\"master\""), "{page}");
    assert!(
        page.contains(&format!("master · slave at {slave_ip}")),
        "{page}"
    );
    let (tone, text) = headline(&page);
    assert_eq!(tone, "good", "{text}");
    assert!(
        text.starts_with(&format!(
            "master: serving; the slave {slave_ip} got the configuration at "
        )),
        "{text}"
    );
    assert!(page.contains("data-job=\"replication\""), "{page}");
    assert!(page.contains("tables copied"), "{page}");
    screenshot(&monitor, "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_shows_on_the_slave_page() {
    let port = free_port();
    let slave = start_slave_lab(
        &[("asterisk", false)],
        &[("XIVO_HA_HTTP_LISTEN", format!("127.0.0.1:{port}"))],
    );
    let monitor = MonitorProcess::start(slave.root(), port);
    monitor.wait_healthy().await;
    wait_headline(&monitor, "standing by, master up", Duration::from_secs(15)).await;
    let page = dom(&monitor);
    assert!(page.contains("<body data-role=\"slave\""), "{page}");
    assert!(
        page.contains(&format!("slave · master at {}", slave.master_ip)),
        "{page}"
    );
    assert_eq!(
        headline(&page),
        ("good".into(), "standing by, master up".into())
    );
    assert!(page.contains("class=\"mark sip ok\""), "{page}");
    assert!(page.contains("class=\"change to-up\""), "{page}");

    docker(&["stop", "-t", "0", &slave.master]);
    wait_headline(
        &monitor,
        "SERVING: the master is down since ",
        Duration::from_secs(30),
    )
    .await;
    let page = dom(&monitor);
    let (tone, text) = headline(&page);
    assert_eq!(tone, "bad", "{text}");
    assert!(
        text.starts_with("SERVING: the master is down since "),
        "{text}"
    );
    assert!(text.contains("no SIP answer for"), "{text}");
    for path in ["icmp", "tcp", "sip"] {
        assert!(
            page.contains(&format!("class=\"mark {path} bad\"")),
            "{path}: {page}"
        );
        assert!(
            page.contains(&format!("class=\"mark {path} ok\"")),
            "{path}: {page}"
        );
    }
    assert!(page.contains("class=\"change to-down\""), "{page}");
    assert!(page.contains("<tr class=\"transition to-down\""), "{page}");
    let shot = screenshot(&monitor, "serving");
    eprintln!("screenshot: {}", shot.display());
}
