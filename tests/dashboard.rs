//! The dashboard page (`GET /`) in a real browser: `xivo-ha monitor` runs as a process and
//! headless Chromium (Debian's `chromium`) loads the page, runs its script and dumps the DOM;
//! the DOM shows the role, the headline and the timeline's marks, on a disabled node, a
//! master with a recorded replication, and a slave through a real failover (Docker lab). A
//! page for each state (disabled, master, standing by, serving, draining, maintenance,
//! isolated) is served by the endpoint from state documents in a temporary root and loads in
//! the browser without a console message. Screenshots land in `target/tmp/dashboard/` for a
//! person to look at (not committed).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use xivo_ha::http::Heartbeat;
use xivo_ha::monitor::rounds::{Mark, RoundLog};
use xivo_ha::monitor::verdict::Observation;
use xivo_ha::paths::Paths;

use common::docker_lab::docker;
use common::monitor_process::{MonitorProcess, free_port, start_monitored_slave_lab};
use common::*;

/// Where the screenshots go.
fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with `args` (a profile of its own, so that tests run side by
/// side); returns its stdout. The page must have logged nothing to the console (no script
/// error, no failed fetch).
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut chromium = Command::new("chromium");
    chromium
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            // Nothing but the page: no update checks, sync, pings nor other background requests.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-pings",
            "--no-default-browser-check",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url);
    let what = format!("chromium {args:?} {url} (apt-get install chromium)");
    let output = output_of(&what, &mut chromium);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "{url} logged: {console:#?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The page's DOM once loaded and its script run.
fn dom(monitor: &MonitorProcess) -> String {
    dom_at(&monitor.base)
}

fn dom_at(base: &str) -> String {
    let page = chromium(&format!("{base}/"), &["--dump-dom"]);
    assert!(
        page.contains("/metrics</a></p></body></html>"),
        "the whole page: {page}"
    );
    page
}

/// A screenshot of the page at a phone-ish width, under `target/tmp/dashboard/NAME.png`.
fn screenshot(monitor: &MonitorProcess, name: &str) -> PathBuf {
    screenshot_at(&monitor.base, name, "1000,1200")
}

/// The same of the page at `base`, the window `size` (`width,height`) wide.
fn screenshot_at(base: &str, name: &str, size: &str) -> PathBuf {
    let file = artefacts().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&file);
    chromium(
        &format!("{base}/"),
        &[
            &format!("--screenshot={}", file.display()),
            &format!("--window-size={size}"),
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
    let (slave, monitor) = start_monitored_slave_lab().await;
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
        let marks = ["bad", "ok"].map(|mark| format!("class=\"mark {path} {mark}\""));
        assert_holds(&page, &marks);
    }
    assert!(page.contains("class=\"change to-down\""), "{page}");
    // The witness (the lab's is 127.0.0.1, ICMP) was asked before the takeover and answered:
    // its check shows where it happened, nothing where it was not asked.
    assert!(page.contains("class=\"mark witness ok\""), "{page}");
    assert!(page.contains("witnesses: 127.0.0.1 (icmp)"), "{page}");
    assert!(!page.contains("class=\"mark witness bad\""), "{page}");
    assert!(page.matches("class=\"mark witness").count() <= 2, "{page}");
    assert!(page.contains("<tr class=\"transition to-down\""), "{page}");
    let shot = screenshot(&monitor, "serving");
    eprintln!("screenshot: {}", shot.display());
}

/// The endpoint itself (the library's router, as the monitor serves it) on a free loopback port
/// over `root`'s documents and `rounds`, until the returned token is cancelled.
async fn serve(root: &Path, rounds: RoundLog) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    let stopped = cancel.clone();
    tokio::spawn(xivo_ha::http::serve(
        listener,
        Paths::new(root),
        Heartbeat::new(Duration::from_secs(60)),
        rounds,
        async move { stopped.cancelled().await },
    ));
    (base, cancel)
}

fn write_doc(root: &Path, name: &str, doc: &serde_json::Value) {
    let dir = Paths::new(root).state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(doc).unwrap()).unwrap();
}

