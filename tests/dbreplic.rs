//! DB Replic end to end: source and reporting databases in the real PostgreSQL, Elasticsearch
//! played by the in-test server of `support/es_server.rs` (and a real cluster when
//! `ELASTICSEARCH_TEST_URL` is set). Every scenario ends with the same check: every source row
//! is in both sinks exactly once.

mod common;
#[path = "support/es_server.rs"]
mod es_server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use es_server::{EsServer, Fault};
use xivo_ha::config::EnvFile;
use xivo_ha::db::DbTarget;
use xivo_ha::dbreplic::settings::Settings;
use xivo_ha::dbreplic::{self, RunOptions};
use xivo_ha::paths::Paths;

const ORIGIN: &str = "xivo-test";

async fn insert_cel(db: &TestDb, n: i64) {
    db.client()
        .await
        .execute(
            "INSERT INTO cel (eventtype, eventtime, userdeftype, cid_name, cid_num, cid_ani, cid_rdnis, \
             cid_dnid, exten, context, channame, appname, appdata, amaflags, accountcode, peeraccount, \
             uniqueid, linkedid, userfield, peer, extra, call_log_id) \
             SELECT 'CHAN_START', now(), '', 'Alice ' || g, '1001', '1001', '', '', '2000', 'default', \
             'SIP/abc-' || g, '', '', 3, '', '', '1700000000.' || g, '1700000000.' || g, '', '', \
             CASE WHEN g % 2 = 0 THEN '{\"x\":\"é\"}' END, NULL FROM generate_series(1, $1::bigint) g",
            &[&n],
        )
        .await
        .unwrap();
}

async fn insert_queue_log(db: &TestDb, n: i64) {
    db.client()
        .await
        .execute(
            "INSERT INTO queue_log (time, callid, queuename, agent, event, data1) \
             SELECT to_char(now(), 'YYYY-MM-DD HH24:MI:SS.US'), 'call-' || g, 'q1', 'Agent/1001', \
             'ENTERQUEUE', '' FROM generate_series(1, $1::bigint) g",
            &[&n],
        )
        .await
        .unwrap();
}

fn env_text(reporting_port: u16, reporting_db: &str, es_url: &str, extra: &str) -> String {
    format!(
        "REPORTING_DB_HOST=127.0.0.1\nREPORTING_DB_PORT={reporting_port}\nREPORTING_DB_NAME={reporting_db}\n\
         REPORTING_DB_USER=postgres\nREPORTING_DB_PASSWORD=unused\nELASTICSEARCH={es_url}\n\
         DB_REPLIC_ORIGIN={ORIGIN}\nDB_REPLIC_RETRY_INITIAL_MS=50\nDB_REPLIC_POLL_MS=100\n{extra}"
    )
}

fn settings(text: &str) -> Settings {
    // DB Replic's log lines in the test output (shown for failing tests).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_test_writer()
        .try_init();
    let file = EnvFile::parse(Path::new("/test/custom.env"), text).unwrap();
    Settings::load(&file).unwrap()
}

fn options(source: &TestDb, root: &Path, exit_when_idle: bool) -> RunOptions {
    RunOptions {
        source: DbTarget::parse("XiVO (source)", &source.url()).unwrap(),
        paths: Paths::new(root),
        exit_when_idle,
    }
}

