//! DB Replic's whole pipeline for the tests: a source database loaded with the XiVO fixture, a
//! reporting database, the Elasticsearch stand-in, a node root and the settings that join them
//! (`start_pipeline`), then DB Replic itself, run until idle (`run_until_idle`) or until
//! stopped (`start_db_replic`). The check every scenario ends with (every source row in both
//! sinks exactly once) lives here too. `Pipeline::other_node` adds a second node to the site:
//! its own XiVO database and node root, the same sinks and the same settings (a copied
//! custom.env).

use std::path::{Path, PathBuf};
use std::time::Duration;

use xivo_ha::db::DbTarget;
use xivo_ha::dbreplic::settings::DbReplicSettings;
use xivo_ha::dbreplic::{self, DbReplicError, RunOptions};
use xivo_ha::paths::Paths;
use xivo_ha::settings::EnvFile;

use super::db::{TestDb, connect, pg_port};
use super::es_server::EsServer;
use super::write_custom_env;

/// `DB_REPLIC_ORIGIN` of every pipeline.
pub const ORIGIN: &str = "xivo-test";

/// DB Replic's log file under a node root.
pub const LOG_FILE: &str = "var/log/xivo-db-replication/db-replic.log";
/// DB Replic's state document under a node root.
pub const STATE_FILE: &str = "var/lib/xivo-ha/dbreplic.json";

/// What DB Replic reads and writes, for the tests that run xivo-ha themselves (`doctor`, the
/// monitor): a source database loaded with the fixture, an empty reporting database and the
/// Elasticsearch stand-in.
pub struct Sinks {
    pub source: TestDb,
    pub reporting: TestDb,
    pub es: EsServer,
}

impl Sinks {
    pub async fn start() -> Sinks {
        Sinks {
            source: TestDb::create().await,
            reporting: TestDb::create_empty().await,
            es: EsServer::start().await,
        }
    }

    /// The custom.env lines that point DB Replic at both sinks.
    pub fn env(&self) -> String {
        format!(
            "REPORTING_DB_HOST=127.0.0.1\nREPORTING_DB_PORT={}\nREPORTING_DB_NAME={}\n\
             REPORTING_DB_USER=postgres\nELASTICSEARCH={}\n",
            pg_port(),
            self.reporting.name,
            self.es.url
        )
    }
}

/// Source, reporting database, Elasticsearch stand-in and node root, joined by one custom.env.
pub struct Pipeline {
    pub source: TestDb,
    /// A connection to the reporting database, opened at the start.
    pub reporting: tokio_postgres::Client,
    pub es: EsServer,
    pub root: tempfile::TempDir,
    reporting_port: u16,
    reporting_name: String,
    /// The reporting database when it is the pipeline's own (dropped with it).
    _reporting_db: Option<TestDb>,
    /// Elasticsearch's URL when it is not the stand-in's.
    es_url: Option<String>,
    /// The reporting database's port in the settings when it is not the real one's.
    reporting_port_in_env: Option<u16>,
    extra_env: String,
}

/// A pipeline whose reporting database is a fresh one in the test PostgreSQL. `extra_env` is
/// appended to the common settings (reporting database, Elasticsearch, origin, short retries
/// and polls), e.g. `"IS_HA_SLAVE=true\nDB_REPLIC_BATCH_ROWS=500\n"`.
pub async fn start_pipeline(extra_env: &str) -> Pipeline {
    let reporting = TestDb::create_empty().await;
    let name = reporting.name.clone();
    start(pg_port(), name, Some(reporting), extra_env).await
}

/// A pipeline (HA mode, `extra` settings) whose source has `cel` and `queue_log` rows.
pub async fn start_loaded_pipeline(cel: i64, queue_log: i64, extra: &str) -> Pipeline {
    let p = start_pipeline(&format!("IS_HA_SLAVE=true\n{extra}")).await;
    p.insert_cel(cel).await;
    p.insert_queue_log(queue_log).await;
    p
}

/// The same with the reporting database `dbname` on 127.0.0.1:`port` (a cluster the test
/// stops and restarts).
pub async fn start_pipeline_reporting_at(port: u16, dbname: &str, extra_env: &str) -> Pipeline {
    start(port, dbname.to_owned(), None, extra_env).await
}

async fn start(
    reporting_port: u16,
    reporting_name: String,
    reporting_db: Option<TestDb>,
    extra_env: &str,
) -> Pipeline {
    // DB Replic's log lines in the test output (shown for failing tests).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_test_writer()
        .try_init();
    let source = TestDb::create().await;
    let es = EsServer::start().await;
    Pipeline {
        reporting: connect(&reporting_url(reporting_port, &reporting_name)).await,
        source,
        es,
        root: tempfile::tempdir().unwrap(),
        reporting_port,
        reporting_name,
        _reporting_db: reporting_db,
        es_url: None,
        reporting_port_in_env: None,
        extra_env: extra_env.to_owned(),
    }
}