/// A state to render: its name, ha.conf's role, monitor.json, maintenance.json, the headline's
/// tone and how the headline starts.
type StateCase = (
    &'static str,
    &'static str,
    serde_json::Value,
    Option<serde_json::Value>,
    &'static str,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_for_each_state_renders_in_the_browser() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let now = Utc::now();
    let ago = |s: i64| now - chrono::Duration::seconds(s);
    // Five minutes of 300 ms rounds: the master up, then silent for the last minute, the
    // witness asked (and answering) before the takeover.
    let rounds = RoundLog::default();
    for i in 0..1000 {
        let at = ago(300) + chrono::Duration::milliseconds(i * 300);
        let up = at < ago(60);
        let witness = (at >= ago(58) && at < ago(57)).then_some(true);
        let seen = Observation {
            icmp: up,
            tcp: up,
            sip: up,
        };
        rounds.push(Mark::of(at, seen, witness));
    }
    let (base, stop) = serve(r, rounds).await;
    let down = json!({"from": "up", "to": "down", "at": ago(57),
        "reason": "no SIP answer for 1.2 s (host down)", "evidence": "icmp no answer; tcp no answer; sip no answer"});
    let up = json!({"from": "unknown", "to": "up", "at": ago(300), "reason": "3 good rounds",
        "evidence": "sip 200 OK in 1 ms"});
    let services = |desired: &str| {
        json!({"desired": desired, "settled": true, "errors": 0,
        "containers": [{"name": "asterisk", "state": "running", "restart_policy": "no"}]})
    };
    let slave = |verdict: &str, transitions: Vec<&serde_json::Value>, extra: serde_json::Value| {
        let mut doc = json!({"summary": "slave", "node_type": "slave", "master": "192.0.2.10",
            "verdict": verdict, "since": transitions.last().map(|t| t["at"].clone()),
            "last_transition": transitions.last(), "transitions": transitions,
            "services": services(if verdict == "down" { "running" } else { "stopped" }),
            "updated_at": now});
        doc.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        doc
    };
    let states: Vec<StateCase> = vec![
        (
            "disabled",
            "disabled",
            json!({"summary": "HA disabled", "node_type": "disabled",
            "updated_at": now}),
            None,
            "idle",
            "HA disabled",
        ),
        (
            "master",
            "master",
            json!({"summary": "master", "node_type": "master",
            "peer": {"address": "192.0.2.10", "state": "standby", "since": ago(3600),
                "last_answer_at": null, "last_silence_at": now, "reachable": true, "failbacks": 0},
            "updated_at": now}),
            None,
            "good",
            "master: serving; no replication to the slave 192.0.2.10 yet",
        ),
        (
            "standing-by",
            "slave",
            slave("up", vec![&up], json!({})),
            None,
            "good",
            "standing by, master up",
        ),
        (
            "serving",
            "slave",
            slave("down", vec![&up, &down], json!({})),
            None,
            "bad",
            "SERVING: the master is down since ",
        ),
        (
            "draining",
            "slave",
            slave(
                "up",
                vec![&up, &down],
                json!({"services": {"desired": "stopped",
            "settled": false, "errors": 0, "containers": [], "draining": {"containers": ["asterisk"],
            "since": ago(20), "calls": 2, "max_s": 1800}}}),
            ),
            None,
            "warn",
            "master back: draining 2 calls before stopping",
        ),
        (
            "maintenance",
            "slave",
            slave("down", vec![&up, &down], json!({})),
            Some(
                json!({"summary": "on", "reason": "upgrade", "set_by": "root@xivo-b",
                "set_at": ago(600), "until": now + chrono::Duration::hours(1)}),
            ),
            "warn",
            "MAINTENANCE until ",
        ),
        (
            "isolated",
            "slave",
            slave(
                "down",
                vec![&up],
                json!({"isolated": {"since": ago(57),
            "witnesses": "192.0.2.1 (icmp) no answer"}}),
            ),
            None,
            "bad",
            "isolated: no witness answers since ",
        ),
    ];
    for (name, role, mut monitor, maintenance, tone, start) in states {
        write_ha_conf(r, role, if role == "disabled" { "" } else { "192.0.2.10" });
        // Fresh, as the monitor saves it every few seconds (older than 30 s is a stuck loop).
        monitor["updated_at"] = json!(Utc::now());
        write_doc(r, "monitor.json", &monitor);
        match &maintenance {
            Some(doc) => write_doc(r, "maintenance.json", doc),
            None => {
                let _ = std::fs::remove_file(Paths::new(r).state_dir().join("maintenance.json"));
            }
        }
        let page = dom_at(&base);
        assert!(
            page.contains(&format!("<body data-role=\"{role}\"")),
            "{name}: {page}"
        );
        let (got_tone, text) = headline(&page);
        assert_eq!(got_tone, tone, "{name}: {text}");
        assert!(text.starts_with(start), "{name}: {text}");
        if role == "slave" {
            // The timeline: one bar a run, whatever the round length.
            for path in ["icmp", "tcp", "sip"] {
                assert!(
                    page.contains(&format!("class=\"mark {path} ok\"")),
                    "{name}: {page}"
                );
                assert!(
                    page.contains(&format!("class=\"mark {path} bad\"")),
                    "{name}: {page}"
                );
            }
            assert_eq!(
                page.matches("class=\"mark witness ok\"").count(),
                1,
                "{name}: {page}"
            );
            assert!(page.matches("<rect").count() < 30, "{name}: {page}");
        } else {
            assert!(!page.contains("<svg"), "{name}: no timeline");
        }
        if role == "master" {
            assert!(
                page.contains("<table id=\"peer\" data-state=\"standby\">"),
                "{page}"
            );
        }
        screenshot_at(&base, &format!("state-{name}"), "1000,1200");
        // And as a phone shows it.
        screenshot_at(&base, &format!("state-{name}-phone"), "390,1400");
    }
    stop.cancel();
}

