//! `xivo-ha configure` and `status` against the real PostgreSQL, on temporary node roots.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

const PROVD_DEFAULT: &str = r#"{"id": "default", "X_type": "registrar", "deletable": false, "displayname": "local", "parent_ids": [], "raw_config": {"X_key": "xivo"}, "registrar_main": "10.20.0.1", "proxy_main": "10.20.0.1"}"#;

/// SIP expiry as XiVO ships it, and as HA wants it (a lost master's phones re-register soon).
const DEFAULT_EXPIRY: [&str; 3] = ["defaultexpiry=120", "maxexpiry=3600", "minexpiry=60"];
const HA_EXPIRY: [&str; 3] = ["defaultexpiry=240", "maxexpiry=300", "minexpiry=180"];

/// A node root with provd's default registrar config, as on a XiVO.
fn node_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let configs = root.path().join("var/lib/xivo-provd/jsondb/configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(configs.join("default"), PROVD_DEFAULT).unwrap();
    root
}

/// A node of these tests: a root from [`node_root`] and its configuration database.
struct Node {
    db: TestDb,
    root: tempfile::TempDir,
}

impl Node {
    /// On a database loaded with the fixture.
    async fn new() -> Node {
        Node::on(TestDb::create().await)
    }

    /// Configured `disabled` (ha.conf written).
    async fn disabled() -> Node {
        let node = Node::new().await;
        assert_success(&node.run(&["configure", "disabled"]));
        node
    }