fn reporting_url(port: u16, dbname: &str) -> String {
    format!("host=127.0.0.1 port={port} user=postgres dbname={dbname}")
}

impl Pipeline {
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The node's custom.env text.
    pub fn env_text(&self) -> String {
        self.env_text_with(&self.extra_env)
    }

    /// The common settings and `extra_env`.
    fn env_text_with(&self, extra_env: &str) -> String {
        format!(
            "REPORTING_DB_HOST=127.0.0.1\nREPORTING_DB_PORT={}\nREPORTING_DB_NAME={}\n\
             REPORTING_DB_USER=postgres\nREPORTING_DB_PASSWORD=unused\nELASTICSEARCH={}\n\
             DB_REPLIC_ORIGIN={ORIGIN}\nDB_REPLIC_RETRY_INITIAL_MS=50\nDB_REPLIC_POLL_MS=100\n{}",
            self.reporting_port_in_env.unwrap_or(self.reporting_port),
            self.reporting_name,
            self.es_url.as_ref().unwrap_or(&self.es.url),
            extra_env
        )
    }

    /// Settings that point at a reporting database nobody answers for (a loopback port
    /// nothing listens on): a site whose PostgreSQL sink never gets through.
    pub fn set_reporting_unreachable(&mut self) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        self.reporting_port_in_env = Some(port);
    }

    /// A second node of this site: its own XiVO database (`insert_*` rows into it) and node
    /// root, so its own node identity; the same sinks and DB_REPLIC_ORIGIN, with `extra_env`
    /// instead of this node's extra settings.
    pub async fn other_node(&self, extra_env: &str) -> OtherNode {
        let root = tempfile::tempdir().unwrap();
        write_custom_env(root.path(), &self.env_text_with(extra_env));
        std::fs::create_dir_all(root.path().join("var/lib/xivo")).unwrap();
        std::fs::write(root.path().join("var/lib/xivo/xc_enabled"), "").unwrap();
        OtherNode {
            source: TestDb::create().await,
            root,
            env: self.env_text_with(extra_env),
        }
    }

    /// Sends to the Elasticsearch at `url` instead of the stand-in (a real cluster).
    pub fn set_elasticsearch_url(&mut self, url: &str) {
        self.es_url = Some(url.to_owned());
    }

    /// Writes the settings as `<root>/custom.env` (for `--env-file`) and returns its path.
    pub fn write_env_file(&self) -> PathBuf {
        let path = self.root().join("custom.env");
        std::fs::write(&path, self.env_text()).unwrap();
        path
    }

    /// Marks XiVO CC's DB Replic enabled on the node (`var/lib/xivo/xc_enabled`).
    pub fn enable_xc(&self) {
        std::fs::create_dir_all(self.root().join("var/lib/xivo")).unwrap();
        std::fs::write(self.root().join("var/lib/xivo/xc_enabled"), "").unwrap();
    }

    pub fn settings(&self) -> DbReplicSettings {
        settings(&self.env_text())
    }

    pub fn options(&self, exit_when_idle: bool) -> RunOptions {
        options(&self.source, self.root(), exit_when_idle)
    }

    /// This node's identity (made by its first run).
    pub fn node_id(&self) -> String {
        node_id(self.root())
    }

    /// A new connection to the reporting database (e.g. after its restart).
    pub async fn connect_reporting(&self) -> tokio_postgres::Client {
        connect(&reporting_url(self.reporting_port, &self.reporting_name)).await
    }

    /// DB Replic in this task until every (table, sink) has nothing left to deliver.
    pub async fn run_until_idle(&self) -> Result<(), DbReplicError> {
        dbreplic::run(self.settings(), self.options(true), std::future::pending()).await
    }

    /// DB Replic that never ends on its own: for a test that drops it mid-way.
    pub fn run_forever(&self) -> impl Future<Output = Result<(), DbReplicError>> + use<> {
        dbreplic::run(self.settings(), self.options(false), std::future::pending())
    }

    /// DB Replic in a task of its own until `stop` is called.
    pub fn start_db_replic(&self) -> RunningDbReplic {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(dbreplic::run(self.settings(), self.options(false), async {
            let _ = stopped.await;
        }));
        RunningDbReplic { stop, task }
    }

    pub async fn insert_cel(&self, n: i64) {
        insert_cel(&self.source, n).await;
    }

    pub async fn insert_queue_log(&self, n: i64) {
        insert_queue_log(&self.source, n).await;
    }

    /// The last id the reporting database acknowledged for `table` (0 before any).
    pub async fn pg_checkpoint(&self, table: &str) -> i64 {
        pg_checkpoint(&self.reporting, table).await
    }

    /// Waits until `reporting`'s checkpoints reach the source's highest ids, both tables.
    pub async fn wait_pg_caught_up(
        &self,
        reporting: &tokio_postgres::Client,
        what: &str,
        timeout: Duration,
    ) {
        let cel_max = max_id(&self.source, "cel").await;
        let ql_max = max_id(&self.source, "queue_log").await;
        super::wait_for(what, timeout, async || {
            pg_checkpoint(reporting, "cel").await == cel_max
                && pg_checkpoint(reporting, "queue_log").await == ql_max
        })
        .await;
    }

    /// [`Pipeline::wait_pg_caught_up`] on the pipeline's own reporting database.
    pub async fn wait_reporting_caught_up(&self, what: &str, timeout: Duration) {
        self.wait_pg_caught_up(&self.reporting, what, timeout).await;
    }

    /// Waits until the Elasticsearch stand-in holds as many documents as the source has rows,
    /// both tables.
    pub async fn wait_es_caught_up(&self, what: &str, timeout: Duration) {
        let cels = count(&self.source, "cel").await;
        let queue_logs = count(&self.source, "queue_log").await;
        super::wait_for(what, timeout, async || {
            self.es.count("cel") == cels && self.es.count("queue_log") == queue_logs
        })
        .await;
    }

    /// Every source row in both sinks exactly once.
    pub async fn assert_exactly_once(&self) {
        assert_exactly_once(&self.source, &self.reporting, &self.es).await;
    }

    /// DB Replic's state document.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.root().join(STATE_FILE)).unwrap()).unwrap()
    }

    /// DB Replic's state document as text ("" before it is written).
    pub fn state_text(&self) -> String {
        std::fs::read_to_string(self.root().join(STATE_FILE)).unwrap_or_default()
    }

    /// DB Replic's log file ("" before it is written).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join(LOG_FILE)).unwrap_or_default()
    }

    /// Waits until DB Replic's log has a line containing every one of `words`.
    pub async fn wait_for_log_line(&self, words: &[&str], timeout: Duration) {
        let what = format!("a line with {words:?} in DB Replic's log");
        super::wait_for(&what, timeout, async || {
            self.log()
                .lines()
                .any(|line| words.iter().all(|w| line.contains(w)))
        })
        .await;
    }
}

