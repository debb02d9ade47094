//! `cargo bench --bench replication`: a 10,000-user XiVO configuration (users, voicemails, SIP
//! accounts, lines, extensions, dial actions, queues, agents and queue members in proportion) in
//! the fixture schema on the test PostgreSQL, then, on the same data, a full replication, a
//! replication with no change, and XiVO's way (`pg_dump --data-only` of the same tables piped
//! into `psql` inside XiVO's `SET session_replication_role = replica; BEGIN; TRUNCATE …; COMMIT`).
//! Five rounds of the three, interleaved; the median of each is kept. Then the configuration
//! lag at the monitor's default interval (`XIVO_HA_REPLICATION_INTERVAL_S`, 60 s), computed
//! from measured parts rather than waited for: a change made at a uniformly random time waits
//! for the next run (at most the interval) and is on the slave when that run ends, so
//! `config_lag_p99_s` = interval × 0.99 + p99 of the duration of runs that carry one new user;
//! `noop_cpu_pct` = the CPU time (user + system, this process) of a no-change run, averaged,
//! over the interval. The last line holds the figures.
//!
//! Needs the test PostgreSQL (`scripts/start-test-postgres.sh`), `pg_dump` and `psql`;
//! `XIVO_HA_TEST_PG` overrides the server as for the tests.

use std::process::{Command, Stdio};
use std::time::Instant;

use xivo_ha::replication::{self, EXCLUDED_TABLES, Options, target};

const SCHEMA_SQL: &str = include_str!("../tests/fixtures/asterisk-schema.sql");
const DATA_SQL: &str = include_str!("../tests/fixtures/asterisk-data.sql");
const USERS: i64 = 10_000;
const RUNS: usize = 5;
/// The monitor's default replication interval, in seconds.
const INTERVAL_S: f64 = 60.0;
/// Runs measured for the lag: no-change runs, and runs after one new user on the master.
const NOOP_RUNS: usize = 30;
const CHANGE_RUNS: usize = 20;

fn pg_base() -> String {
    std::env::var("XIVO_HA_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres".into())
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to {url}: {e}; run scripts/start-test-postgres.sh")
        });
    tokio::spawn(connection);
    client
}

/// The generated configuration: ids start after the fixture's.
fn generate(users: i64) -> String {
    let queues = users / 50;
    let agents = users / 10;
    let mut sql = format!(
        "
INSERT INTO voicemail (uniqueid, context, mailbox, password, fullname, email)
SELECT 100 + i, 'default', (20000 + i)::text, lpad(i::text, 4, '0'), 'User ' || i, 'user' || i || '@example.org'
FROM generate_series(1, {users}) i;
INSERT INTO userfeatures (id, uuid, firstname, lastname, email, voicemailid, callerid, enablevoicemail,
                          description, musiconhold, mobilephonenumber)
SELECT 100 + i, md5(i::text)::uuid::text, 'First' || i, 'Last' || i, 'user' || i || '@example.org', 100 + i,
       '\"First' || i || ' Last' || i || '\"', 1, 'generated user ' || i, 'default', '+3360000' || i
FROM generate_series(1, {users}) i;
INSERT INTO usersip (id, name, type, secret, context, host, category, callerid)
SELECT 100 + i, 'sip' || i, 'friend', md5('secret' || i), 'default', 'dynamic', 'user', 'User ' || i
FROM generate_series(1, {users}) i;
INSERT INTO linefeatures (id, protocol, protocolid, device, configregistrar, name, number, context, provisioningid)
SELECT 100 + i, 'sip', 100 + i, 'dev' || i, 'default', 'sip' || i, (20000 + i)::text, 'default', 200000 + i
FROM generate_series(1, {users}) i;
INSERT INTO extensions (id, context, exten, type, typeval)
SELECT 100 + i, 'default', (20000 + i)::text, 'user', (100 + i)::text FROM generate_series(1, {users}) i;
INSERT INTO user_line (id, user_id, line_id, extension_id, main_user, main_line)
SELECT 100 + i, 100 + i, 100 + i, 100 + i, true, true FROM generate_series(1, {users}) i;
INSERT INTO dialaction (event, category, categoryval, action, actionarg1)
SELECT e, 'user', (100 + i)::text, 'voicemail', (100 + i)::text
FROM generate_series(1, {users}) i, unnest(ARRAY['noanswer', 'busy', 'congestion', 'chanunavail']) e;
INSERT INTO queuefeatures (id, name, displayname, number, context)
SELECT 100 + q, 'queue' || q, 'Queue ' || q, (30000 + q)::text, 'default' FROM generate_series(1, {queues}) q;
INSERT INTO extensions (id, context, exten, type, typeval)
SELECT 100 + {users} + q, 'default', (30000 + q)::text, 'queue', (100 + q)::text FROM generate_series(1, {queues}) q;
INSERT INTO dialaction (event, category, categoryval, action)
SELECT e, 'queue', (100 + q)::text, 'hangup'
FROM generate_series(1, {queues}) q, unnest(ARRAY['noanswer', 'busy', 'congestion', 'chanunavail']) e;
INSERT INTO agentfeatures (id, numgroup, firstname, lastname, number, passwd, context)
SELECT 100 + a, 1, 'Agent', 'A' || a, (40000 + a)::text, '', 'default' FROM generate_series(1, {agents}) a;
INSERT INTO queuemember (queue_name, interface, usertype, userid, channel, category, position)
SELECT 'queue' || (1 + (a + k) % {queues}), 'Agent/' || (40000 + a), 'agent', 100 + a, 'Agent', 'queue', k
FROM generate_series(1, {agents}) a, generate_series(0, 1) k;
INSERT INTO agent_login_status (agent_id, agent_number, extension, context, interface, state_interface)
SELECT 100 + a, (40000 + a)::text, (20000 + a)::text, 'default', 'Local/id-' || (100 + a) || '@agentcallback',
       'SIP/sip' || a
FROM generate_series(1, {agents} / 2) a;
"
    );
    // The sequences follow the generated ids, as if the rows had been created one by one.
    for (table, column) in [
        ("voicemail", "uniqueid"),
        ("userfeatures", "id"),
        ("usersip", "id"),
        ("linefeatures", "id"),
        ("extensions", "id"),
        ("user_line", "id"),
        ("queuefeatures", "id"),
        ("agentfeatures", "id"),
    ] {
        sql.push_str(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), (SELECT max({column}) FROM {table}));\n"
        ));
    }
    sql
}