    fn on(db: TestDb) -> Node {
        Node {
            db,
            root: node_root(),
        }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// `xivo-ha <args>` where no route exists (`unshare -n`), over the database's Unix socket:
    /// the peers' addresses in these tests are data only.
    fn isolated(&self, args: &[&str]) -> Output {
        xivo_ha_isolated(self.path(), &self.db.socket_url(), args)
    }

    /// `xivo-ha <args>` over TCP, for what contacts no peer.
    fn run(&self, args: &[&str]) -> Output {
        xivo_ha(self.path(), &self.db.url(), args)
    }

    /// The same as [`Node::isolated`] with `read_only` (below the root) mounted read-only.
    fn read_only(&self, read_only: &str, args: &[&str]) -> Output {
        let dir = self.path().join(read_only);
        xivo_ha_read_only(self.path(), &dir, &self.db.socket_url(), args)
    }

    /// The SIP expiry rows as `name=value`, by name.
    async fn expiry(&self) -> Vec<String> {
        self.db
            .client()
            .await
            .query(
                "SELECT var_name || '=' || var_val FROM staticsip
                 WHERE filename = 'sip.conf' AND category = 'general'
                   AND var_name IN ('minexpiry', 'maxexpiry', 'defaultexpiry') ORDER BY var_name",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    async fn staticsip_rows(&self) -> i64 {
        self.db.value("SELECT count(*) FROM staticsip").await
    }

    /// What configure writes, to compare before and after: ha.conf and provd's document (None
    /// where there is none).
    fn written(&self) -> [Option<Vec<u8>>; 2] {
        [
            self.path().join("etc/xivo/ha.conf"),
            provd_path(self.path()),
        ]
        .map(|path| std::fs::read(path).ok())
    }

    fn provd(&self) -> Value {
        serde_json::from_slice(&std::fs::read(provd_path(self.path())).unwrap()).unwrap()
    }

    fn status_json(&self) -> Value {
        let output = self.run(&["status", "--json"]);
        assert_success(&output);
        serde_json::from_str(&stdout(&output)).unwrap()
    }
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[tokio::test]
async fn master_then_disabled_round_trip() {
    let node = Node::new().await;
    let r = node.path();

    // provd's document changed: the devices must learn their backup registrar.
    let said = assert_says(
        &node.isolated(&["configure", "master", "192.0.2.20"]),
        "resynchronise the devices",
    );
    assert!(said.contains("xivo-service restart"), "{said}");

    let ha: Value =
        serde_json::from_slice(&std::fs::read(r.join("etc/xivo/ha.conf")).unwrap()).unwrap();
    assert_eq!(
        ha,
        serde_json::json!({"node_type": "master", "remote_address": "192.0.2.20"})
    );
    assert!(r.join("var/lib/xivo/is-primary").exists());
    assert!(!r.join("var/lib/xivo/is-secondary").exists());
    assert_eq!(node.expiry().await, HA_EXPIRY);
    let provd_config = node.provd();
    assert_eq!(provd_config["registrar_backup"], "192.0.2.20");
    assert_eq!(provd_config["proxy_backup"], "192.0.2.20");
    assert_eq!(
        provd_config["registrar_main"], "10.20.0.1",
        "other keys are kept"
    );
    let status = node.status_json();
    assert_eq!(status["node_type"], "master");
    assert_eq!(status["remote_address"], "192.0.2.20");

    assert_says(
        &node.run(&["configure", "disabled"]),
        "resynchronise the devices",
    );
    assert_eq!(node.expiry().await, DEFAULT_EXPIRY);
    let provd_config = node.provd();
    assert_eq!(provd_config["registrar_backup"], "");
    assert_eq!(provd_config["proxy_backup"], "");
    assert!(!r.join("var/lib/xivo/is-primary").exists());
    let status = node.status_json();
    assert_eq!(status["node_type"], "disabled");
    assert_eq!(status["remote_address"], "");
    let human = stdout(&node.run(&["status"]));
    assert!(human.starts_with("HA: disabled"), "{human}");
}

#[tokio::test]
async fn slave_sets_expiry_and_leaves_provisioning_alone() {
    let node = Node::new().await;
    let said = assert_says(
        &node.isolated(&["configure", "slave", "192.0.2.10"]),
        "xivo-service restart",
    );
    // provd's document is untouched: nothing for the devices to learn.
    assert!(!said.contains("resynchronise"), "{said}");
    assert_eq!(node.expiry().await, HA_EXPIRY);
    assert!(node.provd().get("registrar_backup").is_none());
    assert!(node.path().join("var/lib/xivo/is-secondary").exists());
    let status = node.status_json();
    assert_eq!(status["node_type"], "slave");
    assert_eq!(status["remote_address"], "192.0.2.10");
}

/// Log lines going to a pipe or a file (cron mail, log files) carry no terminal colour codes.
#[tokio::test]
async fn log_lines_on_a_pipe_carry_no_colour_codes() {
    let node = Node::new().await;
    // `output()` gives the program a pipe as its stderr.
    let output = node.isolated(&["configure", "slave", "192.0.2.10"]);
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
    let node = Node::new().await;
    let r = node.path();
    let master = ["configure", "master", "192.0.2.20"];
    assert_success(&node.isolated(&master));
    let ha_before = modified(&r.join("etc/xivo/ha.conf"));
    let provd_before = modified(&provd_path(r));
    let rows_before = node.staticsip_rows().await;

    assert_says(&node.isolated(&master), "nothing changed");
    assert_eq!(modified(&r.join("etc/xivo/ha.conf")), ha_before);
    assert_eq!(modified(&provd_path(r)), provd_before);
    assert_eq!(node.staticsip_rows().await, rows_before);
}

#[tokio::test]
async fn missing_expiry_rows_are_created() {
    let node = Node::new().await;
    node.db
        .execute("DELETE FROM staticsip WHERE var_name = 'maxexpiry'")
        .await;
    assert_success(&node.isolated(&["configure", "slave", "192.0.2.10"]));
    assert_eq!(node.expiry().await, HA_EXPIRY);
}

#[tokio::test]
async fn bad_addresses_are_refused_with_the_value_named() {
    let node = Node::new().await;
    for (address, words) in [
        (
            "192.0.2.300",
            "`192.0.2.300` is not an IPv4 or IPv6 address",
        ),
        ("slave-host", "`slave-host` is not an IPv4 or IPv6 address"),
        ("127.0.0.1", "this node's own address"),
        ("0.0.0.0", "not a host address"),
    ] {
        let message = assert_refused(&node.run(&["configure", "master", address]), words);
        assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
    }
    let output = node.run(&["configure", "master"]);
    assert_eq!(output.status.code(), Some(2));
    assert_refused(&output, "slave's address");
    assert_refused(
        &node.run(&["configure", "primary", "192.0.2.20"]),
        "primary",
    );
    assert!(
        !node.path().join("etc/xivo/ha.conf").exists(),
        "nothing written"
    );
    assert_eq!(node.expiry().await, DEFAULT_EXPIRY, "database untouched");
}

#[tokio::test]
async fn a_database_failing_mid_way_leaves_everything_as_it_was() {
    let node = Node::disabled().await;
    let r = node.path();
    let before = node.written();

    // The third update of the transaction fails, after two have been applied.
    node.db
        .execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'simulated failure on %', NEW.var_name; END $$;
             CREATE TRIGGER refuse_default BEFORE UPDATE ON staticsip FOR EACH ROW
             WHEN (NEW.var_name = 'defaultexpiry') EXECUTE FUNCTION refuse();",
        )
        .await;
    assert_refused(
        &node.isolated(&["configure", "master", "192.0.2.20"]),
        "simulated failure",
    );
    assert_eq!(node.written(), before, "byte-identical");
    assert!(!r.join("var/lib/xivo/is-primary").exists());
    assert_eq!(
        node.expiry().await,
        DEFAULT_EXPIRY,
        "transaction rolled back"
    );
}

#[tokio::test]
async fn wrong_database_and_unreachable_database_are_named() {
    let node = Node::on(TestDb::create_empty().await);
    assert_refused(
        &node.isolated(&["configure", "slave", "192.0.2.10"]),
        "no `staticsip` table",
    );

    // Nothing listens on port 1 of the loopback.
    let output = xivo_ha(
        node.path(),
        "host=127.0.0.1 port=1 user=postgres dbname=asterisk",
        &["configure", "disabled"],
    );
    assert_refused(
        &output,
        "cannot connect to the configuration database (postgres@127.0.0.1:1/asterisk)",
    );
    assert!(!node.path().join("etc/xivo/ha.conf").exists());
}

#[tokio::test]
async fn corrupt_ha_conf_is_named_with_its_line() {
    let node = Node::new().await;
    std::fs::create_dir_all(node.path().join("etc/xivo")).unwrap();
    std::fs::write(
        node.path().join("etc/xivo/ha.conf"),
        "{\"node_type\": \"master\",\n \"remote_address\": }\n",
    )
    .unwrap();
    for args in [&["status"][..], &["configure", "disabled"][..]] {
        assert_refused(&node.run(args), "ha.conf:2:");
    }
}

#[tokio::test]
async fn a_master_needs_provds_default_config() {
    let node = Node::new().await;
    std::fs::remove_file(provd_path(node.path())).unwrap();
    assert_refused(
        &node.isolated(&["configure", "master", "192.0.2.20"]),
        "provd `default` configuration",
    );
    assert_eq!(node.expiry().await, DEFAULT_EXPIRY);
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
    let node = Node::disabled().await;
    let r = node.path();
    let before = node.written();
    let message = assert_refused(
        &node.read_only("etc", &["configure", "master", "192.0.2.20"]),
        "read-only",
    );
    assert!(message.contains("etc/xivo"), "{message}");
    assert_eq!(node.expiry().await, DEFAULT_EXPIRY, "database unchanged");
    assert_eq!(node.written(), before);
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
    let node = Node::new().await;
    let r = node.path();
    std::fs::create_dir_all(r.join("var/lib/xivo")).unwrap();
    let before = node.written();
    assert_refused(
        &node.read_only("var/lib/xivo", &["configure", "master", "192.0.2.20"]),
        "var/lib/xivo",
    );
    assert_eq!(node.expiry().await, DEFAULT_EXPIRY);
    assert_eq!(
        node.written(),
        before,
        "no ha.conf, provd's document as it was"
    );
    assert_eq!(
        temporaries(provd_path(r).parent().unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(temporaries(&r.join("etc/xivo")), Vec::<String>::new());
}

#[tokio::test]
async fn provds_document_keeps_its_mode_and_owner() {
    let node = Node::new().await;
    let provd = provd_path(node.path());
    make_provds(&provd);
    assert_success(&node.isolated(&["configure", "master", "192.0.2.20"]));
    assert_eq!(node.provd()["registrar_backup"], "192.0.2.20");
    assert_eq!(mode_and_owner(&provd), (0o644, 65534, 65534));
    assert_eq!(temporaries(provd.parent().unwrap()), Vec::<String>::new());
}

#[tokio::test]
async fn status_with_a_corrupt_ha_conf_shows_the_error_and_every_components_state() {
    let node = Node::new().await;
    let r = node.path();
    // A replication that failed leaves its state document (no slave database there; the
    // slave's address is data only: run in `unshare -n`).
    let output = node.isolated(&[
        "db-replication",
        "198.51.100.20",
        "--target-db",
        "host=/nonexistent user=postgres dbname=asterisk",
    ]);
    assert!(!output.status.success());
    let replication = stdout(&node.run(&["status"]))
        .lines()
        .find(|line| line.starts_with("replication: "))
        .expect("status shows the replication")
        .to_owned();
    std::fs::create_dir_all(r.join("etc/xivo")).unwrap();
    std::fs::write(r.join("etc/xivo/ha.conf"), "{\"node_type\": \n").unwrap();

    let output = node.run(&["status"]);
    assert_eq!(output.status.code(), Some(1));
    assert_refused(&output, "ha.conf:2:");
    assert!(
        stdout(&output).lines().any(|line| line == replication),
        "{}",
        stdout(&output)
    );

    let output = node.run(&["status", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let status: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(
        status["error"].as_str().unwrap().contains("ha.conf:2:"),
        "{status}"
    );
    assert!(status["components"]["replication"].is_object(), "{status}");
}
