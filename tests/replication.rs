//! `xivo-ha db-replication` against the real PostgreSQL: master and slave are two databases
//! loaded from the fixture schema; the slave's content before and after is compared table by
//! table, sequence by sequence, or as a whole `pg_dump`. Where `--target-db` says where the data
//! goes, `<slave_ip>` is data only ([`SLAVE_IP`], a documentation address): those runs are in
//! `unshare -n`, reaching PostgreSQL over its Unix socket; where the slave is contacted over
//! TCP, it is a test host (a network namespace of its own).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use xivo_ha::replication::{
    self, EXCLUDED_TABLES, LOCK_KEY, Options, ReplicationError, Report, target,
};

/// `<slave_ip>` when `--target-db` gives the slave: never contacted (the runs are isolated).
const SLAVE_IP: &str = "198.51.100.20";

/// A master and a slave, both loaded from the fixture; the slave's configuration differs from
/// the master's and its excluded tables hold the slave's own rows.
async fn pair() -> (TestDb, TestDb) {
    let (master, slave) = tokio::join!(TestDb::create(), TestDb::create());
    master.execute(
            "INSERT INTO userfeatures (uuid, firstname, lastname) VALUES ('u-master-4', 'Dan', 'Master');
             UPDATE linefeatures SET number = '2001' WHERE id = 1;
             DELETE FROM dialaction WHERE event = 'busy';
             UPDATE staticsip SET var_val = '180' WHERE var_name = 'minexpiry';
             SELECT setval('voicemail_uniqueid_seq', 500);",
        ).await;
    slave.execute(
            "INSERT INTO extensions (context, exten, type, typeval) VALUES ('default', '9999', 'user', '9');
             UPDATE userfeatures SET firstname = 'Slave-only' WHERE id = 2;
             UPDATE netiface SET address = '10.20.0.2' WHERE ifname = 'eth0';
             UPDATE resolvconf SET hostname = 'xivo-slave';
             INSERT INTO cel (eventtype, eventtime, userdeftype, cid_name, cid_num, cid_ani, cid_rdnis, cid_dnid,
                 exten, context, channame, appname, appdata, amaflags, accountcode, peeraccount, uniqueid,
                 linkedid, userfield, peer)
             VALUES ('HANGUP', '2026-11-25 11:00:00', '', 'Slave', '1002', '', '', '', '', 'default', 'SIP/x',
                 '', '', 3, '', '', 'slave.1', 'slave.1', '', '');",
        ).await;
    (master, slave)
}

async fn replicate(master: &TestDb, slave: &TestDb) -> Result<Report, ReplicationError> {
    let source = target::explicit("master", &master.url()).unwrap();
    let target = target::explicit("slave", &slave.url()).unwrap();
    replication::replicate(&source, &target, Options::default()).await
}

/// `sql` run on `changed` (the master or the slave), then a replication: its report, every
/// table it copied now the same on both.
async fn replicate_after(changed: &TestDb, sql: &str, master: &TestDb, slave: &TestDb) -> Report {
    changed.execute(sql).await;
    let report = replicate(master, slave).await.unwrap();
    for table in copied(&report) {
        assert_same_rows(master, slave, table).await;
    }
    report
}

fn copied(report: &Report) -> Vec<&str> {
    report
        .tables_copied
        .iter()
        .map(|t| t.table.as_str())
        .collect()
}

/// A slave's PostgreSQL of its own on `host` (see [`common::cluster`]), its database `asterisk`
/// loaded from the fixture; with a client over the Unix socket.
async fn slave_server_on(
    host: &common::testhost::TestHost,
) -> (common::cluster::Cluster, tokio_postgres::Client) {
    let cluster = common::cluster::start_cluster_on(host);
    connect(&cluster.socket_url("postgres"))
        .await
        .batch_execute("CREATE DATABASE asterisk ENCODING 'UTF8' TEMPLATE template0")
        .await
        .unwrap();
    let slave = connect(&cluster.socket_url("asterisk")).await;
    slave.batch_execute(SCHEMA_SQL).await.unwrap();
    slave.batch_execute(DATA_SQL).await.unwrap();
    (cluster, slave)
}

/// Every row of `table`, as text, sorted.
async fn rows(db: &TestDb, table: &str) -> String {
    rows_of(&db.client().await, table).await
}

/// Fails the test unless `table` holds the same rows on both.
async fn assert_same_rows(master: &TestDb, slave: &TestDb, table: &str) {
    assert_eq!(
        rows(master, table).await,
        rows(slave, table).await,
        "{table}"
    );
}