async fn ids(client: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

/// Every row of cel and queue_log is in the reporting database and in the ES server, once.
async fn assert_exactly_once(source: &TestDb, reporting: &tokio_postgres::Client, es: &EsServer) {
    let src = source.client().await;
    for table in ["cel", "queue_log"] {
        let expected = ids(&src, &format!("SELECT id::bigint FROM {table} ORDER BY id")).await;
        assert!(!expected.is_empty());
        let in_pg = ids(
            reporting,
            &format!("SELECT id FROM {table} WHERE origin = '{ORIGIN}' ORDER BY id"),
        )
        .await;
        assert_eq!(in_pg.len(), expected.len(), "{table}: reporting row count");
        assert_eq!(in_pg, expected, "{table}: reporting ids");
        let prefix = format!("{ORIGIN}-{table}-");
        let mut in_es: Vec<i64> = es
            .ids(table)
            .iter()
            .map(|id| id.strip_prefix(&prefix).unwrap().parse().unwrap())
            .collect();
        in_es.sort();
        assert_eq!(in_es, expected, "{table}: Elasticsearch _ids");
    }
    // The documents carry the row: spot-check one.
    let first = ids(&src, "SELECT min(id)::bigint FROM cel").await[0];
    let doc = es.source("cel", &format!("{ORIGIN}-cel-{first}")).unwrap();
    assert_eq!(doc["id"], first);
    assert_eq!(doc["origin"], ORIGIN);
    assert!(doc["eventtime"].as_str().unwrap().contains('T'));
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pg_checkpoint(reporting: &tokio_postgres::Client, table: &str) -> i64 {
    reporting
        .query_opt(
            "SELECT last_id FROM dbreplic_checkpoint WHERE origin = $1 AND table_name = $2",
            &[&ORIGIN, &table],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
        .unwrap_or(0)
}

async fn count(db: &TestDb, table: &str) -> usize {
    db.client()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get::<_, i64>(0) as usize
}

async fn max_id(db: &TestDb, table: &str) -> i64 {
    db.client()
        .await
        .query_one(
            &format!("SELECT coalesce(max(id), 0)::bigint FROM {table}"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_mode_forwards_only_events_and_never_touches_config_tables() {
    let source = TestDb::create().await;
    insert_cel(&source, 1200).await;
    insert_queue_log(&source, 700).await;
    let reporting_db = TestDb::create_empty().await;
    let reporting = reporting_db.client().await;
    // A configuration table fed by the master: the slave must leave it alone.
    reporting
        .batch_execute("CREATE TABLE dialaction (event text); INSERT INTO dialaction VALUES ('from the master')")
        .await
        .unwrap();
    let es = EsServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let s = settings(&env_text(
        pg_port(),
        &reporting_db.name,
        &es.url,
        "IS_HA_SLAVE=true\nDB_REPLIC_BATCH_ROWS=500\n",
    ));
    dbreplic::run(
        s,
        options(&source, root.path(), true),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_exactly_once(&source, &reporting, &es).await;
    let dialaction = ids(&reporting, "SELECT count(*) FROM dialaction").await;
    assert_eq!(dialaction, vec![1]);
    let event: String = reporting
        .query_one("SELECT event FROM dialaction", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(event, "from the master");
    let others = ids(
        &reporting,
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN \
         ('linefeatures', 'userfeatures', 'queuefeatures', 'agentfeatures', 'extensions', 'queuemember')",
    )
    .await;
    assert_eq!(others, vec![0], "HA mode created configuration tables");
    // Index templates map timestamps as dates and ids as longs.
    let template = es.template("xivo-ha-dbreplic-cel").unwrap();
    let properties = &template["template"]["mappings"]["properties"];
    assert_eq!(properties["eventtime"]["type"], "date");
    assert_eq!(properties["id"]["type"], "long");
    assert!(es.template("xivo-ha-dbreplic-queue_log").is_some());
    // status: per table and sink, last id and rows behind.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.path().join("var/lib/xivo-ha/dbreplic.json")).unwrap(),
    )
    .unwrap();
    let cel_max = max_id(&source, "cel").await;
    assert_eq!(state["tables"]["cel"]["postgresql"]["last_id"], cel_max);
    assert_eq!(state["tables"]["cel"]["elasticsearch"]["behind"], 0);
    assert_eq!(state["mode"], "HA mode");
    assert!(
        state["summary"].as_str().unwrap().contains("cel"),
        "{state}"
    );
    assert!(
        root.path()
            .join("var/log/xivo-db-replication/db-replic.log")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_mode_also_refreshes_the_config_tables() {
    let source = TestDb::create().await;
    let reporting_db = TestDb::create_empty().await;
    let reporting = reporting_db.client().await;
    reporting
        .batch_execute(
            "CREATE TABLE dialaction (event text); INSERT INTO dialaction VALUES ('stale')",
        )
        .await
        .unwrap();
    let es = EsServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let s = settings(&env_text(
        pg_port(),
        &reporting_db.name,
        &es.url,
        "IS_HA_SLAVE=false\n",
    ));
    dbreplic::run(
        s,
        options(&source, root.path(), true),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_exactly_once(&source, &reporting, &es).await;
    let src = source.client().await;
    for table in xivo_ha::dbreplic::config_tables::CONFIG_TABLES {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(
            ids(&src, &sql).await,
            ids(&reporting, &sql).await,
            "{table}"
        );
    }
    let stale = ids(
        &reporting,
        "SELECT count(*) FROM dialaction WHERE event = 'stale'",
    )
    .await;
    assert_eq!(stale, vec![0]);
    let user: String = reporting
        .query_one(
            "SELECT firstname FROM userfeatures ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let expected: String = src
        .query_one(
            "SELECT firstname FROM userfeatures ORDER BY id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_failing_for_a_while_holds_nothing_back_and_loses_nothing() {
    let source = TestDb::create().await;
    insert_cel(&source, 3000).await;
    insert_queue_log(&source, 1000).await;
    let reporting_db = TestDb::create_empty().await;
    let reporting = reporting_db.client().await;
    let es = EsServer::start().await;
    es.set_down(true);
    let root = tempfile::tempdir().unwrap();
    let s = settings(&env_text(
        pg_port(),
        &reporting_db.name,
        &es.url,
        "IS_HA_SLAVE=true\nDB_REPLIC_BATCH_ROWS=400\n",
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(dbreplic::run(
        s,
        options(&source, root.path(), false),
        async {
            let _ = stopped.await;
        },
    ));
    // Elasticsearch is down: PostgreSQL gets everything anyway.
    let cel_max = max_id(&source, "cel").await;
    let ql_max = max_id(&source, "queue_log").await;
    wait_for(
        "PostgreSQL to catch up while ES is down",
        Duration::from_secs(30),
        async || {
            pg_checkpoint(&reporting, "cel").await == cel_max
                && pg_checkpoint(&reporting, "queue_log").await == ql_max
        },
    )
    .await;
    assert_eq!(es.count("cel"), 0);
    // The failure shows in status.
    wait_for(
        "status to show the ES error",
        Duration::from_secs(10),
        async || {
            std::fs::read_to_string(root.path().join("var/lib/xivo-ha/dbreplic.json"))
                .map(|s| s.contains("HTTP 503"))
                .unwrap_or(false)
        },
    )
    .await;
    // ES comes back, but throttles, fails, answers slowly and drops items for a while.
    es.push_faults([
        Fault::Status(429),
        Fault::Status(500),
        Fault::ItemErrors {
            status: 429,
            every: 3,
        },
        Fault::Delay(Duration::from_millis(800)),
        Fault::ItemErrors {
            status: 503,
            every: 2,
        },
        Fault::Status(429),
        Fault::ItemErrors {
            status: 500,
            every: 1,
        },
    ]);
    es.set_down(false);
    // New rows keep arriving meanwhile.
    insert_cel(&source, 500).await;
    let (cels, queue_logs) = (
        count(&source, "cel").await,
        count(&source, "queue_log").await,
    );
    wait_for(
        "Elasticsearch to catch up",
        Duration::from_secs(60),
        async || {
            es.count("cel") == cels && es.count("queue_log") == queue_logs && es.faults_left() == 0
        },
    )
    .await;
    let cel_max = max_id(&source, "cel").await;
    wait_for(
        "PostgreSQL to get the new rows",
        Duration::from_secs(10),
        async || pg_checkpoint(&reporting, "cel").await == cel_max,
    )
    .await;
    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
    assert_exactly_once(&source, &reporting, &es).await;
    assert!(es.failed_items() > 0 && es.failed_requests() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_stops_only_the_elasticsearch_sink() {
    let source = TestDb::create().await;
    let reporting_db = TestDb::create_empty().await;
    let reporting = reporting_db.client().await;
    let es = EsServer::start().await;
    es.push_faults([Fault::Status(400), Fault::Status(400)]);
    let root = tempfile::tempdir().unwrap();
    let s = settings(&env_text(
        pg_port(),
        &reporting_db.name,
        &es.url,
        "IS_HA_SLAVE=true\n",
    ));
    let error = dbreplic::run(
        s,
        options(&source, root.path(), true),
        std::future::pending(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("elasticsearch sink") && error.contains("HTTP 400"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    // PostgreSQL went on regardless.
    assert_eq!(
        pg_checkpoint(&reporting, "cel").await,
        max_id(&source, "cel").await
    );
    let state = std::fs::read_to_string(root.path().join("var/lib/xivo-ha/dbreplic.json")).unwrap();
    assert!(state.contains("stopped"), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_runner_mid_batch_then_restarting_resumes_from_the_checkpoints() {
    let source = TestDb::create().await;
    insert_cel(&source, 20_000).await;
    insert_queue_log(&source, 2_000).await;
    let reporting_db = TestDb::create_empty().await;
    let reporting = reporting_db.client().await;
    let es = EsServer::start().await;
    // Slow answers, so that the drop lands while a bulk request is in flight.
    es.push_faults((0..100).map(|_| Fault::Delay(Duration::from_millis(60))));
    let root = tempfile::tempdir().unwrap();
    let text = env_text(
        pg_port(),
        &reporting_db.name,
        &es.url,
        "IS_HA_SLAVE=true\nDB_REPLIC_BATCH_ROWS=500\n",
    );
    let cel_max = max_id(&source, "cel").await;
    {
        let run = dbreplic::run(
            settings(&text),
            options(&source, root.path(), false),
            std::future::pending(),
        );
        tokio::select! {
            result = run => panic!("the runner ended on its own: {result:?}"),
            _ = wait_for("a few batches", Duration::from_secs(60), async || {
                es.count("cel") >= 3000 && pg_checkpoint(&reporting, "cel").await >= 3000
            }) => {}
        }
        // The runner future is dropped here, in the middle of its batches.
    }
    let pg_before = pg_checkpoint(&reporting, "cel").await;
    let es_before = es.count("cel") as u64;
    assert!(pg_before < cel_max, "the drop came too late to be mid-way");
    let ops_before = es.index_ops();
    dbreplic::run(
        settings(&text),
        options(&source, root.path(), true),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_exactly_once(&source, &reporting, &es).await;
    // Resumed, not restarted: the second run re-sent at most two batches per table (the one
    // in flight and the one whose checkpoint file was still being written).
    let resent = es.index_ops() - ops_before;
    let total = (cel_max + max_id(&source, "queue_log").await) as u64;
    assert!(
        resent <= total - es_before + 4 * 500,
        "second run sent {resent} documents for {total} rows, {es_before} already there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_binary_mid_batch_and_restarting_loses_and_duplicates_nothing() {
    let source = TestDb::create().await;
    insert_cel(&source, 30_000).await;
    insert_queue_log(&source, 3_000).await;
    let reporting_db = TestDb::create_empty().await;
    let reporting = reporting_db.client().await;
    let es = EsServer::start().await;
    es.push_faults((0..200).map(|_| Fault::Delay(Duration::from_millis(40))));
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/xivo")).unwrap();
    std::fs::write(root.path().join("var/lib/xivo/xc_enabled"), "").unwrap();
    let env_file = root.path().join("custom.env");
    std::fs::write(
        &env_file,
        env_text(
            pg_port(),
            &reporting_db.name,
            &es.url,
            "IS_HA_SLAVE=true\nDB_REPLIC_BATCH_ROWS=1000\n",
        ),
    )
    .unwrap();
    let command = |extra: &[&str]| {
        let mut c = Command::new(xivo_ha_bin());
        c.arg("--root")
            .arg(root.path())
            .arg("--db")
            .arg(source.url());
        c.arg("--env-file")
            .arg(&env_file)
            .arg("db-replic")
            .args(extra);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let cel_max = max_id(&source, "cel").await;
    let mut child = command(&[]).spawn().unwrap();
    wait_for(
        "the binary to deliver some batches",
        Duration::from_secs(60),
        async || pg_checkpoint(&reporting, "cel").await >= 5000 && es.count("cel") >= 3000,
    )
    .await;
    child.kill().unwrap(); // SIGKILL: no chance to finish anything
    child.wait().unwrap();
    assert!(
        pg_checkpoint(&reporting, "cel").await < cel_max,
        "killed too late"
    );
    let mut again = command(&["--exit-when-idle"]);
    let output = tokio::task::spawn_blocking(move || again.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_exactly_once(&source, &reporting, &es).await;
    // `status` shows DB Replic's line.
    let status = xivo_ha(root.path(), &source.url(), &["status"]);
    assert_success(&status);
    assert!(
        stdout(&status).contains("dbreplic: HA mode"),
        "{}",
        stdout(&status)
    );
}

/// A PostgreSQL cluster of its own, to stop and restart: initdb + pg_ctl as user postgres, on
/// a free loopback port, in a temporary directory; stopped and removed on drop.
struct TempCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(program))
        .args(args)
        .output()
        .expect("runuser runs (tests run as root)")
}

impl TempCluster {
    fn start() -> TempCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let data = dir.path().join("data");
        let output = as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = TempCluster { dir, bin, port };
        cluster.pg_ctl_start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let output = as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        assert!(
            output.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn stop(&self) {
        let output = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
        assert!(
            output.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporting_database_stopped_and_restarted() {
    let cluster = tokio::task::spawn_blocking(TempCluster::start)
        .await
        .unwrap();
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        cluster.port
    );
    let source = TestDb::create().await;
    insert_cel(&source, 2000).await;
    insert_queue_log(&source, 500).await;
    let es = EsServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let s = settings(&env_text(
        cluster.port,
        "postgres",
        &es.url,
        "IS_HA_SLAVE=true\nDB_REPLIC_BATCH_ROWS=500\n",
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(dbreplic::run(
        s,
        options(&source, root.path(), false),
        async {
            let _ = stopped.await;
        },
    ));
    let cel_max = max_id(&source, "cel").await;
    {
        let reporting = connect(&url).await;
        wait_for("the first delivery", Duration::from_secs(30), async || {
            pg_checkpoint(&reporting, "cel").await == cel_max
        })
        .await;
    }
    tokio::task::block_in_place(|| cluster.stop());
    // Rows keep coming while the reporting database is down; Elasticsearch keeps getting them.
    insert_cel(&source, 1500).await;
    insert_queue_log(&source, 300).await;
    let (cels, queue_logs) = (
        count(&source, "cel").await,
        count(&source, "queue_log").await,
    );
    wait_for(
        "Elasticsearch to go on without PostgreSQL",
        Duration::from_secs(30),
        async || es.count("cel") == cels && es.count("queue_log") == queue_logs,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| cluster.pg_ctl_start());
    let reporting = connect(&url).await;
    let cel_max = max_id(&source, "cel").await;
    let ql_max = max_id(&source, "queue_log").await;
    wait_for(
        "PostgreSQL to catch up after its restart",
        Duration::from_secs(60),
        async || {
            pg_checkpoint(&reporting, "cel").await == cel_max
                && pg_checkpoint(&reporting, "queue_log").await == ql_max
        },
    )
    .await;
    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
    assert_exactly_once(&source, &reporting, &es).await;
    let log = std::fs::read_to_string(
        root.path()
            .join("var/log/xivo-db-replication/db-replic.log"),
    )
    .unwrap();
    assert!(
        log.contains("postgresql") && log.contains("delivering again"),
        "{log}"
    );
}

#[test]
fn not_enabled_says_so_and_exits_0() {
    let root = tempfile::tempdir().unwrap();
    let output = xivo_ha(root.path(), "host=127.0.0.1 dbname=unused", &["db-replic"]);
    assert_success(&output);
    assert!(
        stdout(&output).contains("xc_enabled"),
        "{}",
        stdout(&output)
    );
    assert!(!root.path().join("var/log/xivo-db-replication").exists());
}

fn enabled_root(env: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/xivo")).unwrap();
    std::fs::write(root.path().join("var/lib/xivo/xc_enabled"), "").unwrap();
    write_custom_env(root.path(), env);
    root
}

#[test]
fn malformed_env_files_are_one_line_naming_variable_and_line() {
    let cases = [
        (
            "XUC_HOST=x\nELASTICSEARCH=http://127.0.0.1:9\n",
            "REPORTING_DB_HOST: not set",
        ),
        (
            "REPORTING_DB_HOST=127.0.0.1\nELASTICSEARCH=http://127.0.0.1:9\nIS_HA_SLAVE=maybe\n",
            "IS_HA_SLAVE (",
        ),
        (
            "REPORTING_DB_HOST=127.0.0.1\n# es\nELASTICSEARCH=not a url\n",
            "ELASTICSEARCH (",
        ),
        (
            "REPORTING_DB_HOST=127.0.0.1\nELASTICSEARCH=http://127.0.0.1:9\nREPORTING_DB_PORT=54x\n",
            "REPORTING_DB_PORT (",
        ),
    ];
    for (env, expected) in cases {
        let root = enabled_root(env);
        let output = xivo_ha(root.path(), "host=127.0.0.1 dbname=unused", &["db-replic"]);
        assert_eq!(output.status.code(), Some(1), "{env}");
        let err = stderr(&output);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].contains(expected), "{expected} not in {err}");
        if expected.ends_with('(') {
            assert!(lines[0].contains("custom.env line"), "{err}");
        }
        // Nothing started.
        assert!(!root.path().join("var/log/xivo-db-replication").exists());
        assert!(!root.path().join("var/lib/xivo-ha/dbreplic.json").exists());
    }
}

#[test]
fn an_unwritable_log_directory_is_a_clear_error() {
    let root = enabled_root("REPORTING_DB_HOST=127.0.0.1\nELASTICSEARCH=http://127.0.0.1:9\n");
    // A file where the directory should be: fails even for root.
    std::fs::create_dir_all(root.path().join("var/log")).unwrap();
    std::fs::write(root.path().join("var/log/xivo-db-replication"), "").unwrap();
    let output = xivo_ha(root.path(), "host=127.0.0.1 dbname=unused", &["db-replic"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("var/log/xivo-db-replication") && err.contains("daemon:daemon"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Against a real cluster, when one is given (never contacted otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_elasticsearch_when_available() {
    let Ok(url) = std::env::var("ELASTICSEARCH_TEST_URL") else {
        println!(
            "skipped: set ELASTICSEARCH_TEST_URL=http://127.0.0.1:9200 to run against a real cluster"
        );
        return;
    };
    let source = TestDb::create().await;
    insert_cel(&source, 300).await;
    let reporting_db = TestDb::create_empty().await;
    let root = tempfile::tempdir().unwrap();
    let suffix = format!("xivoha-test-{}", std::process::id());
    let extra = format!(
        "IS_HA_SLAVE=true\nDB_REPLIC_CEL_INDEX={suffix}-cel\nDB_REPLIC_QUEUE_LOG_INDEX={suffix}-queue_log\n"
    );
    let s = settings(&env_text(pg_port(), &reporting_db.name, &url, &extra));
    dbreplic::run(
        s,
        options(&source, root.path(), true),
        std::future::pending(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = url.trim_end_matches('/');
    http.post(format!("{base}/{suffix}-*/_refresh"))
        .send()
        .await
        .unwrap();
    let count: serde_json::Value = http
        .get(format!("{base}/{suffix}-cel/_count"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = source
        .client()
        .await
        .query_one("SELECT count(*) FROM cel", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    let mapping: serde_json::Value = http
        .get(format!("{base}/{suffix}-cel/_mapping"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = http
        .delete(format!("{base}/{suffix}-cel,{suffix}-queue_log"))
        .send()
        .await;
    assert_eq!(count["count"], expected);
    assert_eq!(
        mapping[format!("{suffix}-cel")]["mappings"]["properties"]["eventtime"]["type"],
        "date"
    );
}
