//! `xivo-ha configure` and `status` against the real PostgreSQL, on temporary node roots.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const PROVD_DEFAULT: &str = r#"{"id": "default", "X_type": "registrar", "deletable": false, "displayname": "local", "parent_ids": [], "raw_config": {"X_key": "xivo"}, "registrar_main": "10.20.0.1", "proxy_main": "10.20.0.1"}"#;

/// A node root with provd's default registrar config, as on a XiVO.
fn node_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let configs = root.path().join("var/lib/xivo-provd/jsondb/configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(configs.join("default"), PROVD_DEFAULT).unwrap();
    root
}

async fn expiry(db: &TestDb) -> Vec<(String, String)> {
    db.client()
        .await
        .query(
            "SELECT var_name, var_val FROM staticsip
             WHERE filename = 'sip.conf' AND category = 'general'
               AND var_name IN ('minexpiry', 'maxexpiry', 'defaultexpiry') ORDER BY var_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn expected(default: &str, max: &str, min: &str) -> Vec<(String, String)> {
    vec![
        ("defaultexpiry".into(), default.into()),
        ("maxexpiry".into(), max.into()),
        ("minexpiry".into(), min.into()),
    ]
}

fn provd(root: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(root.join("var/lib/xivo-provd/jsondb/configs/default")).unwrap(),
    )
    .unwrap()
}

fn status_json(root: &Path, db: &str) -> Value {
    let output = xivo_ha(root, db, &["status", "--json"]);
    assert_success(&output);
    serde_json::from_str(&stdout(&output)).unwrap()
}

#[tokio::test]
async fn master_then_disabled_round_trip() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();

    // 192.0.2.20 is data only: run where no route exists, over the Unix socket.
    let output = xivo_ha_isolated(r, &db.socket_url(), &["configure", "master", "192.0.2.20"]);
    assert_success(&output);
    let said = stdout(&output);
    assert!(said.contains("xivo-service restart"), "{said}");
    // provd's document changed: the devices must learn their backup registrar.
    assert!(said.contains("resynchronise the devices"), "{said}");

    let ha: Value =
        serde_json::from_slice(&std::fs::read(r.join("etc/xivo/ha.conf")).unwrap()).unwrap();
    assert_eq!(
        ha,
        serde_json::json!({"node_type": "master", "remote_address": "192.0.2.20"})
    );
    assert!(r.join("var/lib/xivo/is-primary").exists());
    assert!(!r.join("var/lib/xivo/is-secondary").exists());
    assert_eq!(expiry(&db).await, expected("240", "300", "180"));
    let provd_config = provd(r);
    assert_eq!(provd_config["registrar_backup"], "192.0.2.20");
    assert_eq!(provd_config["proxy_backup"], "192.0.2.20");
    assert_eq!(
        provd_config["registrar_main"], "10.20.0.1",
        "other keys are kept"
    );
    let status = status_json(r, &db.url());
    assert_eq!(status["node_type"], "master");
    assert_eq!(status["remote_address"], "192.0.2.20");

    let output = xivo_ha(r, &db.url(), &["configure", "disabled"]);
    assert_success(&output);
    assert!(stdout(&output).contains("resynchronise the devices"));
    assert_eq!(expiry(&db).await, expected("120", "3600", "60"));
    let provd_config = provd(r);
    assert_eq!(provd_config["registrar_backup"], "");
    assert_eq!(provd_config["proxy_backup"], "");
    assert!(!r.join("var/lib/xivo/is-primary").exists());
    let status = status_json(r, &db.url());
    assert_eq!(status["node_type"], "disabled");
    assert_eq!(status["remote_address"], "");
    let human = stdout(&xivo_ha(r, &db.url(), &["status"]));
    assert!(human.starts_with("HA: disabled"), "{human}");
}