async fn rows_of(client: &tokio_postgres::Client, table: &str) -> String {
    client
        .query_one(
            &format!(
                "SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM public.\"{table}\" t"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn sequence(db: &TestDb, name: &str) -> (i64, bool) {
    let row = db
        .client()
        .await
        .query_one(
            &format!("SELECT last_value, is_called FROM public.\"{name}\""),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn names(db: &TestDb, relkind: &str) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = $1::text::\"char\" ORDER BY 1",
            &[&relkind],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The whole database as `pg_dump` prints it: "byte for byte as before".
fn dump(db: &TestDb) -> String {
    dump_with(&["-h", "127.0.0.1", "-U", "postgres", &db.name])
}

/// `pg_dump --no-owner <connection args>`, without its random `\restrict` lines.
fn dump_with(args: &[&str]) -> String {
    let output = Command::new("pg_dump")
        .arg("--no-owner")
        .args(args)
        .output()
        .expect("pg_dump runs");
    assert!(output.status.success(), "{}", stderr(&output));
    // pg_dump 15.14+ brackets its output with a random `\restrict` key: not part of the data.
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Two dumps are equal, or the first differing line is shown (not two whole dumps).
fn assert_same_dump(after: &str, before: &str) {
    if after != before {
        let (a, b): (Vec<&str>, Vec<&str>) = (after.lines().collect(), before.lines().collect());
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "the slave changed: line {at}: now {:?}, before {:?}",
            a.get(at),
            b.get(at)
        );
    }
}

/// A replication backend still open on `db` (killed runs take a moment to be cleaned up).
async fn wait_until_no_replication_backend(db: &TestDb) {
    let admin = connect(&pg_base()).await;
    wait_for(
        "the replication backend to go",
        Duration::from_secs(20),
        async || {
            let n: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = $1 AND application_name = 'xivo-ha db-replication'",
                    &[&db.name],
                )
                .await
                .unwrap()
                .get(0);
            n == 0
        },
    )
    .await;
}

/// `db-replication SLAVE_IP --target-db <slave_url>` in `unshare -n`: `slave_url` must be a
/// Unix-socket one.
fn db_replication(root: &Path, master: &TestDb, slave_url: &str) -> std::process::Output {
    xivo_ha_isolated(
        root,
        &master.socket_url(),
        &["db-replication", SLAVE_IP, "--target-db", slave_url],
    )
}

/// `db-replication` from `master` into `slave`, refused: its one error line (checked by
/// [`one_error_line`]), the slave's dump as it was before.
fn refused_leaving_the_slave_alone(root: &Path, master: &TestDb, slave: &TestDb) -> String {
    let before = dump(slave);
    let line = one_error_line(&db_replication(root, master, &slave.socket_url()));
    assert_same_dump(&dump(slave), &before);
    line
}

/// The one error line, after the same reason in XiVO's words (`Slave replication failed: `).
fn one_error_line(output: &std::process::Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    let err = stderr(output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "expected XiVO's line and ours, got:\n{err}");
    let xivo = lines[0].strip_prefix("Slave replication failed: ");
    let ours = lines[1].strip_prefix("xivo-ha: error: ");
    assert!(xivo.is_some() && xivo == ours, "{err}");
    lines[1].to_owned()
}

#[tokio::test]
async fn the_classic_command_makes_every_replicated_table_and_sequence_equal() {
    let (master, slave) = pair().await;
    let excluded_before: Vec<String> = {
        let mut v = Vec::new();
        for t in EXCLUDED_TABLES {
            v.push(rows(&slave, t).await);
        }
        v
    };
    let root = tempfile::tempdir().unwrap();
    let link = root.path().join("xivo-master-slave-db-replication");
    std::os::unix::fs::symlink(xivo_ha_bin(), &link).unwrap();
    let output = Command::new("unshare")
        .arg("-n")
        .arg(&link)
        .args([SLAVE_IP, "--root"])
        .arg(root.path())
        .args(["--source-db", &master.socket_url()])
        .args(["--target-db", &slave.socket_url()])
        .output()
        .unwrap();
    assert_success(&output);
    let summary = stdout(&output);
    assert!(summary.contains("ok, 17 of 17 tables copied"), "{summary}");

    let tables = names(&master, "r").await;
    assert_eq!(tables.len(), 17 + EXCLUDED_TABLES.len());
    for table in tables
        .iter()
        .filter(|t| !EXCLUDED_TABLES.contains(&t.as_str()))
    {
        assert_eq!(
            rows(&master, table).await,
            rows(&slave, table).await,
            "{table}"
        );
    }
    for (table, before) in EXCLUDED_TABLES.iter().zip(excluded_before) {
        assert_eq!(rows(&slave, table).await, before, "{table}");
    }
    let mut compared = 0;
    for seq in names(&master, "S").await {
        let owner = seq.strip_suffix("_id_seq").unwrap_or("");
        if EXCLUDED_TABLES.contains(&owner) {
            continue;
        }
        assert_eq!(
            sequence(&master, &seq).await,
            sequence(&slave, &seq).await,
            "{seq}"
        );
        compared += 1;
    }
    assert!(compared >= 10);
    assert_eq!(
        sequence(&slave, "voicemail_uniqueid_seq").await,
        (500, true)
    );

    let status = xivo_ha(root.path(), "host=/nonexistent", &["status", "--json"]);
    assert_success(&status);
    let status: Value = serde_json::from_str(&stdout(&status)).unwrap();
    let state = &status["components"]["replication"];
    assert_eq!(state["result"], "ok");
    assert_eq!(state["tables_copied"], 17);
    assert!(
        state["summary"]
            .as_str()
            .unwrap()
            .contains("17 of 17 tables copied")
    );
}

/// The master's version of `table` differs (emptied, sequence moved on); the slave keeps its own.
async fn assert_excluded_untouched(table: &str) {
    let (master, slave) = pair().await;
    let slave_rows = match table {
        "call_log_participant" => Some(
            "INSERT INTO call_log_participant (uuid, call_log_id, user_uuid, role)
             VALUES ('p-slave', 1, 'u-slave', 'source')",
        ),
        "stat_agent_periodic" => {
            Some("INSERT INTO stat_agent_periodic (time, agent_id) VALUES (now(), 1)")
        }
        "stat_call_on_queue" => Some(
            "INSERT INTO stat_call_on_queue (callid, time, status, queue_id, agent_id)
             VALUES ('c1', now(), 'answered', 1, 1)",
        ),
        "stat_queue_periodic" => {
            Some("INSERT INTO stat_queue_periodic (time, queue_id) VALUES (now(), 1)")
        }
        _ => None,
    };
    if let Some(sql) = slave_rows {
        slave.execute(sql).await;
    }
    let sequence_name = format!("{table}_id_seq");
    let has_sequence = names(&master, "S").await.contains(&sequence_name);
    let m = master.client().await;
    m.batch_execute(&format!(
        "SET session_replication_role = replica; DELETE FROM public.\"{table}\""
    ))
    .await
    .unwrap();
    if has_sequence {
        m.execute(&format!("SELECT setval('{sequence_name}', 1000)"), &[])
            .await
            .unwrap();
    }
    let before = rows(&slave, table).await;
    assert!(
        !before.is_empty(),
        "the slave's {table} must have rows for the test to mean anything"
    );
    let sequence_before = if has_sequence {
        Some(sequence(&slave, &sequence_name).await)
    } else {
        None
    };

    let report = replicate(&master, &slave).await.unwrap();
    assert!(
        copied(&report).contains(&"userfeatures"),
        "the replication ran"
    );
    assert!(!copied(&report).contains(&table));
    assert_eq!(rows(&slave, table).await, before);
    assert_ne!(rows(&master, table).await, before);
    if let Some(sequence_before) = sequence_before {
        assert_eq!(sequence(&slave, &sequence_name).await, sequence_before);
        assert_ne!(sequence_before, (1000, true));
    }
}

macro_rules! excluded_table_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let table = stringify!($name).trim_start_matches("excluded_");
                assert!(EXCLUDED_TABLES.contains(&table));
                assert_excluded_untouched(table).await;
            }
        )*
        #[test]
        fn every_excluded_table_has_its_test() {
            let tested = [$(stringify!($name).trim_start_matches("excluded_")),*];
            let mut tested = tested.to_vec();
            tested.sort();
            let mut excluded = EXCLUDED_TABLES.to_vec();
            excluded.sort();
            assert_eq!(tested, excluded);
        }
    };
}

excluded_table_tests!(
    excluded_call_log,
    excluded_call_log_participant,
    excluded_cel,
    excluded_queue_log,
    excluded_session,
    excluded_stat_agent,
    excluded_stat_agent_periodic,
    excluded_stat_call_on_queue,
    excluded_stat_queue,
    excluded_stat_queue_periodic,
    excluded_mail,
    excluded_monitoring,
    excluded_netiface,
    excluded_resolvconf,
);