/// The ```nginx block after `<!-- nginx-test: NAME -->` in docs/operations.md.
fn documented_nginx(name: &str) -> String {
    let doc = include_str!("../docs/operations.md");
    let marker = format!("<!-- nginx-test: {name} -->");
    let after = &doc[doc.find(&marker).unwrap_or_else(|| panic!("no {marker}")) + marker.len()..];
    let block = &after[after.find("```nginx\n").expect("a ```nginx block") + 9..];
    block[..block.find("```").unwrap()].to_owned()
}

/// The two nginx files of docs/operations.md, as written there, in a real nginx in front of the
/// endpoint, asking the stand-in xivo-auth (tests/common/nginx.rs) for each login: no login or
/// a wrong one is refused with a Basic challenge, an administrator's gets the page and its
/// links, and the page's reloads reuse the check of the minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xivos_nginx_shows_the_page_behind_the_administrators_login() {
    use common::nginx::{Nginx, XivoAuth};
    let root = tempfile::tempdir().unwrap();
    write_ha_conf(root.path(), "disabled", "");
    write_doc(
        root.path(),
        "monitor.json",
        &json!({"summary": "HA disabled", "node_type": "disabled", "updated_at": Utc::now()}),
    );
    let (endpoint, stop) = serve(root.path(), RoundLog::default()).await;
    let auth = XivoAuth::start("admin:s3cret");
    let port = |base: &str| base.rsplit(':').next().unwrap().to_owned();
    let http = documented_nginx("conf.d").replace("/run/nginx-xivo-ha-auth", "{dir}/auth-cache");
    let location = documented_nginx("location")
        .replace("127.0.0.1:9660", &format!("127.0.0.1:{}", port(&endpoint)))
        .replace("127.0.0.1:9497", &format!("127.0.0.1:{}", auth.port));
    assert!(location.contains("auth_request"), "{location}");
    let nginx = Nginx::start(&http, &location);
    nginx.wait_ready().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}/xivo-ha/", nginx.base);
    // GET `path` under the prefix, with `password` for the administrator `admin` if any.
    let get = async |path: &str, password: Option<&str>| {
        let request = client.get(format!("{url}{path}"));
        let request = match password {
            Some(p) => request.basic_auth("admin", Some(p)),
            None => request,
        };
        request.send().await.unwrap()
    };

    let anonymous = get("", None).await;
    assert_eq!(anonymous.status().as_u16(), 401, "{}", nginx.error_log());
    let challenge = anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("Basic realm=\"XiVO administrator\""),
        "{challenge}"
    );
    assert!(!anonymous.text().await.unwrap().contains("headline"));
    assert_eq!(get("", Some("guess")).await.status().as_u16(), 401);

    let page = get("", Some("s3cret")).await;
    assert_eq!(page.status().as_u16(), 200, "{}", nginx.error_log());
    let page = page.text().await.unwrap();
    assert_eq!(headline(&page), ("idle".into(), "HA disabled".into()));
    // The page's relative links work under the prefix; a reload within the minute is let
    // through on the cached check.
    let status = get("status", Some("s3cret")).await;
    assert_eq!(status.status().as_u16(), 200);
    let status: serde_json::Value = status.json().await.unwrap();
    assert_eq!(status["node_type"], "disabled", "{status}");
    assert_eq!(get("", Some("s3cret")).await.status().as_u16(), 200);
    let bare = client
        .get(format!("{}/xivo-ha", nginx.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 301);
    assert_eq!(
        bare.headers()["location"]
            .to_str()
            .unwrap()
            .rsplit('/')
            .nth(1),
        Some("xivo-ha")
    );

    let asked = auth.requests();
    let ok = asked.iter().filter(|l| l.ends_with(" ok")).count();
    assert_eq!(ok, 1, "one check for the minute: {asked:#?}");
    assert!(
        asked
            .iter()
            .all(|l| l.starts_with("POST /0.1/token backend=xivo_admin")),
        "{asked:#?}"
    );
    assert!(asked.iter().any(|l| l.ends_with(" refused")), "{asked:#?}");
    // The cache keeps the login in RAM only in production (/run); here under the test's dir.
    assert!(nginx.dir().join("auth-cache").exists());
    stop.cancel();
}