#[tokio::test]
async fn slave_sets_expiry_and_leaves_provisioning_alone() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    let output = xivo_ha_isolated(r, &db.socket_url(), &["configure", "slave", "192.0.2.10"]);
    assert_success(&output);
    let said = stdout(&output);
    assert!(said.contains("xivo-service restart"), "{said}");
    // provd's document is untouched: nothing for the devices to learn.
    assert!(!said.contains("resynchronise"), "{said}");
    assert_eq!(expiry(&db).await, expected("240", "300", "180"));
    assert!(provd(r).get("registrar_backup").is_none());
    assert!(r.join("var/lib/xivo/is-secondary").exists());
    let status = status_json(r, &db.url());
    assert_eq!(status["node_type"], "slave");
    assert_eq!(status["remote_address"], "192.0.2.10");
}

/// Log lines going to a pipe or a file (cron mail, log files) carry no terminal colour codes.
#[tokio::test]
async fn log_lines_on_a_pipe_carry_no_colour_codes() {
    let db = TestDb::create().await;
    let root = node_root();
    // `output()` gives the program a pipe as its stderr.
    let output = xivo_ha_isolated(
        root.path(),
        &db.socket_url(),
        &["configure", "slave", "192.0.2.10"],
    );
    assert_success(&output);
    let log = stderr(&output);
    assert!(
        log.contains("INFO") && log.contains("HA settings changed"),
        "{log}"
    );
    assert!(!output.stderr.contains(&0x1b), "escape codes in {log:?}");
}

#[tokio::test]
async fn configure_twice_changes_nothing_the_second_time() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    assert_success(&xivo_ha_isolated(
        r,
        &db.socket_url(),
        &["configure", "master", "192.0.2.20"],
    ));
    let ha_before = std::fs::metadata(r.join("etc/xivo/ha.conf"))
        .unwrap()
        .modified()
        .unwrap();
    let provd_before = std::fs::metadata(r.join("var/lib/xivo-provd/jsondb/configs/default"))
        .unwrap()
        .modified()
        .unwrap();
    let rows_before: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM staticsip", &[])
        .await
        .unwrap()
        .get(0);

    let output = xivo_ha_isolated(r, &db.socket_url(), &["configure", "master", "192.0.2.20"]);
    assert_success(&output);
    assert!(
        stdout(&output).contains("nothing changed"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        std::fs::metadata(r.join("etc/xivo/ha.conf"))
            .unwrap()
            .modified()
            .unwrap(),
        ha_before
    );
    assert_eq!(
        std::fs::metadata(r.join("var/lib/xivo-provd/jsondb/configs/default"))
            .unwrap()
            .modified()
            .unwrap(),
        provd_before
    );
    let rows_after: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM staticsip", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows_before, rows_after);
}

#[tokio::test]
async fn missing_expiry_rows_are_created() {
    let db = TestDb::create().await;
    db.client()
        .await
        .batch_execute("DELETE FROM staticsip WHERE var_name = 'maxexpiry'")
        .await
        .unwrap();
    let root = node_root();
    assert_success(&xivo_ha_isolated(
        root.path(),
        &db.socket_url(),
        &["configure", "slave", "192.0.2.10"],
    ));
    assert_eq!(expiry(&db).await, expected("240", "300", "180"));
}