#[tokio::test]
async fn dhcp_is_copied() {
    let (master, slave) = pair().await;
    master
        .execute(
            "UPDATE dhcp SET pool_start = '10.20.0.50', pool_end = '10.20.0.60';
             INSERT INTO dhcp (active, pool_start, pool_end) VALUES (0, '10.30.0.1', '10.30.0.9')",
        )
        .await;
    assert_ne!(rows(&master, "dhcp").await, rows(&slave, "dhcp").await);
    let report = replicate(&master, &slave).await.unwrap();
    assert!(copied(&report).contains(&"dhcp"));
    assert_same_rows(&master, &slave, "dhcp").await;
    assert_eq!(
        sequence(&master, "dhcp_id_seq").await,
        sequence(&slave, "dhcp_id_seq").await
    );
}

#[tokio::test]
async fn an_unchanged_configuration_is_not_copied_again() {
    let (master, slave) = pair().await;
    let first = replicate(&master, &slave).await.unwrap();
    assert_eq!(first.tables_copied.len(), 17);
    let after_first = dump(&slave);

    let second = replicate(&master, &slave).await.unwrap();
    assert_eq!(copied(&second), Vec::<&str>::new());
    assert_eq!(second.tables_unchanged, 17);
    assert_eq!(second.sequences_set, 0);
    // A run with no change writes nothing.
    assert_same_dump(&dump(&slave), &after_first);

    // A change on the master: that table only.
    let third = replicate_after(
        &master,
        "UPDATE dialaction SET actionarg1 = '2' WHERE event = 'noanswer' AND category = 'user'",
        &master,
        &slave,
    )
    .await;
    assert_eq!(copied(&third), vec!["dialaction"]);

    // A change made on the slave itself (it took over for a while): the master's version wins.
    let sql = "UPDATE extensions SET typeval = '42' WHERE exten = '1001'";
    let fourth = replicate_after(&slave, sql, &master, &slave).await;
    assert_eq!(copied(&fourth), vec!["extensions"]);

    // A referenced table drags the tables referencing it (TRUNCATE needs them together).
    let sql = "UPDATE voicemail SET fullname = 'Alice M.'";
    let fifth = replicate_after(&master, sql, &master, &slave).await;
    assert_eq!(
        copied(&fifth),
        vec!["user_line", "userfeatures", "voicemail"]
    );

    // A sequence moved on without any row change is still followed.
    let sql = "SELECT nextval('extensions_id_seq')";
    let sixth = replicate_after(&master, sql, &master, &slave).await;
    assert!(sixth.tables_copied.is_empty());
    assert_eq!(sixth.sequences_set, 1);
    assert_eq!(
        sequence(&master, "extensions_id_seq").await,
        sequence(&slave, "extensions_id_seq").await
    );

    // --full ignores the fingerprints.
    let root = tempfile::tempdir().unwrap();
    let output = xivo_ha_isolated(
        root.path(),
        &master.socket_url(),
        &[
            "db-replication",
            SLAVE_IP,
            "--full",
            "--target-db",
            &slave.socket_url(),
        ],
    );
    assert_says(&output, "ok, 17 of 17 tables copied");
}

#[tokio::test]
async fn a_table_referenced_by_an_excluded_table_is_replaced_without_touching_it() {
    let (master, slave) = pair().await;
    for db in [&master, &slave] {
        db.execute(
            "ALTER TABLE stat_agent ADD FOREIGN KEY (agent_id) REFERENCES agentfeatures (id)",
        )
        .await;
    }
    master
        .execute("UPDATE agentfeatures SET firstname = 'Alicia'")
        .await;
    let stat_agent = rows(&slave, "stat_agent").await;
    let report = replicate(&master, &slave).await.unwrap();
    assert!(copied(&report).contains(&"agentfeatures"));
    assert_same_rows(&master, &slave, "agentfeatures").await;
    assert_eq!(rows(&slave, "stat_agent").await, stat_agent);
}

/// On the slave, a row trigger that fires even under replica role (ENABLE ALWAYS) makes the
/// COPY of `staticsip` stop at its 20,000th row until the test's advisory lock is released:
/// the run is caught in the middle of a large table, after other tables were truncated and
/// copied.
const TEST_GATE: i64 = 0x7465_7374_6761_7465;

/// A [`pair`] with 40,000 more `staticsip` rows on the master and the gate on the slave, shut:
/// the client returned holds the lock until it commits.
async fn big_master_and_gated_slave() -> (TestDb, TestDb, tokio_postgres::Client) {
    let (master, slave) = pair().await;
    master
        .execute(
            "INSERT INTO staticsip (filename, category, var_name, var_val)
             SELECT 'bulk.conf', 'bulk', 'row', 'row-' || i FROM generate_series(1, 40000) i",
        )
        .await;
    slave.execute(&format!(
            "CREATE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.var_val = 'row-20000' THEN PERFORM pg_advisory_xact_lock({TEST_GATE}); END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER test_gate BEFORE INSERT ON staticsip FOR EACH ROW EXECUTE FUNCTION test_gate();
             ALTER TABLE staticsip ENABLE ALWAYS TRIGGER test_gate;"
        )).await;
    let gate = slave.client().await;
    gate.batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({TEST_GATE})"))
        .await
        .unwrap();
    (master, slave, gate)
}