fn settings(env_text: &str) -> DbReplicSettings {
    let file = EnvFile::parse(Path::new("/test/custom.env"), env_text).unwrap();
    DbReplicSettings::load(&file).unwrap()
}

fn options(source: &TestDb, root: &Path, exit_when_idle: bool) -> RunOptions {
    RunOptions {
        source: DbTarget::parse("XiVO (source)", &source.url()).unwrap(),
        paths: Paths::new(root),
        exit_when_idle,
    }
}

fn node_id(root: &Path) -> String {
    let path = root.join("var/lib/xivo-ha/node-id");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// A second node of a pipeline's site ([`Pipeline::other_node`]); its custom.env is written
/// under its root and XiVO CC is enabled there, for the binary too.
pub struct OtherNode {
    pub source: TestDb,
    pub root: tempfile::TempDir,
    env: String,
}

impl OtherNode {
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn node_id(&self) -> String {
        node_id(self.root())
    }

    /// DB Replic on this node, until idle (`exit_when_idle`) or stopped by an error.
    pub async fn run(&self, exit_when_idle: bool) -> Result<(), DbReplicError> {
        dbreplic::run(
            settings(&self.env),
            options(&self.source, self.root(), exit_when_idle),
            std::future::pending(),
        )
        .await
    }

    /// `xivo-ha --root <root> --db <its database> <args>`.
    pub fn xivo_ha(&self, args: &[&str]) -> std::process::Output {
        super::xivo_ha(self.root(), &self.source.url(), args)
    }
}

/// DB Replic running in a task, see [`Pipeline::start_db_replic`].
pub struct RunningDbReplic {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), DbReplicError>>,
}

impl RunningDbReplic {
    /// Asks it to stop and returns how it ended.
    pub async fn stop(self) -> Result<(), DbReplicError> {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

/// `n` CEL rows (every other one with a JSON `extra`).
pub async fn insert_cel(db: &TestDb, n: i64) {
    insert_cel_on(&db.client().await, n).await;
}

/// The same in `client`'s session (inside its open transaction, if any).
pub async fn insert_cel_on(client: &tokio_postgres::Client, n: i64) {
    client
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

/// `n` queue_log rows.
pub async fn insert_queue_log(db: &TestDb, n: i64) {
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

/// The first column of every row `sql` returns, as bigint.
pub async fn ids(client: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

/// Every row of cel and queue_log is in the reporting database and in the ES server, once.
pub async fn assert_exactly_once(
    source: &TestDb,
    reporting: &tokio_postgres::Client,
    es: &EsServer,
) {
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

/// The last id the reporting database acknowledged for `table` (0 before any, or when it is
/// down).
pub async fn pg_checkpoint(reporting: &tokio_postgres::Client, table: &str) -> i64 {
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

pub async fn count(db: &TestDb, table: &str) -> usize {
    db.client()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get::<_, i64>(0) as usize
}

pub async fn max_id(db: &TestDb, table: &str) -> i64 {
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
