//! DB Replic's origin claim (issue 12, high item 3): two nodes given the same
//! `DB_REPLIC_ORIGIN` (a copied custom.env) must not destroy each other's data. The second
//! node is refused with one line naming the origin and both node identities, exits non-zero
//! and writes nothing in either sink; the first goes on as before. Against the real PostgreSQL
//! and the in-test Elasticsearch server, with both sinks, and with a site where only one of
//! them gets through.

mod common;

use std::time::Duration;

use common::dbreplic::*;
use common::*;
use xivo_ha::dbreplic::DbReplicError;

/// Everything both sinks hold, to compare before and after: every reporting table's rows (a
/// digest and a count), every Elasticsearch index's `_id`s and documents.
async fn sinks(p: &Pipeline) -> String {
    let mut out = String::new();
    let tables = p
        .reporting
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    for row in tables {
        let table: String = row.get(0);
        let digest = p
            .reporting
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') \
                     FROM {table} t"
                ),
                &[],
            )
            .await
            .unwrap();
        let (n, md5): (i64, String) = (digest.get(0), digest.get(1));
        out.push_str(&format!("pg {table}: {n} rows {md5}\n"));
    }
    for index in p.es.indices() {
        let mut ids = p.es.ids(&index);
        ids.sort();
        for id in ids {
            out.push_str(&format!(
                "es {index}/{id}: {:?}\n",
                p.es.source(&index, &id)
            ));
        }
    }
    out
}