/// Waits until the replication's slave backend is stuck at the gate; returns its pid.
async fn wait_at_gate(slave: &TestDb) -> i32 {
    let admin = connect(&pg_base()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = admin
            .query_opt(
                "SELECT a.pid, p.tuples_processed FROM pg_stat_activity a
                 JOIN pg_stat_progress_copy p ON p.pid = a.pid
                 WHERE a.datname = $1 AND a.wait_event_type = 'Lock'",
                &[&slave.name],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            let processed: i64 = row.get(1);
            assert!(
                processed >= 19_000,
                "stopped mid-table: {processed} rows in"
            );
            return row.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "the replication never reached the gate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_run_killed_in_the_middle_leaves_the_slave_as_it_was() {
    let (master, slave, gate) = big_master_and_gated_slave().await;
    let before = dump(&slave);

    let root = tempfile::tempdir().unwrap();
    // unshare execs: the child is xivo-ha itself.
    let mut child = Command::new("unshare")
        .arg("-n")
        .arg(xivo_ha_bin())
        .arg("--root")
        .arg(root.path())
        .args(["--db", &master.socket_url(), "db-replication", SLAVE_IP])
        .args(["--target-db", &slave.socket_url()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_at_gate(&slave).await;
    child.kill().unwrap();
    child.wait().unwrap();
    gate.batch_execute("COMMIT").await.unwrap();
    wait_until_no_replication_backend(&slave).await;

    assert_same_dump(&dump(&slave), &before);
    // The master's lock died with the process: the next run goes through.
    slave.execute("DROP TRIGGER test_gate ON staticsip").await;
    let report = replicate(&master, &slave).await.unwrap();
    assert_eq!(report.tables_copied.len(), 17);
    assert_same_rows(&master, &slave, "staticsip").await;
}

#[tokio::test]
async fn a_connection_dropped_in_the_middle_leaves_the_slave_as_it_was_and_says_so() {
    let (master, slave, gate) = big_master_and_gated_slave().await;
    let before = dump(&slave);

    let root = tempfile::tempdir().unwrap();
    let ctx = xivo_ha::context::Context::new(root.path(), master.url(), None);
    let source = target::explicit("master", &master.url()).unwrap();
    let target = target::explicit("slave", &slave.url()).unwrap();
    let run = tokio::spawn(async move {
        replication::run_and_record(&ctx, &source, &target, Options::default()).await
    });
    let pid = wait_at_gate(&slave).await;
    let admin = connect(&pg_base()).await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let error = run.await.unwrap().unwrap_err().to_string();
    gate.batch_execute("COMMIT").await.unwrap();
    assert!(error.contains("staticsip"), "{error}");
    assert!(
        error.contains("the slave keeps its previous configuration"),
        "{error}"
    );
    assert!(!error.contains('\n'));
    wait_until_no_replication_backend(&slave).await;
    assert_same_dump(&dump(&slave), &before);

    let state: Value = serde_json::from_slice(
        &std::fs::read(root.path().join("var/lib/xivo-ha/replication.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["result"], "failed");
    assert!(state["summary"].as_str().unwrap().contains("FAILED"));
}

/// A master that vanishes mid-copy (its host gone: the link cut, then the replicating process
/// killed, so that not even a reset reaches the slave) must not leave the slave's tables locked:
/// the slave's server drops the session, and with it the TRUNCATE's locks, within 30 s, and the
/// slave is exactly as before. The slave's PostgreSQL runs on a test host behind a throttled
/// link, so that the COPY is still streaming when the link goes.
#[tokio::test]
async fn a_master_that_vanishes_mid_copy_leaves_the_slave_unlocked_within_30_s() {
    let master = TestDb::create().await;
    master.execute(
            "INSERT INTO staticsip (filename, category, var_name, var_val)
             SELECT 'bulk.conf', 'bulk', 'row', repeat('x', 200) || i FROM generate_series(1, 20000) i",
        ).await;
    let host = common::testhost::TestHost::create();
    let (cluster, slave) = slave_server_on(&host).await;
    let admin = connect(&cluster.socket_url("postgres")).await;
    let socket_args = cluster.socket_args();
    let mut dump_args: Vec<&str> = socket_args.iter().map(String::as_str).collect();
    dump_args.push("asterisk");
    let before = dump_with(&dump_args);
    // About 4 MB to send at 2 Mbit/s: the copy of staticsip takes some 15 s.
    host.throttle("2mbit");

    let root = tempfile::tempdir().unwrap();
    write_custom_env(root.path(), "XIVO_HA_SLAVE_DB_CONNECT_TIMEOUT_S=5\n");
    let mut replication = Command::new(xivo_ha_bin());
    replication
        .arg("--root")
        .arg(root.path())
        .args([
            "--db",
            &master.url(),
            "db-replication",
            &host.ip.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = replication.spawn().unwrap();

    // The slave's session is streaming staticsip: its tables are truncated and locked.
    wait_for(
        "the replication to copy staticsip",
        Duration::from_secs(60),
        async || {
            assert!(child.try_wait().unwrap().is_none(), "the replication ended");
            let copying: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity a
                     JOIN pg_stat_progress_copy p ON p.pid = a.pid
                     WHERE a.application_name = 'xivo-ha db-replication'
                       AND a.query LIKE 'COPY%staticsip%' AND p.tuples_processed > 0",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            copying > 0
        },
    )
    .await;
    let held: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE a.application_name = 'xivo-ha db-replication' AND l.mode = 'AccessExclusiveLock'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(held > 0, "no exclusive lock held mid-copy");

    // The master's host vanishes: the link first, so that nothing of its end reaches the slave.
    host.unplug();
    child.kill().unwrap();
    child.wait().unwrap();

    // Readable again within 30 s (each try waits at most 500 ms for the locks).
    let reader = connect(&cluster.socket_url("asterisk")).await;
    reader
        .batch_execute("SET lock_timeout = '500ms'")
        .await
        .unwrap();
    wait_for(
        "the slave's tables to be unlocked after the master vanished",
        Duration::from_secs(30),
        async || match reader
            .query_one("SELECT count(*) FROM staticsip", &[])
            .await
        {
            Ok(_) => true,
            Err(e) => {
                assert_eq!(
                    e.code(),
                    Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE),
                    "{e}"
                );
                false
            }
        },
    )
    .await;
    let after = dump_with(&dump_args);
    assert_same_dump(&after, &before);
    drop(reader);
    drop(admin);
    drop(slave);
    drop(cluster);
    drop(host);
}

#[tokio::test]
async fn schema_differences_are_refused_naming_the_first_one() {
    let (master, slave) = pair().await;
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (
            "ALTER TABLE userfeatures ADD COLUMN nickname text",
            "ALTER TABLE userfeatures DROP COLUMN nickname",
            "column `userfeatures.nickname` exists on the slave, not on the master",
        ),
        (
            "UPDATE alembic_version SET version_num = '999999999999'",
            "UPDATE alembic_version SET version_num = '2b85d2e2f2d0'",
            "alembic_version) 2b85d2e2f2d0 on the master, 999999999999 on the slave",
        ),
        (
            "ALTER TABLE linefeatures ALTER COLUMN number TYPE varchar(80)",
            "ALTER TABLE linefeatures ALTER COLUMN number TYPE varchar(40)",
            "`linefeatures.number` is character varying(40) on the master, character varying(80) on the slave",
        ),
        (
            "DROP TABLE queuemember",
            "",
            "table `queuemember` exists on the master, not on the slave",
        ),
    ];
    for (break_it, repair, expected) in cases {
        let s = slave.client().await;
        s.batch_execute(break_it).await.unwrap();
        let before = dump(&slave);
        let output = db_replication(root.path(), &master, &slave.socket_url());
        let line = one_error_line(&output);
        assert!(line.contains(expected), "{line}");
        assert!(line.contains("nothing was changed"), "{line}");
        assert_same_dump(&dump(&slave), &before);
        if !repair.is_empty() {
            s.batch_execute(repair).await.unwrap();
        }
    }
}

/// An enum label the slave lacks would fail the copy mid-way: refused before any change.
#[tokio::test]
async fn an_enum_label_differing_between_the_nodes_is_named_before_any_change() {
    let (master, slave) = pair().await;
    let root = tempfile::tempdir().unwrap();
    master
        .execute(
            "CREATE TYPE presence AS ENUM ('available', 'away', 'dnd');
             ALTER TABLE userfeatures ADD COLUMN presence presence;
             UPDATE userfeatures SET presence = 'dnd'",
        )
        .await;
    slave
        .execute(
            "CREATE TYPE presence AS ENUM ('available', 'away');
             ALTER TABLE userfeatures ADD COLUMN presence presence",
        )
        .await;
    let line = refused_leaving_the_slave_alone(root.path(), &master, &slave);
    assert!(
        line.contains("enum type `presence` has labels 'dnd' only on the master"),
        "{line}"
    );
    assert!(line.contains("nothing was changed"), "{line}");
}

#[tokio::test]
async fn a_slave_database_not_in_utf8_is_refused() {
    let master = TestDb::create().await;
    let slave = TestDb::create_with("ENCODING 'SQL_ASCII' TEMPLATE template0").await;
    let s = slave.client().await;
    s.batch_execute(SCHEMA_SQL).await.unwrap();
    s.batch_execute("INSERT INTO alembic_version VALUES ('2b85d2e2f2d0')")
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let line = refused_leaving_the_slave_alone(root.path(), &master, &slave);
    assert!(line.contains("encoded SQL_ASCII, not UTF8"), "{line}");
    assert!(line.contains("createdb -E UTF8 -T template0"), "{line}");
}

#[tokio::test]
async fn an_unreachable_slave_is_one_clear_line_without_the_password() {
    let master = TestDb::create().await;
    // The slave: a test host where nothing listens on 5432.
    let host = common::testhost::TestHost::create();
    let root = tempfile::tempdir().unwrap();
    let url = format!(
        "host={} port=5432 user=replicator password=s3cret dbname=asterisk",
        host.ip
    );
    let output = xivo_ha(
        root.path(),
        &master.url(),
        &["db-replication", &host.ip.to_string(), "--target-db", &url],
    );
    let line = one_error_line(&output);
    assert!(
        line.contains(&format!(
            "cannot connect to the slave database replicator@{}:5432/asterisk",
            host.ip
        )),
        "{line}"
    );
    assert!(line.contains("pg_hba.conf"), "{line}");
    assert!(!line.contains("s3cret"));
    let state =
        std::fs::read_to_string(root.path().join("var/lib/xivo-ha/replication.json")).unwrap();
    assert!(
        state.contains("\"failed\"") && !state.contains("s3cret"),
        "{state}"
    );
}

#[test]
fn the_default_slave_is_its_address_with_the_configured_credentials() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let master = runtime.block_on(TestDb::create());
    let root = tempfile::tempdir().unwrap();
    write_custom_env(
        root.path(),
        "XIVO_HA_SLAVE_DB_USER=replicator\nXIVO_HA_SLAVE_DB_PASSWORD=s3cret\nXIVO_HA_SLAVE_DB_CONNECT_TIMEOUT_S=3\n",
    );
    // 192.0.2.10 is data only: no route exists inside the namespace.
    let output = xivo_ha_isolated(
        root.path(),
        &master.socket_url(),
        &["db-replication", "192.0.2.10"],
    );
    let line = one_error_line(&output);
    assert!(
        line.contains("cannot connect to the slave database replicator@192.0.2.10:5432/asterisk"),
        "{line}"
    );
    assert!(!line.contains("s3cret"));
    // "Network is unreachable" is about this node's routes, not the slave's PostgreSQL.
    assert!(
        line.contains("no route to that address") && line.contains("this node's routes"),
        "{line}"
    );
    assert!(
        !line.contains("listen_addresses") && !line.contains("pg_hba.conf"),
        "{line}"
    );
}

#[tokio::test]
async fn a_second_caller_is_told_another_replication_is_running() {
    let (master, slave) = pair().await;
    let holder = master.client().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let line = refused_leaving_the_slave_alone(root.path(), &master, &slave);
    assert!(line.contains("another replication is running"), "{line}");
    // The running one's result is what status must show: nothing recorded for this one.
    assert!(
        !root
            .path()
            .join("var/lib/xivo-ha/replication.json")
            .exists()
    );
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .unwrap();
    assert_success(&db_replication(root.path(), &master, &slave.socket_url()));
}

/// The monitor's hourly job replicates to the slave named in ha.conf: here a PostgreSQL of its
/// own on a test host, reached over TCP at that address as a real slave is.
#[tokio::test]
async fn the_hourly_run_replicates_only_on_a_master() {
    let master = TestDb::create().await;
    let host = common::testhost::TestHost::create();
    let (_cluster, slave) = slave_server_on(&host).await;
    master.execute("INSERT INTO userfeatures (uuid, firstname, lastname) VALUES ('u-master-4', 'Dan', 'Master')").await;
    let root = tempfile::tempdir().unwrap();
    let ctx = xivo_ha::context::Context::new(root.path(), master.url(), None);
    write_custom_env(
        root.path(),
        "XIVO_HA_SLAVE_DB_USER=postgres\nXIVO_HA_SLAVE_DB_CONNECT_TIMEOUT_S=5\n",
    );
    let state_file = root.path().join("var/lib/xivo-ha/replication.json");

    assert!(
        replication::run_hourly(&ctx).await.unwrap().is_none(),
        "disabled"
    );
    write_ha_conf(root.path(), "slave", &host.ip.to_string());
    assert!(
        replication::run_hourly(&ctx).await.unwrap().is_none(),
        "slave"
    );
    assert!(!state_file.exists());

    // A master whose ha.conf names a slave `configure` refuses: the error, nothing recorded.
    write_ha_conf(root.path(), "master", "127.0.0.1");
    let error = replication::run_hourly(&ctx).await.unwrap_err().to_string();
    assert!(
        error.contains("ha.conf: 127.0.0.1 is not usable as the slave's address"),
        "{error}"
    );
    assert!(!state_file.exists());

    write_ha_conf(root.path(), "master", &host.ip.to_string());
    let report = replication::run_hourly(&ctx).await.unwrap().unwrap();
    assert_eq!(report.tables_copied.len(), 17);
    assert_eq!(
        rows(&master, "userfeatures").await,
        rows_of(&slave, "userfeatures").await
    );
    let state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(state["result"], "ok");
    assert_eq!(state["rows_copied"], report.rows_copied());
    let again = replication::run_hourly(&ctx).await.unwrap().unwrap();
    assert!(again.tables_copied.is_empty());
}

#[tokio::test]
async fn replicating_a_database_into_itself_is_refused() {
    let master = TestDb::create().await;
    let root = tempfile::tempdir().unwrap();
    let line = refused_leaving_the_slave_alone(root.path(), &master, &master);
    assert!(
        line.contains("the source and the target are the same database"),
        "{line}"
    );
}

/// `db-replication <slave_ip>` refuses a slave `configure` refuses, given on the command line
/// (exit 2, even with `--target-db`) or named in ha.conf (exit 1): one line naming the argument
/// or ha.conf and the fix, the slave untouched, nothing recorded. Each run would otherwise
/// succeed (it does, once fixed). The addresses are data only: the runs are in `unshare -n`,
/// or, for the node's own address, in a test host's namespace (its address is then this node's).
#[tokio::test]
async fn a_slave_that_configure_refuses_is_refused_and_nothing_changes() {
    let (master, slave) = pair().await;
    let host = common::testhost::TestHost::create();
    let own = host.ip.to_string();
    let before = dump(&slave);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let run = |wrapper: &[&str], slave_ip: &str| {
        let mut command = Command::new(wrapper[0]);
        clear_xivo_env(&mut command);
        command
            .args(&wrapper[1..])
            .arg(xivo_ha_bin())
            .arg("--root")
            .arg(r)
            .args(["--db", &master.socket_url(), "db-replication", slave_ip])
            .args(["--target-db", &slave.socket_url()]);
        command.output().unwrap()
    };
    let in_host = ["ip", "netns", "exec", host.netns.as_str()];
    let cases: [(&str, &[&str], &str); 4] = [
        ("127.0.0.1", &["unshare", "-n"], "this node's own address"),
        ("0.0.0.0", &["unshare", "-n"], "not a host address"),
        ("224.0.0.1", &["unshare", "-n"], "not a host address"),
        (&own, &in_host, "this node's own address"),
    ];
    let unchanged = |what: &str| {
        assert!(
            !r.join("var/lib/xivo-ha/replication.json").exists(),
            "{what}: recorded"
        );
    };
    let ha_conf = r.join("etc/xivo/ha.conf");
    std::fs::create_dir_all(ha_conf.parent().unwrap()).unwrap();
    for (peer, wrapper, reason) in cases {
        // On the command line.
        let err = assert_one_line_exit(&run(wrapper, peer), 2, peer);
        assert!(
            err.contains(&format!(
                "<slave_ip>: {peer} is not usable as the slave's address: "
            )) && err.contains(reason)
                && err.contains("xivo-master-slave-db-replication <slave_ip>"),
            "{peer}: {err}"
        );
        unchanged(peer);
        // In ha.conf, the argument fine.
        std::fs::write(
            &ha_conf,
            format!(r#"{{"node_type": "master", "remote_address": "{peer}"}}"#),
        )
        .unwrap();
        // Refused before any run: no `Slave replication failed` line, no alert, one error.
        let output = run(wrapper, SLAVE_IP);
        assert_eq!(output.status.code(), Some(1), "{peer}: {}", stderr(&output));
        let line = stderr(&output);
        assert_eq!(line.lines().count(), 1, "{line}");
        let line = line.trim_end();
        assert!(
            line.contains(&format!(
                "etc/xivo/ha.conf: {peer} is not usable as the slave's address: "
            )) && line.ends_with("`xivo-ha configure master <slave_ip>`"),
            "{peer}: {line}"
        );
        unchanged(peer);
        std::fs::remove_file(&ha_conf).unwrap();
    }
    assert_same_dump(&dump(&slave), &before);

    // Fixed: the same run goes through.
    std::fs::write(
        &ha_conf,
        format!(r#"{{"node_type": "master", "remote_address": "{SLAVE_IP}"}}"#),
    )
    .unwrap();
    assert_success(&run(&["unshare", "-n"], SLAVE_IP));
    assert_same_rows(&master, &slave, "userfeatures").await;
}

// ---- Merge-back of the user statuses, and the slave's other changes reported ---------------

/// The merged values of a report: `(table key, column, value)`.
fn merged(report: &Report) -> Vec<(String, String, Option<String>)> {
    report
        .merge
        .merged_back
        .iter()
        .map(|m| {
            (
                format!("{} {}", m.table, m.key),
                m.column.clone(),
                m.value.clone(),
            )
        })
        .collect()
}

fn entry(row: &str, column: &str, value: &str) -> (String, String, Option<String>) {
    (row.to_owned(), column.to_owned(), Some(value.to_owned()))
}

/// The slave's changes: `(table, rows)`.
fn slave_changes(report: &Report) -> Vec<(&str, u64)> {
    report
        .slave_changes
        .iter()
        .map(|c| (c.table.as_str(), c.rows))
        .collect()
}

/// `SELECT <columns> FROM userfeatures WHERE id = <id>` as one text line.
async fn user(db: &TestDb, id: i32, columns: &str) -> String {
    db.client()
        .await
        .query_one(
            &format!("SELECT ({columns})::text FROM userfeatures WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

/// A master and a slave after a first replication (the slave holds the master's configuration
/// and the base): what a failover then finds.
async fn replicated_pair() -> (TestDb, TestDb) {
    let (master, slave) = pair().await;
    let first = replicate(&master, &slave).await.unwrap();
    assert!(first.merge.merged_back.is_empty());
    assert!(first.slave_changes.is_empty(), "nothing known yet");
    (master, slave)
}

#[tokio::test]
async fn user_statuses_set_on_the_slave_are_merged_into_the_master_and_kept_on_both() {
    let (master, slave) = pair().await;
    // The first replication: no base yet, so nothing is merged, and that is said once.
    let first = replicate(&master, &slave).await.unwrap();
    assert!(first.merge.merged_back.is_empty());
    assert_eq!(first.merge.skipped.len(), 1, "{:?}", first.merge.skipped);
    assert!(
        first.merge.skipped[0].contains("first replication"),
        "{:?}",
        first.merge.skipped
    );

    // While the slave serves: Alice sets DND, Bob forwards his calls to his mobile and his
    // secretary filter on; an administrator adds an extension on the slave. On the master, an
    // administrator renames Chloé (another row, another column).
    slave.execute("UPDATE userfeatures SET enablednd = 1 WHERE id = 1;
         UPDATE userfeatures SET enableunc = 1, destunc = '0612345678' WHERE id = 2;
         UPDATE callfiltermember SET active = 1 WHERE typeval = '2';
         INSERT INTO extensions (context, exten, type, typeval) VALUES ('default', '1004', 'user', '4');",
    )
    .await;
    master
        .execute("UPDATE userfeatures SET lastname = 'Lefebvre' WHERE id = 3")
        .await;

    let root = tempfile::tempdir().unwrap();
    let output = db_replication(root.path(), &master, &slave.socket_url());
    assert_success(&output);
    let out = stdout(&output);
    assert!(
        out.contains("the slave's changes to 3 tables were overwritten: callfiltermember (1 row), extensions (1 row), userfeatures (2 rows) (merged back: 4 user statuses)"),
        "{out}"
    );
    assert!(
        out.contains("merged back: userfeatures id=2 destunc: '0612345678' (was '')"),
        "{out}"
    );
    assert!(
        out.contains("4 user statuses merged back, the slave's changes to 3 tables overwritten"),
        "{out}"
    );

    // On the master, and on the slave too (the copy carried the merged values back).
    for db in [&master, &slave] {
        assert_eq!(user(db, 1, "enablednd, lastname").await, "(1,Martin)");
        assert_eq!(user(db, 2, "enableunc, destunc").await, "(1,0612345678)");
        assert_eq!(user(db, 3, "enablednd, lastname").await, "(0,Lefebvre)");
    }
    for table in ["userfeatures", "callfiltermember", "extensions"] {
        assert_same_rows(&master, &slave, table).await;
    }
    assert!(
        !rows(&slave, "extensions").await.contains("1004"),
        "the slave's other changes give way to the master's"
    );

    let state: Value = serde_json::from_slice(
        &std::fs::read(root.path().join("var/lib/xivo-ha/replication.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["merged_back"].as_array().unwrap().len(), 4);
    assert_eq!(state["merged_back"][0]["column"], "enablednd");
    assert_eq!(state["merged_back"][0]["key"], "id=1");
    assert_eq!(state["merged_back"][3]["table"], "callfiltermember");
    assert_eq!(state["conflicts"], serde_json::json!([]));
    assert_eq!(
        state["slave_changes_overwritten"],
        serde_json::json!([
            {"table": "callfiltermember", "rows": 1},
            {"table": "extensions", "rows": 1},
            {"table": "userfeatures", "rows": 2},
        ])
    );
    let status = xivo_ha(root.path(), "host=/nonexistent", &["status"]);
    assert!(
        stdout(&status).contains("4 user statuses merged back"),
        "{}",
        stdout(&status)
    );

    // The next run: nothing left to merge, nothing changed on the slave.
    let next = replicate(&master, &slave).await.unwrap();
    assert!(next.merge.merged_back.is_empty());
    assert!(next.merge.skipped.is_empty(), "{:?}", next.merge.skipped);
    assert!(next.slave_changes.is_empty());
    assert!(next.tables_copied.is_empty());
}

#[tokio::test]
async fn a_value_changed_on_both_sides_keeps_the_masters_and_is_reported() {
    let (master, slave) = replicated_pair().await;
    slave.execute("UPDATE userfeatures SET enableunc = 1, destunc = '0611111111', enablerna = 1 WHERE id = 1",
    )
    .await;
    master
        .execute("UPDATE userfeatures SET enableunc = 1, destunc = '0622222222' WHERE id = 1")
        .await;
    let report = replicate(&master, &slave).await.unwrap();
    // enableunc: the same on both sides, nothing to do; enablerna: the slave's alone, merged.
    assert_eq!(
        merged(&report),
        [entry("userfeatures id=1", "enablerna", "1")]
    );
    assert_eq!(report.merge.conflicts.len(), 1);
    let conflict = &report.merge.conflicts[0];
    assert_eq!(
        (
            conflict.key.as_str(),
            conflict.column.as_str(),
            conflict.base.as_deref(),
            conflict.master.as_deref(),
            conflict.slave.as_deref()
        ),
        (
            "id=1",
            "destunc",
            Some(""),
            Some("0622222222"),
            Some("0611111111")
        )
    );
    assert!(
        report
            .summary()
            .contains("1 conflict (the master's value kept)"),
        "{}",
        report.summary()
    );
    for db in [&master, &slave] {
        assert_eq!(
            user(db, 1, "enableunc, destunc, enablerna").await,
            "(1,0622222222,1)"
        );
    }
}

#[tokio::test]
async fn a_row_deleted_on_one_side_is_not_merged() {
    let (master, slave) = replicated_pair().await;
    // Chloé is deleted on the master while she sets DND on the slave; Bob's boss filter is
    // deleted on the slave while Alice sets DND there.
    master
        .execute("DELETE FROM user_line WHERE user_id = 3; DELETE FROM userfeatures WHERE id = 3")
        .await;
    slave
        .execute(
            "UPDATE userfeatures SET enablednd = 1 WHERE id IN (1, 3);
         DELETE FROM callfiltermember WHERE id = 1;
         UPDATE callfiltermember SET active = 1 WHERE id = 2",
        )
        .await;
    let report = replicate(&master, &slave).await.unwrap();
    assert_eq!(
        merged(&report),
        [
            entry("userfeatures id=1", "enablednd", "1"),
            entry("callfiltermember id=2", "active", "1"),
        ]
    );
    assert_eq!(
        report.merge.skipped,
        [
            "no merge for 1 row of `userfeatures` changed on the slave but deleted on the master (id=3): the master's version is kept",
            "no merge for 1 row of `callfiltermember` deleted on the slave (id=1): the master's version is kept",
        ]
    );
    assert!(report.merge.conflicts.is_empty());
    // Bob's filter deleted and Alice's updated; Alice's and Chloé's rows updated.
    assert_eq!(
        slave_changes(&report),
        [("callfiltermember", 2), ("userfeatures", 2)]
    );
    for table in ["userfeatures", "callfiltermember"] {
        assert_same_rows(&master, &slave, table).await;
    }
    assert_eq!(
        rows(&slave, "callfiltermember").await.lines().count(),
        2,
        "the member deleted on the slave is back"
    );
}

#[tokio::test]
async fn the_setting_adds_columns_and_a_table_without_primary_key_is_not_merged() {
    let (master, slave) = pair().await;
    for db in [&master, &slave] {
        db.execute(
            "CREATE TABLE pickup_flag (name text NOT NULL, flag integer NOT NULL DEFAULT 0);
             INSERT INTO pickup_flag VALUES ('a', 0)",
        )
        .await;
    }
    let root = tempfile::tempdir().unwrap();
    write_custom_env(
        root.path(),
        "XIVO_HA_MERGE_BACK_EXTRA=queuemember.penalty, pickup_flag.flag\n",
    );
    let run = || db_replication(root.path(), &master, &slave.socket_url());
    assert_success(&run());
    slave
        .execute(
            "UPDATE queuemember SET penalty = 3 WHERE queue_name = 'support';
         UPDATE pickup_flag SET flag = 1",
        )
        .await;
    let output = run();
    assert_success(&output);
    let state: Value = serde_json::from_slice(
        &std::fs::read(root.path().join("var/lib/xivo-ha/replication.json")).unwrap(),
    )
    .unwrap();
    // A key of two columns.
    assert_eq!(
        state["merged_back"],
        serde_json::json!([{"table": "queuemember", "key": "queue_name=support, interface=Agent/8001",
            "column": "penalty", "value": "3", "was": "0"}])
    );
    assert_eq!(
        state["merge_skipped"],
        serde_json::json!(["no merge for `pickup_flag`: it has no primary key"])
    );
    assert_eq!(rows(&master, "pickup_flag").await, "(a,0)");
    assert_eq!(rows(&slave, "pickup_flag").await, "(a,0)");
    assert_same_rows(&master, &slave, "queuemember").await;

    // A column that does not exist: one line naming the setting, nothing changed.
    write_custom_env(root.path(), "XIVO_HA_MERGE_BACK_EXTRA=userfeatures.nope\n");
    slave
        .execute("UPDATE userfeatures SET enablednd = 1 WHERE id = 1")
        .await;
    let before = (dump(&master), dump(&slave));
    let line = one_error_line(&run());
    assert!(
        line.contains("XIVO_HA_MERGE_BACK_EXTRA: `userfeatures.nope` is not a column"),
        "{line}"
    );
    assert_same_dump(&dump(&master), &before.0);
    assert_same_dump(&dump(&slave), &before.1);
    // Bad syntax: refused before any run.
    write_custom_env(root.path(), "XIVO_HA_MERGE_BACK_EXTRA=userfeatures\n");
    let output = run();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim().lines().count(),
        1,
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("XIVO_HA_MERGE_BACK_EXTRA (")
            && stderr(&output).contains("`userfeatures` is not `table.column`"),
        "{}",
        stderr(&output)
    );
    assert_same_dump(&dump(&slave), &before.1);
}

#[tokio::test]
async fn a_failing_merge_back_leaves_master_and_slave_as_they_were() {
    let (master, slave) = replicated_pair().await;
    slave
        .execute(
            "UPDATE userfeatures SET enablednd = 1 WHERE id = 1;
         UPDATE userfeatures SET enableunc = 1, destunc = '0612345678' WHERE id = 2",
        )
        .await;
    let root = tempfile::tempdir().unwrap();

    // A guard fails (the schemas differ): refused before anything is merged.
    slave
        .execute("ALTER TABLE linefeatures ADD COLUMN nickname text")
        .await;
    let (master_before, slave_before) = (dump(&master), dump(&slave));
    let line = one_error_line(&db_replication(root.path(), &master, &slave.socket_url()));
    assert!(line.contains("schemas differ"), "{line}");
    assert_same_dump(&dump(&master), &master_before);
    assert_same_dump(&dump(&slave), &slave_before);
    slave
        .execute("ALTER TABLE linefeatures DROP COLUMN nickname")
        .await;

    // The master refuses the second row's write (a trigger of the master's): the first row's
    // write is undone with it, and the slave is not touched.
    master.execute("CREATE FUNCTION refuse_forward() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.destunc = '0612345678' THEN RAISE EXCEPTION 'forwards to mobiles are refused'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_forward BEFORE UPDATE ON userfeatures FOR EACH ROW EXECUTE FUNCTION refuse_forward();",
    )
    .await;
    let (master_before, slave_before) = (dump(&master), dump(&slave));
    let line = one_error_line(&db_replication(root.path(), &master, &slave.socket_url()));
    assert!(
        line.contains(
            "merging the slave's user statuses of `userfeatures` back failed on the master"
        ),
        "{line}"
    );
    assert!(line.contains("forwards to mobiles are refused"), "{line}");
    assert!(
        line.contains("nothing was changed on the master nor on the slave"),
        "{line}"
    );
    assert_same_dump(&dump(&master), &master_before);
    assert_same_dump(&dump(&slave), &slave_before);
    assert_eq!(user(&master, 1, "enablednd").await, "0");

    // Once the master accepts it, the same changes merge back.
    master
        .execute("DROP TRIGGER refuse_forward ON userfeatures")
        .await;
    let report = replicate(&master, &slave).await.unwrap();
    assert_eq!(report.merge.merged_back.len(), 3);
    assert_eq!(
        user(&master, 2, "enableunc, destunc").await,
        "(1,0612345678)"
    );
}

/// A copy failing after the merge-back committed: the master keeps the merged value, the slave
/// is as it was, the failed run's document lists the merge, and the next run, finding the
/// value on both sides, merges nothing more and reports no conflict.
#[tokio::test]
async fn a_copy_failing_after_the_merge_back_keeps_the_merged_value_on_the_master() {
    let (master, slave) = replicated_pair().await;
    slave
        .execute("UPDATE userfeatures SET enablednd = 1 WHERE id = 3")
        .await;
    slave.execute("CREATE FUNCTION refuse_user() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'the slave refuses users today'; END $$;
         CREATE TRIGGER refuse_user BEFORE INSERT ON userfeatures FOR EACH ROW EXECUTE FUNCTION refuse_user();
         ALTER TABLE userfeatures ENABLE ALWAYS TRIGGER refuse_user;",
    )
    .await;
    let slave_before = dump(&slave);
    let root = tempfile::tempdir().unwrap();
    let output = db_replication(root.path(), &master, &slave.socket_url());
    assert_eq!(output.status.code(), Some(1));
    // What went into the master is logged before the failure.
    let err = stderr(&output);
    assert!(
        err.contains("merge-back: userfeatures id=3 enablednd = '1' (was '0')")
            && err.contains("xivo-ha: error: copying table `userfeatures` failed"),
        "{err}"
    );
    assert_same_dump(&dump(&slave), &slave_before);
    assert_eq!(user(&master, 3, "enablednd").await, "1");
    let state: Value = serde_json::from_slice(
        &std::fs::read(root.path().join("var/lib/xivo-ha/replication.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["ok"], false);
    assert_eq!(state["merged_back"][0]["key"], "id=3");
    assert!(
        state["summary"]
            .as_str()
            .unwrap()
            .contains("1 user status merged back"),
        "{state:#}"
    );

    slave
        .execute("DROP TRIGGER refuse_user ON userfeatures")
        .await;
    let report = replicate(&master, &slave).await.unwrap();
    assert!(report.merge.merged_back.is_empty());
    assert!(report.merge.conflicts.is_empty());
    assert_eq!(user(&slave, 3, "enablednd").await, "1");
    assert_same_rows(&master, &slave, "userfeatures").await;
}
