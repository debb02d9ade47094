//! `cargo bench --bench dbreplic`: DB Replic's throughput and lag, PostgreSQL to PostgreSQL
//! (the real server on 127.0.0.1:5432) and to the in-test Elasticsearch server.
//!
//! 1. A backlog of 1,000,000 CEL rows is delivered from scratch: rows per second to each sink.
//! 2. Then a steady 1,000 rows/s for 30 s: the lag from the insert's commit to the moment the
//!    row is durable in each sink (PostgreSQL: the checkpoint row; Elasticsearch: stored).
//!
//! Prints `name=value` lines, the summary last:
//! `pg_rows_per_s=… es_docs_per_s=… lag_p99_ms=…` (lag: the worse sink's p99).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestDb;
use common::es_server::EsServer;
use xivo_ha::db::DbTarget;
use xivo_ha::dbreplic::settings::DbReplicSettings;
use xivo_ha::dbreplic::{self, RunOptions};
use xivo_ha::paths::Paths;
use xivo_ha::settings::EnvFile;

const BACKLOG: i64 = 1_000_000;
const STEADY_RATE: u64 = 1_000;
const STEADY_SECS: u64 = 30;
const ORIGIN: &str = "bench";

const INSERT_CEL: &str = "INSERT INTO cel (eventtype, eventtime, userdeftype, cid_name, cid_num, cid_ani, \
    cid_rdnis, cid_dnid, exten, context, channame, appname, appdata, amaflags, accountcode, peeraccount, \
    uniqueid, linkedid, userfield, peer, extra, call_log_id) \
    SELECT (ARRAY['CHAN_START','ANSWER','BRIDGE_ENTER','HANGUP','CHAN_END'])[1 + g % 5], now(), '', \
    'Alice Martin', '1001', '1001', '', '', '2000', 'default', 'SIP/abcdef-' || lpad(g::text, 8, '0'), \
    'Dial', 'SIP/bob,30,tT', 3, '', '', '1700000000.' || g, '1700000000.' || (g - g % 5), '', '', \
    '{\"hangupcause\":16,\"dialstatus\":\"ANSWER\"}', NULL FROM generate_series(1, $1::bigint) g RETURNING id::bigint";

