//! `cargo bench --bench dbreplic`: DB Replic's throughput, lag and idle cost, PostgreSQL to
//! PostgreSQL (the real server on 127.0.0.1:5432) and to the in-test Elasticsearch server.
//!
//! 1. A backlog of 1,000,000 CEL rows. The yardstick first: one plain binary `COPY` of those
//!    rows (the source's `COPY (SELECT ...) TO STDOUT` piped into `COPY ... FROM STDIN` of a
//!    fresh reporting table of the same layout, one transaction), run before and after step 2;
//!    the faster of the two is `copy_rows_per_s`.
//! 2. DB Replic from empty checkpoints with the Elasticsearch server down (every request
//!    answered 503, so its sink backs off): rows per second until the PostgreSQL checkpoint
//!    reaches the last id. `ratio_vs_copy` = that / `copy_rows_per_s`.
//! 3. DB Replic again, the server up: the PostgreSQL sink has nothing to do, the
//!    Elasticsearch sink delivers the backlog from scratch: documents per second.
//! 4. Right after: 1,000 rows/s (10 rows every 10 ms) for 30 s; the lag from the insert's
//!    commit to the moment the row is durable in each sink (PostgreSQL: the checkpoint row;
//!    Elasticsearch: stored), sampled every 5 ms. p99 of the rows inserted in the first 5 s
//!    (`after_backlog`) and of the others (`steady`).
//! 5. Idle: 20 s with nothing to deliver. DB Replic's queries per second on the source
//!    database (`pg_stat_database` transactions) and the CPU time of its backends
//!    (`/proc/<pid>/schedstat`, nanoseconds), as a share of one core; and one poll's
//!    execution time (`EXPLAIN ANALYZE`).
//!
//! 6. The Elasticsearch sink's own share: the bench process's CPU time per document during
//!    step 3 (`/proc/self/stat`: DB Replic and the test server, which share the process), and
//!    how fast DB Replic's `_bulk` writer alone serialises the backlog's rows (read first).
//!
//! Prints `name=value` lines, the summary last:
//! `pg_rows_per_s=… copy_rows_per_s=… ratio_vs_copy=… es_docs_per_s=… lag_p99_ms=…` (lag: the
//! worse sink's p99, over both windows).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, pin_mut};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::TestDb;
use common::es_server::EsServer;
use xivo_ha::db::DbTarget;
use xivo_ha::dbreplic::es::config::BulkWriter;
use xivo_ha::dbreplic::pg::config;
use xivo_ha::dbreplic::settings::DbReplicSettings;
use xivo_ha::dbreplic::source::{EventTable, Source};
use xivo_ha::dbreplic::{self, DbReplicError, RunOptions};
use xivo_ha::paths::Paths;
use xivo_ha::settings::EnvFile;

const BACKLOG: i64 = 1_000_000;
const STEADY_RATE: u64 = 1_000;
const STEADY_SECS: u64 = 30;
/// The steady rows inserted this soon after the backlog make the `after_backlog` window.
const AFTER_BACKLOG: Duration = Duration::from_secs(5);
const IDLE_WINDOW: Duration = Duration::from_secs(20);
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

async fn max_cel_id(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT coalesce(max(id), 0)::bigint FROM cel", &[])
        .await
        .unwrap()
        .get(0)
}

fn p99(mut lags: Vec<Duration>) -> f64 {
    if lags.is_empty() {
        return f64::NAN;
    }
    lags.sort();
    let at = ((lags.len() as f64) * 0.99).ceil() as usize - 1;
    lags[at.min(lags.len() - 1)].as_secs_f64() * 1000.0
}

/// The lags of the rows `sent` (id, commit time), each from the first observation `seen`
/// (highest delivered id, when) that covers it; split by insert time at `split`.
fn lags(
    sent: &[(i64, Instant)],
    seen: &[(i64, Instant)],
    split: Instant,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut pending: VecDeque<(i64, Instant)> = sent.iter().copied().collect();
    let (mut early, mut late) = (Vec::new(), Vec::new());
    for &(last, at) in seen {
        while let Some(&(id, inserted)) = pending.front() {
            if id > last {
                break;
            }
            let lag = at.saturating_duration_since(inserted);
            if inserted < split {
                early.push(lag);
            } else {
                late.push(lag);
            }
            pending.pop_front();
        }
    }
    assert!(
        pending.is_empty(),
        "{} steady rows never delivered",
        pending.len()
    );
    (early, late)
}