async fn create_db(admin: &tokio_postgres::Client, name: &str, generated: Option<&str>) {
    // One statement per call: DROP/CREATE DATABASE refuse to run in an implicit transaction.
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    let client = connect(&format!("{} dbname={name}", pg_base())).await;
    client.batch_execute(SCHEMA_SQL).await.unwrap();
    client.batch_execute(DATA_SQL).await.unwrap();
    if let Some(sql) = generated {
        client.batch_execute(sql).await.unwrap();
    }
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
}

fn median(samples: Vec<f64>) -> f64 {
    percentile(samples, 0.5)
}

/// The nearest-rank percentile `p` (0 to 1) of `samples`.
fn percentile(mut samples: Vec<f64>, p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// CPU seconds (user + system, every thread) this process has used, from /proc/self/stat.
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at the third.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_s()
}

fn clock_ticks_per_s() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("CLK_TCK is a number")
    })
}

/// The lag figures: run durations of no-change runs and of runs carrying one new user, and the
/// CPU of the no-change runs. Returns (config_lag_p99_s, noop_cpu_pct, noop_p50_s, change_p99_s).
async fn lag(
    master: &tokio_postgres::Client,
    source: &xivo_ha::db::DbTarget,
    target: &xivo_ha::db::DbTarget,
) -> (f64, f64, f64, f64) {
    let (mut noop, mut noop_cpu, mut change) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..NOOP_RUNS.max(CHANGE_RUNS) {
        if i < NOOP_RUNS {
            let cpu = process_cpu_s();
            let report = replication::replicate(source, target, Options::default())
                .await
                .expect("no-change replication");
            noop_cpu.push(process_cpu_s() - cpu);
            assert!(report.tables_copied.is_empty(), "nothing changed");
            noop.push(report.seconds);
        }
        if i < CHANGE_RUNS {
            master
                .execute(
                    "INSERT INTO userfeatures (uuid, firstname, lastname) VALUES ($1, 'Lag', 'Probe')",
                    &[&format!("lag-probe-{i}")],
                )
                .await
                .unwrap();
            let report = replication::replicate(source, target, Options::default())
                .await
                .expect("replication of one new user");
            assert!(
                report
                    .tables_copied
                    .iter()
                    .any(|t| t.table == "userfeatures"),
                "the new user is copied"
            );
            change.push(report.seconds);
        }
    }
    let cpu_mean = noop_cpu.iter().sum::<f64>() / noop_cpu.len() as f64;
    let change_p99 = percentile(change, 0.99);
    (
        INTERVAL_S * 0.99 + change_p99,
        cpu_mean / INTERVAL_S * 100.0,
        median(noop),
        change_p99,
    )
}