async fn checkpoint(client: &tokio_postgres::Client) -> i64 {
    client
        .query_opt(
            "SELECT last_id FROM dbreplic_checkpoint WHERE origin = $1 AND table_name = 'cel'",
            &[&ORIGIN],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
        .unwrap_or(0)
}

fn p99(mut lags: Vec<Duration>) -> f64 {
    if lags.is_empty() {
        return f64::NAN;
    }
    lags.sort();
    let at = ((lags.len() as f64) * 0.99).ceil() as usize - 1;
    lags[at.min(lags.len() - 1)].as_secs_f64() * 1000.0
}

/// Matches delivered ids against insert times, in id order.
struct LagMeter {
    pending: VecDeque<(i64, Instant)>,
    lags: Vec<Duration>,
}

impl LagMeter {
    fn delivered_up_to(&mut self, last: i64, now: Instant) {
        while let Some(&(id, at)) = self.pending.front() {
            if id > last {
                break;
            }
            self.lags.push(now - at);
            self.pending.pop_front();
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let source = TestDb::create().await;
    let reporting_db = TestDb::create_empty().await;
    let src = source.client().await;
    let reporting = reporting_db.client().await;
    src.batch_execute("TRUNCATE cel").await.unwrap();
    let started = Instant::now();
    src.execute(INSERT_CEL, &[&BACKLOG]).await.unwrap();
    println!("backlog_rows={BACKLOG}");
    println!("backlog_insert_s={:.1}", started.elapsed().as_secs_f64());
    let backlog_max: i64 = src
        .query_one("SELECT max(id)::bigint FROM cel", &[])
        .await
        .unwrap()
        .get(0);

    let es = EsServer::start_with(false).await;
    let root = tempfile::tempdir().unwrap();
    let env = format!(
        "REPORTING_DB_HOST=127.0.0.1\nREPORTING_DB_PORT=5432\nREPORTING_DB_NAME={}\nREPORTING_DB_USER=postgres\n\
         ELASTICSEARCH={}\nIS_HA_SLAVE=true\nDB_REPLIC_ORIGIN={ORIGIN}\n",
        reporting_db.name, es.url
    );
    let settings =
        DbReplicSettings::load(&EnvFile::parse(Path::new("bench.env"), &env).unwrap()).unwrap();
    println!(
        "batch_rows={} poll_ms={}",
        settings.batch_rows,
        settings.poll.as_millis()
    );
    let options = RunOptions {
        source: DbTarget::parse("XiVO (source)", &source.url()).unwrap(),
        paths: Paths::new(root.path()),
        exit_when_idle: false,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(dbreplic::run(settings, options, async {
        let _ = stopped.await;
    }));

    // Phase 1: the backlog.
    let start = Instant::now();
    let (mut pg_done, mut es_done) = (None, None);
    while pg_done.is_none() || es_done.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if pg_done.is_none() && checkpoint(&reporting).await >= backlog_max {
            pg_done = Some(start.elapsed());
        }
        if es_done.is_none() && es.max_id("cel") >= backlog_max && es.count("cel") as i64 == BACKLOG
        {
            es_done = Some(start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "backlog not delivered in 15 min"
        );
    }
    let (pg_done, es_done) = (pg_done.unwrap(), es_done.unwrap());
    let pg_rate = BACKLOG as f64 / pg_done.as_secs_f64();
    let es_rate = BACKLOG as f64 / es_done.as_secs_f64();
    println!("backlog_pg_s={:.2}", pg_done.as_secs_f64());
    println!("backlog_es_s={:.2}", es_done.as_secs_f64());

    // Phase 2: steady inserts, 10 rows every 10 ms, with the lag measured per row.
    let inserter = tokio::spawn(async move {
        let client = source.client().await;
        let mut sent = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let per_tick = (STEADY_RATE / 100) as i64;
        let end = Instant::now() + Duration::from_secs(STEADY_SECS);
        while Instant::now() < end {
            tick.tick().await;
            let rows = client.query(INSERT_CEL, &[&per_tick]).await.unwrap();
            let at = Instant::now();
            sent.extend(rows.iter().map(|r| (r.get::<_, i64>(0), at)));
        }
        (sent, source)
    });
    let mut pg = LagMeter {
        pending: VecDeque::new(),
        lags: Vec::new(),
    };
    let mut es_meter = LagMeter {
        pending: VecDeque::new(),
        lags: Vec::new(),
    };
    // The watcher records when each sink's highest delivered id moved; once the inserter is
    // done, every inserted id is matched with the first observation that covers it.
    let mut pg_seen: Vec<(i64, Instant)> = Vec::new();
    let mut es_seen: Vec<(i64, Instant)> = Vec::new();
    let steady_end = Instant::now() + Duration::from_secs(STEADY_SECS + 15);
    while Instant::now() < steady_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = Instant::now();
        let p = checkpoint(&reporting).await;
        if pg_seen.last().is_none_or(|(last, _)| p > *last) {
            pg_seen.push((p, now));
        }
        let e = es.max_id("cel");
        if es_seen.last().is_none_or(|(last, _)| e > *last) {
            es_seen.push((e, now));
        }
        if inserter.is_finished() {
            let last: i64 = src
                .query_one("SELECT max(id)::bigint FROM cel", &[])
                .await
                .unwrap()
                .get(0);
            if p >= last && e >= last {
                break;
            }
        }
    }
    let (sent, _source) = inserter.await.unwrap();
    let steady_rows = sent.len();
    for (meter, seen) in [(&mut pg, &pg_seen), (&mut es_meter, &es_seen)] {
        meter.pending = sent.iter().copied().collect();
        for &(last, at) in seen {
            meter.delivered_up_to(last, at);
        }
        assert!(
            meter.pending.is_empty(),
            "{} steady rows never delivered",
            meter.pending.len()
        );
    }
    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
    let pg_p99 = p99(pg.lags);
    let es_p99 = p99(es_meter.lags);
    println!("steady_rows={steady_rows}");
    println!(
        "steady_rate_per_s={:.0}",
        steady_rows as f64 / STEADY_SECS as f64
    );
    println!("pg_lag_p99_ms={pg_p99:.0}");
    println!("es_lag_p99_ms={es_p99:.0}");
    println!(
        "pg_rows_per_s={pg_rate:.0} es_docs_per_s={es_rate:.0} lag_p99_ms={:.0}",
        pg_p99.max(es_p99)
    );
}