/// One plain binary COPY of the backlog from `source` into a fresh reporting table; rows/s.
async fn plain_copy(source: &tokio_postgres::Client) -> f64 {
    let target_db = TestDb::create_empty().await;
    let mut target = target_db.client().await;
    target
        .batch_execute(&config::create_table_sql(EventTable::Cel))
        .await
        .unwrap();
    // DB Replic's own read, without its parameters.
    let select = EventTable::Cel
        .select_sql()
        .replace("$1::bigint", "0")
        .replace("$2::bigint", &(BACKLOG * 10).to_string());
    let started = Instant::now();
    let tx = target.transaction().await.unwrap();
    let into = tx
        .copy_in::<_, bytes::Bytes>(&format!(
            "COPY cel ({}) FROM STDIN (FORMAT binary)",
            config::copy_columns(EventTable::Cel)
        ))
        .await
        .unwrap();
    pin_mut!(into);
    let out = source
        .copy_out(&format!(
            "COPY (SELECT '{ORIGIN}'::text, s.* FROM ({select}) s) TO STDOUT (FORMAT binary)"
        ))
        .await
        .unwrap();
    pin_mut!(out);
    while let Some(chunk) = out.next().await {
        into.feed(chunk.unwrap()).await.unwrap();
    }
    let rows = into.finish().await.unwrap();
    tx.commit().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(rows as i64, BACKLOG);
    BACKLOG as f64 / elapsed.as_secs_f64()
}

/// A DB Replic run in the background, stopped by the sender.
fn start(
    settings: &DbReplicSettings,
    options: &RunOptions,
) -> (oneshot::Sender<()>, JoinHandle<Result<(), DbReplicError>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(dbreplic::run(settings.clone(), options.clone(), async {
        let _ = stopped.await;
    }));
    (stop, runner)
}