#[tokio::test]
async fn bad_addresses_are_refused_with_the_value_named() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    for (address, words) in [
        (
            "192.0.2.300",
            "`192.0.2.300` is not an IPv4 or IPv6 address",
        ),
        ("slave-host", "`slave-host` is not an IPv4 or IPv6 address"),
        ("127.0.0.1", "this node's own address"),
        ("0.0.0.0", "not a host address"),
    ] {
        let output = xivo_ha(r, &db.url(), &["configure", "master", address]);
        assert!(!output.status.success(), "{address} accepted");
        let message = stderr(&output);
        assert!(message.contains(words), "{address}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    }
    let output = xivo_ha(r, &db.url(), &["configure", "master"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("slave's address"),
        "{}",
        stderr(&output)
    );
    let output = xivo_ha(r, &db.url(), &["configure", "primary", "192.0.2.20"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("primary"));
    assert!(!r.join("etc/xivo/ha.conf").exists(), "nothing written");
    assert_eq!(
        expiry(&db).await,
        expected("120", "3600", "60"),
        "database untouched"
    );
}

#[tokio::test]
async fn a_database_failing_mid_way_leaves_everything_as_it_was() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    assert_success(&xivo_ha(r, &db.url(), &["configure", "disabled"]));
    let ha_before = std::fs::read(r.join("etc/xivo/ha.conf")).unwrap();
    let provd_before = std::fs::read(r.join("var/lib/xivo-provd/jsondb/configs/default")).unwrap();

    // The third update of the transaction fails, after two have been applied.
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'simulated failure on %', NEW.var_name; END $$;
             CREATE TRIGGER refuse_default BEFORE UPDATE ON staticsip FOR EACH ROW
             WHEN (NEW.var_name = 'defaultexpiry') EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let output = xivo_ha_isolated(r, &db.socket_url(), &["configure", "master", "192.0.2.20"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("simulated failure"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read(r.join("etc/xivo/ha.conf")).unwrap(),
        ha_before,
        "ha.conf byte-identical"
    );
    assert_eq!(
        std::fs::read(r.join("var/lib/xivo-provd/jsondb/configs/default")).unwrap(),
        provd_before
    );
    assert!(!r.join("var/lib/xivo/is-primary").exists());
    assert_eq!(
        expiry(&db).await,
        expected("120", "3600", "60"),
        "transaction rolled back"
    );
}

#[tokio::test]
async fn wrong_database_and_unreachable_database_are_named() {
    let empty = TestDb::create_empty().await;
    let root = node_root();
    let output = xivo_ha_isolated(
        root.path(),
        &empty.socket_url(),
        &["configure", "slave", "192.0.2.10"],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no `staticsip` table"),
        "{}",
        stderr(&output)
    );

    // Nothing listens on port 1 of the loopback.
    let output = xivo_ha(
        root.path(),
        "host=127.0.0.1 port=1 user=postgres dbname=asterisk",
        &["configure", "disabled"],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(
            "cannot connect to the configuration database (postgres@127.0.0.1:1/asterisk)"
        ),
        "{message}"
    );
    assert!(!root.path().join("etc/xivo/ha.conf").exists());
}

#[tokio::test]
async fn corrupt_ha_conf_is_named_with_its_line() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/xivo")).unwrap();
    std::fs::write(
        r.join("etc/xivo/ha.conf"),
        "{\"node_type\": \"master\",\n \"remote_address\": }\n",
    )
    .unwrap();
    for args in [&["status"][..], &["configure", "disabled"][..]] {
        let output = xivo_ha(r, &db.url(), args);
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("ha.conf:2:"),
            "{}",
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn a_master_needs_provds_default_config() {
    let db = TestDb::create().await;
    let root = tempfile::tempdir().unwrap();
    let output = xivo_ha_isolated(
        root.path(),
        &db.socket_url(),
        &["configure", "master", "192.0.2.20"],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("provd `default` configuration"),
        "{}",
        stderr(&output)
    );
    assert_eq!(expiry(&db).await, expected("120", "3600", "60"));
}

fn provd_path(root: &Path) -> std::path::PathBuf {
    root.join("var/lib/xivo-provd/jsondb/configs/default")
}

/// The temporary files xivo-ha leaves in `dir` (none, when it cleans up).
fn temporaries(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".xivo-ha-"))
        .collect()
}

/// provd runs as its own user: its document is 0644 `nobody:nogroup` on a XiVO.
fn make_provds(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).unwrap();
    (metadata.mode() & 0o7777, metadata.uid(), metadata.gid())
}

#[tokio::test]
async fn a_read_only_etc_leaves_the_database_provd_and_ha_conf_as_they_were() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    assert_success(&xivo_ha(r, &db.url(), &["configure", "disabled"]));
    let ha_before = std::fs::read(r.join("etc/xivo/ha.conf")).unwrap();
    let provd_before = std::fs::read(provd_path(r)).unwrap();

    let output = xivo_ha_read_only(
        r,
        &r.join("etc"),
        &db.socket_url(),
        &["configure", "master", "192.0.2.20"],
    );
    assert!(!output.status.success(), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(
        message.contains("etc/xivo") && message.contains("read-only"),
        "{message}"
    );
    assert_eq!(
        expiry(&db).await,
        expected("120", "3600", "60"),
        "database unchanged"
    );
    assert_eq!(std::fs::read(provd_path(r)).unwrap(), provd_before);
    assert_eq!(
        std::fs::read(r.join("etc/xivo/ha.conf")).unwrap(),
        ha_before
    );
    assert!(!r.join("var/lib/xivo/is-primary").exists());
    for dir in [provd_path(r).parent().unwrap(), &r.join("var/lib/xivo")] {
        if dir.exists() {
            assert_eq!(
                temporaries(dir),
                Vec::<String>::new(),
                "in {}",
                dir.display()
            );
        }
    }
}

#[tokio::test]
async fn a_read_only_sentinel_directory_leaves_everything_as_it_was() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    std::fs::create_dir_all(r.join("var/lib/xivo")).unwrap();
    let provd_before = std::fs::read(provd_path(r)).unwrap();
    let output = xivo_ha_read_only(
        r,
        &r.join("var/lib/xivo"),
        &db.socket_url(),
        &["configure", "master", "192.0.2.20"],
    );
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("var/lib/xivo"),
        "{}",
        stderr(&output)
    );
    assert_eq!(expiry(&db).await, expected("120", "3600", "60"));
    assert_eq!(std::fs::read(provd_path(r)).unwrap(), provd_before);
    assert!(!r.join("etc/xivo/ha.conf").exists());
    assert_eq!(
        temporaries(provd_path(r).parent().unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(temporaries(&r.join("etc/xivo")), Vec::<String>::new());
}

#[tokio::test]
async fn provds_document_keeps_its_mode_and_owner() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    make_provds(&provd_path(r));
    assert_success(&xivo_ha_isolated(
        r,
        &db.socket_url(),
        &["configure", "master", "192.0.2.20"],
    ));
    assert_eq!(provd(r)["registrar_backup"], "192.0.2.20");
    assert_eq!(mode_and_owner(&provd_path(r)), (0o644, 65534, 65534));
    assert_eq!(
        temporaries(provd_path(r).parent().unwrap()),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn status_with_a_corrupt_ha_conf_shows_the_error_and_every_components_state() {
    let db = TestDb::create().await;
    let root = node_root();
    let r = root.path();
    // A replication that failed leaves its state document (nothing listens on port 1).
    let output = xivo_ha(
        r,
        &db.url(),
        &[
            "db-replication",
            "127.0.0.1",
            "--target-db",
            "host=127.0.0.1 port=1 user=postgres dbname=asterisk",
        ],
    );
    assert!(!output.status.success());
    let replication = stdout(&xivo_ha(r, &db.url(), &["status"]))
        .lines()
        .find(|line| line.starts_with("replication: "))
        .expect("status shows the replication")
        .to_owned();
    std::fs::create_dir_all(r.join("etc/xivo")).unwrap();
    std::fs::write(r.join("etc/xivo/ha.conf"), "{\"node_type\": \n").unwrap();

    let output = xivo_ha(r, &db.url(), &["status"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("ha.conf:2:"),
        "{}",
        stderr(&output)
    );
    assert!(
        stdout(&output).lines().any(|line| line == replication),
        "{}",
        stdout(&output)
    );

    let output = xivo_ha(r, &db.url(), &["status", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let status: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(
        status["error"].as_str().unwrap().contains("ha.conf:2:"),
        "{status}"
    );
    assert!(status["components"]["replication"].is_object(), "{status}");
}