/// The node's files DB Replic writes only once it delivered something (the Elasticsearch
/// checkpoints).
fn checkpoint_files(root: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(root.join("var/lib/xivo-ha/dbreplic"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The refusal's one line: the origin, both identities, the fix.
fn assert_refusal(message: &str, first: &str, second: &str) {
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    for part in [
        &format!("origin `{ORIGIN}`"),
        &format!("node {first}"),
        &format!("this is node {second}"),
        "DB_REPLIC_ORIGIN",
        "--take-over-origin",
    ] {
        assert!(message.contains(part), "{part} not in: {message}");
    }
}

/// DB Replic on `node`, left to run until it ends: refused, as `owner`'s origin.
async fn assert_run_refused(node: &OtherNode, owner: &str) {
    let refused = tokio::time::timeout(Duration::from_secs(60), node.run(false))
        .await
        .expect("the node is refused, not left running");
    match refused {
        Err(DbReplicError::OriginClaimed(message)) => {
            assert_refusal(&message, owner, &node.node_id())
        }
        other => panic!("the node was not refused: {other:?}"),
    }
}

/// A's rows and B's differ in number and content, so that anything of B's that got through
/// would show in the sinks.
async fn other_node_with_rows(p: &Pipeline, extra_env: &str) -> OtherNode {
    let b = p.other_node(extra_env).await;
    insert_cel(&b.source, 700).await;
    insert_queue_log(&b.source, 90).await;
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_the_same_origin_is_refused_and_writes_nothing() {
    let p = start_loaded_pipeline(300, 40, "").await;
    p.run_until_idle().await.unwrap();
    p.assert_exactly_once().await;
    let before = sinks(&p).await;
    assert!(
        before.contains("pg dbreplic_origin_claim: 1 rows"),
        "{before}"
    );
    assert!(before.contains("es xivo-ha-dbreplic-claims/origin-claim-xivo-test"));

    // Node B: the same custom.env, its own database; normal mode, so that it would also
    // refresh the configuration tables.
    let b = other_node_with_rows(&p, "IS_HA_SLAVE=false\n").await;
    let output = b.xivo_ha(&["db-replic", "--exit-when-idle"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    // The error line (the others are the log's INFO lines).
    let err = stderr(&output);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_refusal(errors[0], &p.node_id(), &b.node_id());
    assert_ne!(p.node_id(), b.node_id());
    assert_eq!(sinks(&p).await, before, "node B wrote to a sink");
    assert_eq!(checkpoint_files(b.root()), Vec::<String>::new());
    let log = std::fs::read_to_string(b.root().join(LOG_FILE)).unwrap();
    assert!(log.contains("ERROR") && log.contains("refused"), "{log}");

    // doctor says so on node B, and that all is well on node A.
    assert_eq!(
        doctor_origin(&b.xivo_ha(&["doctor", "--json"]))["level"],
        "failed"
    );
    let found = doctor_origin(&b.xivo_ha(&["doctor", "--json"]))["found"].clone();
    assert_refusal(found.as_str().unwrap(), &p.node_id(), &b.node_id());
    p.enable_xc();
    write_custom_env(p.root(), &p.env_text());
    let a = doctor_origin(&xivo_ha(p.root(), &p.source.url(), &["doctor", "--json"]));
    assert_eq!(a["level"], "ok", "{a}");
    assert!(a["found"].as_str().unwrap().contains("this node's"), "{a}");

    // Node A restarting (same identity) keeps working.
    p.insert_cel(25).await;
    p.run_until_idle().await.unwrap();
    p.assert_exactly_once().await;
}

/// doctor's finding on the origin claim.
fn doctor_origin(output: &std::process::Output) -> serde_json::Value {
    let report: serde_json::Value =
        serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)));
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "db-replic-origin")
        .unwrap_or_else(|| panic!("no db-replic-origin in {report:#}"))
        .clone()
}

/// Node A (the pipeline's) delivers 200 CEL and 30 queue_log rows to the one sink a site has
/// (the reporting database, or Elasticsearch unless `into_postgresql`), then stops: gives
/// what the sinks hold.
async fn node_a_delivers(p: &Pipeline, into_postgresql: bool) -> String {
    p.insert_cel(200).await;
    p.insert_queue_log(30).await;
    let a = p.start_db_replic();
    let timeout = Duration::from_secs(30);
    if into_postgresql {
        p.wait_reporting_caught_up("node A into PostgreSQL", timeout)
            .await;
    } else {
        p.wait_es_caught_up("node A into Elasticsearch", timeout)
            .await;
    }
    a.stop().await.unwrap();
    sinks(p).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_only_site_enforces_the_claim() {
    let p = start_pipeline("IS_HA_SLAVE=true\n").await;
    p.es.set_down(true);
    let before = node_a_delivers(&p, true).await;

    let b = other_node_with_rows(&p, "IS_HA_SLAVE=true\n").await;
    // Elasticsearch never answers: the reporting database alone refuses node B.
    assert_run_refused(&b, &p.node_id()).await;
    assert_eq!(sinks(&p).await, before, "node B wrote to a sink");

    // Node A again, Elasticsearch back: everything in both, B's nowhere.
    p.es.set_down(false);
    p.insert_cel(10).await;
    p.run_until_idle().await.unwrap();
    p.assert_exactly_once().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elasticsearch_only_site_enforces_the_claim() {
    let mut p = start_pipeline("IS_HA_SLAVE=true\n").await;
    p.set_reporting_unreachable();
    let before = node_a_delivers(&p, false).await;
    assert!(before.contains("es xivo-ha-dbreplic-claims/origin-claim-xivo-test"));

    let b = other_node_with_rows(&p, "IS_HA_SLAVE=true\n").await;
    assert_run_refused(&b, &p.node_id()).await;
    assert_eq!(sinks(&p).await, before, "node B wrote to a sink");
    assert_eq!(checkpoint_files(b.root()), Vec::<String>::new());

    // Node A restarting keeps working.
    p.insert_cel(10).await;
    let a = p.start_db_replic();
    p.wait_es_caught_up("node A again", Duration::from_secs(30))
        .await;
    a.stop().await.unwrap();
}

/// Each sink claims the origin itself at start, whether or not the run's advance check saw
/// the claim (a sink that did not answer then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_refuses_at_start_on_its_own() {
    use xivo_ha::dbreplic::claim::Claimant;
    use xivo_ha::dbreplic::retry::ErrorKind;
    use xivo_ha::dbreplic::sink::Sink;
    use xivo_ha::dbreplic::source::EventTable;
    use xivo_ha::node_id::NodeId;

    let p = start_pipeline("IS_HA_SLAVE=true\n").await;
    p.run_until_idle().await.unwrap();
    let before = sinks(&p).await;
    let settings = p.settings();
    let stranger = Claimant::new(NodeId::random());
    let mut pg = xivo_ha::dbreplic::pg::PgSink::new(
        settings.reporting.target(),
        settings.origin.clone(),
        stranger.clone(),
        EventTable::Cel,
    );
    let e = pg.start().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::OriginClaimed, "{e}");
    assert_refusal(&e.message, &p.node_id(), stranger.node_id.as_str());
    let service = xivo_ha::dbreplic::es::service::EsService::new(&settings.elasticsearch).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut es = xivo_ha::dbreplic::es::EsSink::new(
        service,
        settings.origin.clone(),
        stranger.clone(),
        EventTable::Cel,
        settings.cel_index.clone(),
        dir.path().to_owned(),
        Duration::from_millis(50),
    );
    let e = es.start().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::OriginClaimed, "{e}");
    assert!(e.message.contains("Elasticsearch"), "{e}");
    assert_eq!(sinks(&p).await, before);
    // The owner's own sinks start.
    let owner = Claimant::new(NodeId::parse(&p.node_id()).unwrap());
    let mut pg = xivo_ha::dbreplic::pg::PgSink::new(
        settings.reporting.target(),
        settings.origin.clone(),
        owner,
        EventTable::Cel,
    );
    pg.start().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_over_origin_gives_the_origin_to_the_node_that_replaces_the_old_one() {
    let p = start_pipeline("IS_HA_SLAVE=true\n").await;
    p.insert_cel(50).await;
    p.run_until_idle().await.unwrap();
    let b = other_node_with_rows(&p, "IS_HA_SLAVE=true\n").await;
    let output = b.xivo_ha(&["db-replic", "--exit-when-idle"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));

    let output = b.xivo_ha(&["db-replic", "--take-over-origin"]);
    assert_success(&output);
    let said = stdout(&output);
    assert!(
        said.contains(&b.node_id())
            && said.contains("reporting database")
            && said.contains("Elasticsearch"),
        "{said}"
    );
    // B delivers now, and A (replaced) is refused.
    let output = b.xivo_ha(&["db-replic", "--exit-when-idle"]);
    assert_success(&output);
    let b_rows = ids(
        &p.reporting,
        &format!("SELECT count(*) FROM cel WHERE origin = '{ORIGIN}'"),
    )
    .await;
    assert_eq!(b_rows, vec![count(&b.source, "cel").await as i64]);
    match p.run_until_idle().await {
        Err(DbReplicError::OriginClaimed(message)) => {
            assert_refusal(&message, &b.node_id(), &p.node_id())
        }
        other => panic!("the replaced node was not refused: {other:?}"),
    }
}