/// Waits until `done` (polled every 20 ms) and returns the time it took from `start`.
async fn until(start: Instant, what: &str, mut done: impl AsyncFnMut() -> bool) -> Duration {
    loop {
        if done().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "{what} not done in 15 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU time (ns) the process `pid` has spent, from `/proc/<pid>/schedstat`.
fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system, every thread) of this process so far, in seconds (USER_HZ 100).
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// DB Replic's `_bulk` writer alone: documents per second over the backlog's rows (read
/// first, in DB Replic's batches; only the serialisation is timed).
async fn serialise_rate(target: &DbTarget, last: i64) -> f64 {
    let mut source = Source::new(target.clone(), 5000, usize::MAX, Duration::ZERO);
    let writer = BulkWriter::new("cel", ORIGIN, EventTable::Cel);
    let (mut after, mut docs, mut spent) = (0, 0usize, Duration::ZERO);
    let mut out = Vec::new();
    while after < last {
        let batch = source.read(EventTable::Cel, after).await.unwrap();
        let started = Instant::now();
        out.clear();
        for row in &batch.rows {
            writer.write(&mut out, row.id, row.cells(EventTable::Cel));
        }
        spent += started.elapsed();
        docs += batch.rows.len();
        after = batch.last_id().unwrap();
        std::hint::black_box(&out);
    }
    docs as f64 / spent.as_secs_f64()
}

/// Transactions so far in the source database (each poll is one).
async fn xacts(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
             WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
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
    src.batch_execute("VACUUM ANALYZE cel").await.unwrap();
    println!("backlog_rows={BACKLOG}");
    println!("backlog_insert_s={:.1}", started.elapsed().as_secs_f64());
    let backlog_max = max_cel_id(&src).await;

    let copy_before = plain_copy(&src).await;
    println!("copy_before_rows_per_s={copy_before:.0}");

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
        "batch_rows={} batch_bytes={} poll_ms={}",
        settings.batch_rows,
        settings.batch_bytes,
        settings.poll.as_millis()
    );
    let options = RunOptions {
        source: DbTarget::parse("XiVO (source)", &source.url()).unwrap(),
        paths: Paths::new(root.path()),
        exit_when_idle: false,
    };

    // The PostgreSQL sink alone (Elasticsearch answers 503 and its sink backs off).
    es.set_down(true);
    let start_pg = Instant::now();
    let (stop, runner) = start(&settings, &options);
    let pg_done = until(start_pg, "PostgreSQL backlog", async || {
        checkpoint(&reporting).await >= backlog_max
    })
    .await;
    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
    let pg_rate = BACKLOG as f64 / pg_done.as_secs_f64();
    println!("backlog_pg_s={:.2}", pg_done.as_secs_f64());
    let delivered: i64 = reporting
        .query_one("SELECT count(*) FROM cel WHERE origin = $1", &[&ORIGIN])
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, BACKLOG, "every row once in PostgreSQL");

    let copy_after = plain_copy(&src).await;
    println!("copy_after_rows_per_s={copy_after:.0}");
    let copy_rate = copy_before.max(copy_after);

    // The Elasticsearch sink alone (PostgreSQL is at its checkpoint).
    es.set_down(false);
    let cpu_es = process_cpu_s();
    let start_es = Instant::now();
    let (stop, runner) = start(&settings, &options);
    let es_done = until(start_es, "Elasticsearch backlog", async || {
        es.max_id("cel") >= backlog_max && es.count("cel") as i64 == BACKLOG
    })
    .await;
    let es_cpu_us = (process_cpu_s() - cpu_es) * 1e6 / BACKLOG as f64;
    let es_rate = BACKLOG as f64 / es_done.as_secs_f64();
    println!("backlog_es_s={:.2}", es_done.as_secs_f64());

    // Steady inserts right after, 10 rows every 10 ms, with the lag measured per row.
    let steady_start = Instant::now();
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
    // When each sink's highest delivered id moved; once the inserter is done, every inserted
    // id is matched with the first observation that covers it.
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
            let last = max_cel_id(&src).await;
            if p >= last && e >= last {
                break;
            }
        }
    }
    let (sent, source) = inserter.await.unwrap();
    let split = steady_start + AFTER_BACKLOG;
    let (pg_early, pg_late) = lags(&sent, &pg_seen, split);
    let (es_early, es_late) = lags(&sent, &es_seen, split);
    println!("steady_rows={}", sent.len());
    println!(
        "steady_rate_per_s={:.0}",
        sent.len() as f64 / STEADY_SECS as f64
    );
    let figures = [
        ("pg_lag_after_backlog_p99_ms", p99(pg_early)),
        ("pg_lag_steady_p99_ms", p99(pg_late)),
        ("es_lag_after_backlog_p99_ms", p99(es_early)),
        ("es_lag_steady_p99_ms", p99(es_late)),
    ];
    for (name, value) in figures {
        println!("{name}={value:.0}");
    }
    let lag_p99 = figures.iter().map(|(_, v)| *v).fold(f64::NAN, f64::max);

    // Idle: nothing to deliver; what DB Replic costs the source database.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let backends: Vec<i32> = src
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let cpu_before: u64 = backends.iter().map(|&pid| cpu_ns(pid)).sum();
    let xacts_before = xacts(&src).await;
    let idle_start = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let cpu_after: u64 = backends.iter().map(|&pid| cpu_ns(pid)).sum();
    let xacts_after = xacts(&src).await;
    let window = idle_start.elapsed().as_secs_f64();
    // Less the bench's own reading of the counter.
    let qps = (xacts_after - xacts_before - 1) as f64 / window;
    let cpu_pct = (cpu_after - cpu_before) as f64 / 1e9 / window * 100.0;
    let explain: serde_json::Value = src
        .query_one(
            &format!(
                "EXPLAIN (ANALYZE, FORMAT JSON) {}",
                EventTable::Cel
                    .select_sql()
                    .replace("$1::bigint", &max_cel_id(&src).await.to_string())
                    .replace("$2::bigint", "5000")
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let poll_ms = explain[0]["Execution Time"].as_f64().unwrap_or(f64::NAN);
    println!("idle_source_backends={}", backends.len());
    println!("idle_poll_exec_ms={poll_ms:.3}");
    println!("idle_source_qps={qps:.1} idle_source_cpu_pct={cpu_pct:.2}");

    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
    println!("es_process_cpu_us_per_doc={es_cpu_us:.1}");
    println!(
        "es_serialise_docs_per_s={:.0}",
        serialise_rate(&options.source, backlog_max).await
    );
    drop(source);
    println!(
        "pg_rows_per_s={pg_rate:.0} copy_rows_per_s={copy_rate:.0} ratio_vs_copy={:.2} \
         es_docs_per_s={es_rate:.0} lag_p99_ms={lag_p99:.0}",
        pg_rate / copy_rate
    );
}