/// XiVO's script: the data-only dump of the replicated tables, replayed with psql inside its
/// TRUNCATE wrapper.
fn pgdump_restore(master: &str, slave: &str, tables: &[String]) {
    let mut dump = Command::new("pg_dump");
    dump.args([
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "--data-only",
        "--schema=public",
    ]);
    for table in EXCLUDED_TABLES {
        dump.args(["-T", table, "-T", &format!("{table}_id_seq")]);
    }
    let mut dump = dump
        .arg(master)
        .stdout(Stdio::piped())
        .spawn()
        .expect("pg_dump runs");
    let truncate: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
    let script = format!(
        "{{ echo 'SET session_replication_role = replica; BEGIN; TRUNCATE {};'; cat; echo 'COMMIT;'; }} | psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres {slave} >/dev/null",
        truncate.join(", ")
    );
    let restore = Command::new("sh")
        .args(["-c", &script])
        .stdin(dump.stdout.take().expect("pg_dump's stdout is piped"))
        .status()
        .expect("psql runs");
    assert!(
        dump.wait().expect("pg_dump ends").success(),
        "pg_dump failed"
    );
    assert!(restore.success(), "pg_dump | psql failed");
}

#[tokio::main]
async fn main() {
    // XIVO_HA_LOG=xivo_ha::replication=debug shows where the time goes.
    if std::env::var_os("XIVO_HA_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("XIVO_HA_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
    let admin = connect(&pg_base()).await;
    let master_name = "xivoha_bench_master";
    let slave_name = "xivoha_bench_slave";
    let generated = generate(USERS);
    let started = Instant::now();
    create_db(&admin, master_name, Some(&generated)).await;
    create_db(&admin, slave_name, None).await;
    println!("users={USERS}");
    println!("generate_s={:.2}", started.elapsed().as_secs_f64());

    let master_url = format!("{} dbname={master_name}", pg_base());
    let slave_url = format!("{} dbname={slave_name}", pg_base());
    let source = target::explicit("master", &master_url).unwrap();
    let target = target::explicit("slave", &slave_url).unwrap();

    // Rounds of (full, no change, XiVO's way), so that the load of a shared machine weighs
    // on the three alike; the median of each is kept.
    let (mut full, mut nochange, mut pgdump) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows = 0;
    let mut tables = Vec::new();
    for _ in 0..RUNS {
        let everything = Options {
            full: true,
            ..Options::default()
        };
        let report = replication::replicate(&source, &target, everything)
            .await
            .expect("full replication");
        rows = report.rows_copied();
        tables = report
            .tables_copied
            .iter()
            .map(|t| t.table.clone())
            .collect();
        full.push(report.seconds);

        let report = replication::replicate(&source, &target, Options::default())
            .await
            .expect("no-change replication");
        assert!(
            report.tables_copied.is_empty(),
            "nothing changed, nothing copied"
        );
        nochange.push(report.seconds);

        let clock = Instant::now();
        pgdump_restore(master_name, slave_name, &tables);
        pgdump.push(clock.elapsed().as_secs_f64());
    }
    println!("tables={} rows={rows} runs={RUNS}", tables.len());
    // The XiVO way left the same data: the next replication finds it rewritten (new row
    // versions) and copies it all again, which proves the slave check, not the data, decided.
    let after = replication::replicate(&source, &target, Options::default())
        .await
        .expect("replication after pg_dump");
    assert_eq!(after.tables_copied.len(), tables.len());

    let master = connect(&master_url).await;
    let (config_lag_p99, noop_cpu_pct, noop_p50, change_p99) = lag(&master, &source, &target).await;
    drop(master);
    println!(
        "lag: interval_s={INTERVAL_S} noop_runs={NOOP_RUNS} noop_p50_s={noop_p50:.3} change_runs={CHANGE_RUNS} change_p99_s={change_p99:.3}"
    );

    // XIVO_HA_BENCH_KEEP=1 leaves both databases for a look with psql.
    let keep = std::env::var_os("XIVO_HA_BENCH_KEEP").is_some();
    for name in [master_name, slave_name].into_iter().filter(|_| !keep) {
        admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .unwrap();
    }

    let (full, nochange, pgdump) = (median(full), median(nochange), median(pgdump));
    println!(
        "replication_s={full:.3} nochange_s={nochange:.3} pgdump_restore_s={pgdump:.3} ratio={:.3} nochange_ratio={:.3} config_lag_p99_s={config_lag_p99:.2} noop_cpu_pct={noop_cpu_pct:.3}",
        full / pgdump,
        nochange / pgdump
    );
}
