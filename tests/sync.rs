//! File sync against a real OpenSSH server and rsync: a "master" tree (`--root`) pushes to a
//! "slave" tree (the remote root) through a private sshd with its own host key and
//! authorized_keys, all under temporary directories; the sshd runs on a test host (a network
//! namespace of its own), whose address is the slave's in the master's ha.conf.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use common::sshd::{Sshd, keygen, start_sshd_on, start_sshd_on_with_password};
use common::testhost::TestHost;
use common::{
    KilledOnDrop, assert_one_line_exit, assert_refused, assert_says, assert_success, stderr,
    stdout, wait_for_blocking, xivo_ha_bin,
};

/// A master and a slave tree, the slave served by its own sshd.
struct Pair {
    master: tempfile::TempDir,
    slave: tempfile::TempDir,
    /// authorized_keys of the slave's sshd.
    authorized_keys: PathBuf,
    sshd: Sshd,
    /// The slave's host: dropped after its sshd.
    host: TestHost,
}

/// The slave's sshd port on its test host: not 22, so that known_hosts says `[address]:port`.
const SSH_PORT: u16 = 2222;

impl Pair {
    /// `node_type` in the master's ha.conf (the slave at its test host's address), custom.env
    /// pointing the sync at the test sshd and the slave tree.
    fn new(node_type: &str) -> Pair {
        Pair::with_sshd(node_type, |host, keys| start_sshd_on(host, SSH_PORT, keys))
    }

    /// As [`Pair::new`], the slave's sshd started by `start` on the test host with its
    /// authorized_keys file.
    fn with_sshd(node_type: &str, start: impl FnOnce(&TestHost, &Path) -> Sshd) -> Pair {
        let master = tempfile::tempdir().unwrap();
        let slave = tempfile::tempdir().unwrap();
        let authorized_keys = slave.path().join("root/.ssh/authorized_keys");
        fs::create_dir_all(authorized_keys.parent().unwrap()).unwrap();
        let host = TestHost::create();
        let sshd = start(&host, &authorized_keys);
        write(
            &master.path().join("etc/xivo/ha.conf"),
            &format!(
                r#"{{"node_type": "{node_type}", "remote_address": "{}"}}"#,
                host.ip
            ),
        );
        write(
            &master.path().join("etc/docker/xivo/custom.env"),
            &format!(
                "XIVO_HA_SSH_PORT={}\nXIVO_HA_SYNC_REMOTE_ROOT={}\nXIVO_HA_SSH_AUTHORIZED_KEYS={}\nXIVO_HA_SSH_CONNECT_TIMEOUT=5\n",
                sshd.port,
                slave.path().display(),
                authorized_keys.display()
            ),
        );
        Pair {
            master,
            slave,
            authorized_keys,
            sshd,
            host,
        }
    }

    /// A master whose sync key the slave already trusts (as after `sync -i`).
    fn with_key() -> Pair {
        let pair = Pair::new("master");
        let key = pair.key();
        fs::create_dir_all(key.parent().unwrap()).unwrap();
        keygen(&key, "XiVO HA");
        fs::copy(pub_of(&key), &pair.authorized_keys).unwrap();
        pair
    }

    /// The slave's address, as in the master's ha.conf.
    fn ip(&self) -> String {
        self.host.ip.to_string()
    }

    fn key(&self) -> PathBuf {
        self.master.path().join("root/.ssh/xivo_id_rsa")
    }

    fn m(&self, path: &str) -> PathBuf {
        self.master.path().join(path)
    }

    fn s(&self, path: &str) -> PathBuf {
        self.slave.path().join(path)
    }

    /// Fails the test unless each of `paths` holds on the slave what it holds on the master.
    fn assert_copied(&self, paths: &[&str]) {
        for path in paths {
            assert_eq!(read(&self.s(path)), read(&self.m(path)), "{path}");
        }
    }

    /// `xivo-ha --root <master> <args>`, no agent, no terminal.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        self.run_under(&[], args, env)
    }

    /// `wrapper... xivo-ha --root <master> <args>`, stdin closed, in a session of its own: no
    /// controlling terminal (even when the tests run on one) unless the wrapper makes one.
    fn run_under(&self, wrapper: &[&str], args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(xivo_ha_bin());
                command
            }
            None => Command::new(xivo_ha_bin()),
        };
        // SAFETY: setsid is async-signal-safe and touches nothing of the parent's.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        for (key, _) in std::env::vars() {
            if key.starts_with("XIVO_HA_") || key == "SSH_AUTH_SOCK" {
                command.env_remove(key);
            }
        }
        command
            .arg("--root")
            .arg(self.master.path())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
            .stdin(Stdio::null());
        command.output().expect("xivo-ha runs")
    }
}

fn pub_of(key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", key.display()))
}

fn write(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` with its contents, to compare whole trees.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

fn set_mtime(path: &Path, seconds_ago: u64) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
        .unwrap();
}

fn error_lines(output: &Output) -> Vec<String> {
    stderr(output)
        .lines()
        .filter(|l| l.starts_with("xivo-ha: error:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn sync_mirrors_deletes_and_leaves_the_rest_alone() {
    let pair = Pair::with_key();
    write(&pair.m("etc/asterisk/extensions_extra.d/a.conf"), "[a]\n");
    write(&pair.m("var/lib/asterisk/moh/default/x.wav"), "RIFF");
    write(&pair.m("var/lib/xivo/sounds/playback/hello.wav"), "hello");
    // On the slave: a stale file in a synced directory, files outside the list, and a copy of a
    // directory that is missing on the master (certificates).
    write(&pair.s("etc/asterisk/extensions_extra.d/old.conf"), "old");
    write(&pair.s("etc/asterisk/sip.conf"), "slave's own");
    write(&pair.s("var/lib/xivo/sounds/recordings/r.wav"), "keep");
    write(&pair.s("var/lib/xivo/certificates/keep.pem"), "pem");

    let output = pair.run(&["sync"]);
    assert_success(&output);
    pair.assert_copied(&[
        "etc/asterisk/extensions_extra.d/a.conf",
        "var/lib/asterisk/moh/default/x.wav",
        "var/lib/xivo/sounds/playback/hello.wav",
    ]);
    assert!(!pair.s("etc/asterisk/extensions_extra.d/old.conf").exists());
    assert_eq!(read(&pair.s("etc/asterisk/sip.conf")), "slave's own");
    assert_eq!(
        read(&pair.s("var/lib/xivo/sounds/recordings/r.wav")),
        "keep"
    );
    assert_eq!(read(&pair.s("var/lib/xivo/certificates/keep.pem")), "pem");
    assert!(
        stderr(&output).contains("var/lib/xivo/certificates is missing on this master: skipped"),
        "{}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("3 files (13 bytes) transferred, 1 deleted"),
        "{}",
        stdout(&output)
    );
    // First contact recorded the slave's host key.
    let known_hosts = read(&pair.m("root/.ssh/known_hosts"));
    assert!(
        known_hosts.starts_with(&format!("[{}]:{} ", pair.ip(), pair.sshd.port)),
        "{known_hosts}"
    );

    // Again through XiVO's name: nothing left to transfer; status shows the last run.
    let links = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(xivo_ha_bin(), links.path().join("xivo-sync")).unwrap();
    let output = Command::new(links.path().join("xivo-sync"))
        .env_remove("SSH_AUTH_SOCK")
        .env("XIVO_HA_ROOT", pair.master.path())
        .output()
        .unwrap();
    assert_says(&output, "0 files (0 bytes) transferred, 0 deleted");
    let status = pair.run(&["status"]);
    assert_success(&status);
    let line = stdout(&status)
        .lines()
        .find(|l| l.starts_with("sync: "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no sync line in:\n{}", stdout(&status)));
    assert!(
        line.contains(&format!("UTC to {}: ok, 0 files (0 bytes)", pair.ip())),
        "{line}"
    );
}

/// An ssh-agent on a socket of its own, killed on drop.
struct Agent {
    _child: KilledOnDrop,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, keys: &[&Path]) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let agent = Agent {
            _child: KilledOnDrop(child),
            socket,
        };
        wait_for_blocking("ssh-agent to start", Duration::from_secs(5), || {
            agent.socket.exists()
        });
        for key in keys {
            assert_success(
                &Command::new("ssh-add")
                    .arg(key)
                    .env("SSH_AUTH_SOCK", &agent.socket)
                    .output()
                    .unwrap(),
            );
        }
        agent
    }
}

#[test]
fn key_set_up_creates_installs_and_refuses_a_second_time() {
    let pair = Pair::new("master");
    // Without an accepted key and without a terminal, nothing is installed and no key is left.
    let output = pair.run(&["sync", "-i"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    assert!(errors[0].contains("Permission denied"), "{}", errors[0]);
    assert!(errors[0].contains("new key was removed"), "{}", errors[0]);
    assert!(!pair.key().exists() && !pub_of(&pair.key()).exists());
    assert_eq!(
        fs::metadata(&pair.authorized_keys)
            .map(|m| m.len())
            .unwrap_or(0),
        0
    );

    // The administrator's own key, trusted by the slave and loaded in an agent.
    let admin = tempfile::tempdir().unwrap();
    let admin_key = admin.path().join("id_admin");
    keygen(&admin_key, "admin");
    let admin_pub = read(&pub_of(&admin_key));
    // No final newline: the installed key must still start on a line of its own.
    fs::write(&pair.authorized_keys, admin_pub.trim_end()).unwrap();
    let agent = Agent::start(admin.path(), &[&admin_key]);

    let output = pair.run_with(&["sync", "-i"], &[("SSH_AUTH_SOCK", &agent.socket)]);
    assert_success(&output);
    let key = pair.key();
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public = read(&pub_of(&key));
    assert!(public.trim_end().ends_with(" XiVO HA"), "{public}");
    let authorized = read(&pair.authorized_keys);
    assert_eq!(
        authorized,
        format!("{}\n{}", admin_pub.trim_end(), public),
        "the admin's key kept, the new one on a line of its own"
    );
    let printed = stdout(&output);
    assert!(
        printed.contains(&format!(
            "ssh -i {} -p {} root@{}",
            key.display(),
            pair.sshd.port,
            pair.ip()
        )),
        "{printed}"
    );

    // The installed key alone is enough for the sync (no agent).
    write(&pair.m("etc/xivo/asterisk/x.conf"), "x");
    assert_success(&pair.run(&["sync"]));
    assert_eq!(read(&pair.s("etc/xivo/asterisk/x.conf")), "x");

    // A second -i refuses and changes nothing.
    let before = fs::read(&key).unwrap();
    let output = pair.run_with(&["sync", "-i"], &[("SSH_AUTH_SOCK", &agent.socket)]);
    assert_eq!(output.status.code(), Some(1));
    assert_refused(&output, "already exists");
    assert_eq!(fs::read(&key).unwrap(), before);
    assert_eq!(read(&pair.authorized_keys), authorized);
}

#[test]
fn key_set_up_under_sshpass_gets_the_password_from_its_terminal() {
    // Set in the slave's sshd only (see start_sshd_on_with_password), never this machine's.
    let password = "xivo-ha test password";
    let pair = Pair::with_sshd("master", |host, keys| {
        start_sshd_on_with_password(host, SSH_PORT, keys, password)
    });
    // As Wazo's acceptance suite and administrators' scripts do: sshpass gives the command a
    // terminal of its own and answers ssh's prompt there; stdin is no terminal at all.
    let output = pair.run_under(&["sshpass", "-p", password], &["sync", "-i"], &[]);
    assert_success(&output);
    assert!(stdout(&output).contains("password"), "{}", stdout(&output));
    let public = read(&pub_of(&pair.key()));
    assert_eq!(read(&pair.authorized_keys), public);

    // The hourly sync then logs in with the installed key alone, no password.
    write(&pair.m("var/lib/xivo/sounds/playback/hello.wav"), "hello");
    assert_success(&pair.run(&["sync"]));
    pair.assert_copied(&["var/lib/xivo/sounds/playback/hello.wav"]);

    // A wrong password: one clear error, and no key left behind to trip the next attempt.
    let pair = Pair::with_sshd("master", |host, keys| {
        start_sshd_on_with_password(host, SSH_PORT, keys, password)
    });
    let output = pair.run_under(&["sshpass", "-p", "wrong"], &["sync", "-i"], &[]);
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(!pair.key().exists() && !pub_of(&pair.key()).exists());
    assert_eq!(fs::read(&pair.authorized_keys).unwrap_or_default(), b"");
}

#[test]
fn a_node_that_is_not_master_does_nothing() {
    let pair = Pair::new("slave");
    let key = pair.key();
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    keygen(&key, "XiVO HA");
    fs::copy(pub_of(&key), &pair.authorized_keys).unwrap();
    write(&pair.m("etc/asterisk/extensions_extra.d/a.conf"), "[a]\n");
    write(&pair.s("etc/asterisk/extensions_extra.d/old.conf"), "old");
    let slave_before = snapshot(pair.slave.path());

    let output = pair.run(&["sync"]);
    assert_says(&output, "not a master: nothing to sync");
    let output = pair.run(&["sync", "--back"]);
    assert_says(&output, "not a master");
    assert_eq!(snapshot(pair.slave.path()), slave_before);
    assert!(!pair.m("var/lib/xivo-ha/sync.json").exists());
    assert!(
        !pair.m("root/.ssh/known_hosts").exists(),
        "the slave was contacted"
    );

    // -i refuses on a slave.
    fs::remove_file(&key).unwrap();
    let output = pair.run(&["sync", "-i"]);
    assert_eq!(output.status.code(), Some(1));
    assert_refused(&output, "not a master");
    assert!(!key.exists());
}

#[test]
fn a_changed_host_key_is_refused() {
    let mut pair = Pair::with_key();
    write(&pair.m("var/lib/asterisk/agi-bin/a.agi"), "one");
    assert_success(&pair.run(&["sync"]));
    let known_hosts = read(&pair.m("root/.ssh/known_hosts"));

    pair.sshd.restart_with_new_host_key();
    write(&pair.m("var/lib/asterisk/agi-bin/a.agi"), "two");
    let output = pair.run(&["sync"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    assert!(
        errors[0].contains("SSH host key is not the one recorded"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains(&format!(
            "ssh-keygen -R '[{}]:{}'",
            pair.ip(),
            pair.sshd.port
        )),
        "{}",
        errors[0]
    );
    assert_eq!(read(&pair.s("var/lib/asterisk/agi-bin/a.agi")), "one");
    assert_eq!(read(&pair.m("root/.ssh/known_hosts")), known_hosts);
    let status = stdout(&pair.run(&["status"]));
    assert!(
        status.contains(&format!(
            "to {ip}: failed: the slave {ip}'s SSH host key",
            ip = pair.ip()
        )),
        "{status}"
    );
}

#[test]
fn back_brings_voicemail_home_without_touching_newer_files() {
    let pair = Pair::with_key();
    let inbox = "var/spool/asterisk/voicemail/default/1000/INBOX";
    // Left on the slave while it stood in for the master.
    write(&pair.s(&format!("{inbox}/msg0000.txt")), "new message");
    write(&pair.s(&format!("{inbox}/msg0000.wav")), "new audio");
    write(
        &pair.s("var/spool/asterisk/monitor/call-1.wav"),
        "recording",
    );
    // Changed on both sides, newer on the master: must stay.
    write(
        &pair.s(&format!("{inbox}/msg0001.txt")),
        "slave's older copy",
    );
    set_mtime(&pair.s(&format!("{inbox}/msg0001.txt")), 3600);
    write(
        &pair.m(&format!("{inbox}/msg0001.txt")),
        "master's newer copy",
    );
    // Older on the master, another message of the same name: replaced, but kept aside.
    write(
        &pair.m(&format!("{inbox}/msg0003.txt")),
        "master's old message",
    );
    set_mtime(&pair.m(&format!("{inbox}/msg0003.txt")), 7200);
    write(&pair.s(&format!("{inbox}/msg0003.txt")), "slave's message");
    // Only on the master: never deleted.
    write(&pair.m(&format!("{inbox}/msg0002.txt")), "master only");
    // Outside the lists: not copied back.
    write(&pair.s("etc/asterisk/sip.conf"), "slave's own");
    let slave_before = snapshot(pair.slave.path());

    let output = pair.run(&["sync", "--back"]);
    assert_success(&output);
    assert_eq!(
        read(&pair.m(&format!("{inbox}/msg0000.txt"))),
        "new message"
    );
    assert_eq!(read(&pair.m(&format!("{inbox}/msg0000.wav"))), "new audio");
    assert_eq!(
        read(&pair.m("var/spool/asterisk/monitor/call-1.wav")),
        "recording"
    );
    assert_eq!(
        read(&pair.m(&format!("{inbox}/msg0001.txt"))),
        "master's newer copy"
    );
    assert_eq!(
        read(&pair.m(&format!("{inbox}/msg0002.txt"))),
        "master only"
    );
    assert!(!pair.m("etc/asterisk/sip.conf").exists());
    assert_eq!(snapshot(pair.slave.path()), slave_before);
    let printed = stdout(&output);
    for file in [
        format!("brought back /{inbox}/msg0000.txt"),
        format!("brought back /{inbox}/msg0000.wav"),
        "brought back /var/spool/asterisk/monitor/call-1.wav".to_owned(),
    ] {
        assert!(printed.contains(&file), "{file} missing from:\n{printed}");
    }
    assert!(!printed.contains("msg0001"), "{printed}");
    assert!(
        printed.contains("4 files (44 bytes) brought back"),
        "{printed}"
    );
    assert_eq!(
        read(&pair.m(&format!("{inbox}/msg0003.txt"))),
        "slave's message"
    );
    let kept: Vec<_> = fs::read_dir(pair.m("var/lib/xivo-ha"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sync-back-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        read(&kept[0].join(format!("{inbox}/msg0003.txt"))),
        "master's old message"
    );
    assert!(
        stderr(&output).contains("msg0003.txt was older here and was replaced"),
        "{}",
        stderr(&output)
    );
    let status = stdout(&pair.run(&["status"]));
    assert!(status.contains("sync-back: "), "{status}");
}

#[test]
fn a_slave_that_is_down_gives_one_clear_error_and_changes_nothing() {
    let mut pair = Pair::with_key();
    write(&pair.m("etc/asterisk/extensions_extra.d/a.conf"), "[a]\n");
    write(&pair.s("etc/asterisk/extensions_extra.d/old.conf"), "old");
    pair.sshd.stop();
    let master_before = snapshot(&pair.m("etc"));
    let slave_before = snapshot(pair.slave.path());

    let output = pair.run(&["sync"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    assert!(
        errors[0].contains(&format!("sync to root@{} failed", pair.ip())),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("Connection refused"), "{}", errors[0]);
    assert!(
        errors[0].contains(&format!("port {}", pair.sshd.port)),
        "{}",
        errors[0]
    );
    assert_eq!(snapshot(&pair.m("etc")), master_before);
    assert_eq!(snapshot(pair.slave.path()), slave_before);
    assert!(!pair.m("root/.ssh/known_hosts").exists());
    let status = stdout(&pair.run(&["status"]));
    assert!(
        status.contains(&format!("failed: sync to root@{} failed", pair.ip())),
        "{status}"
    );

    // The slave back: the next run catches up.
    pair.sshd.start();
    assert_success(&pair.run(&["sync"]));
    assert!(!pair.s("etc/asterisk/extensions_extra.d/old.conf").exists());
}

#[tokio::test]
async fn the_hourly_run_syncs_only_on_a_master_and_never_twice_at_once() {
    let pair = Pair::with_key();
    write(&pair.m("var/lib/xivo/sounds/acd/welcome.wav"), "hi");
    let ctx = xivo_ha::context::Context::new(pair.master.path(), "", None);
    let report = xivo_ha::sync::run_hourly(&ctx)
        .await
        .unwrap()
        .expect("a master syncs");
    assert_eq!(
        report.transferred,
        vec!["/var/lib/xivo/sounds/acd/welcome.wav"]
    );
    assert_eq!(report.files_transferred, 1);
    assert_eq!(read(&pair.s("var/lib/xivo/sounds/acd/welcome.wav")), "hi");
    let state: serde_json::Value =
        serde_json::from_str(&read(&pair.m("var/lib/xivo-ha/sync.json"))).unwrap();
    assert_eq!(state["ok"], true);
    assert_eq!(state["files_transferred"], 1);

    // A run in progress (its lock held) makes the next one step aside.
    let lock_file = fs::File::open(pair.m("var/lib/xivo-ha/sync.lock")).unwrap();
    let held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let error = xivo_ha::sync::run_hourly(&ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("another sync is running"), "{error}");
    drop(held);

    write(
        &pair.m("etc/xivo/ha.conf"),
        &format!(
            r#"{{"node_type": "slave", "remote_address": "{}"}}"#,
            pair.ip()
        ),
    );
    write(&pair.m("var/lib/xivo/sounds/acd/other.wav"), "no");
    assert!(xivo_ha::sync::run_hourly(&ctx).await.unwrap().is_none());
    assert!(!pair.s("var/lib/xivo/sounds/acd/other.wav").exists());

    // A master whose ha.conf names a refused slave: the error, the recorded state untouched.
    write(
        &pair.m("etc/xivo/ha.conf"),
        r#"{"node_type": "master", "remote_address": "127.0.0.1"}"#,
    );
    let state = read(&pair.m("var/lib/xivo-ha/sync.json"));
    let error = xivo_ha::sync::run_hourly(&ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("ha.conf: 127.0.0.1 is not usable as the slave's address"),
        "{error}"
    );
    assert!(!pair.s("var/lib/xivo/sounds/acd/other.wav").exists());
    assert_eq!(read(&pair.m("var/lib/xivo-ha/sync.json")), state);
}

/// A peer `configure` refuses, written in the master's ha.conf by hand: `sync`, `sync --back`
/// and `sync -i` say so in one line naming ha.conf and the fix, and change nothing (no file,
/// no state, no lock, no key, no known_hosts). The addresses are data only: each run is in a
/// network namespace of its own, `unshare -n`, or, for the node's own address, the test host's
/// (where the slave's own address is this node's).
#[test]
fn a_peer_that_configure_refuses_is_refused_and_nothing_changes() {
    let pair = Pair::with_key();
    write(&pair.m("etc/asterisk/extensions_extra.d/a.conf"), "[a]\n");
    write(
        &pair.s("var/spool/asterisk/voicemail/default/1000/INBOX/msg0000.txt"),
        "m",
    );
    let netns = pair.host.netns.clone();
    let own = pair.ip();
    let cases: [(&str, &[&str], &str); 4] = [
        ("127.0.0.1", &["unshare", "-n"], "this node's own address"),
        ("0.0.0.0", &["unshare", "-n"], "not a host address"),
        ("224.0.0.1", &["unshare", "-n"], "not a host address"),
        (
            &own,
            &["ip", "netns", "exec", &netns],
            "this node's own address",
        ),
    ];
    for (peer, wrapper, reason) in cases {
        write(
            &pair.m("etc/xivo/ha.conf"),
            &format!(r#"{{"node_type": "master", "remote_address": "{peer}"}}"#),
        );
        for (args, key) in [
            (&["sync"][..], true),
            (&["sync", "--back"][..], true),
            (&["sync", "-i"][..], false),
        ] {
            if !key {
                let _ = fs::remove_file(pair.key());
                let _ = fs::remove_file(pub_of(&pair.key()));
            }
            let master_before = snapshot(pair.master.path());
            let slave_before = snapshot(pair.slave.path());
            let output = pair.run_under(wrapper, args, &[]);
            let line = assert_one_line_exit(&output, 1, &format!("{peer} {args:?}"));
            let refusal =
                format!("etc/xivo/ha.conf: {peer} is not usable as the slave's address: ");
            assert!(
                line.starts_with("xivo-ha: error: ")
                    && line.contains(&refusal)
                    && line.contains(reason)
                    && line.ends_with("`xivo-ha configure master <slave_ip>`"),
                "{peer} {args:?}: {line}"
            );
            // The alert bookkeeping (var/lib/xivo-ha/alerts.*) may note the failure; nothing else.
            let no_alerts = |files: Vec<(PathBuf, Vec<u8>)>| -> Vec<(PathBuf, Vec<u8>)> {
                files
                    .into_iter()
                    .filter(|(p, _)| {
                        !p.ends_with("var/lib/xivo-ha/alerts.json")
                            && !p.ends_with("var/lib/xivo-ha/alerts.lock")
                    })
                    .collect()
            };
            assert_eq!(
                no_alerts(snapshot(pair.master.path())),
                no_alerts(master_before),
                "{peer} {args:?}"
            );
            assert_eq!(snapshot(pair.slave.path()), slave_before, "{peer} {args:?}");
            assert!(!pair.m("var/lib/xivo-ha/sync.json").exists());
            assert!(!pair.m("root/.ssh/known_hosts").exists());
            assert_eq!(pair.key().exists(), key, "{peer} {args:?}: the key");
        }
        keygen(&pair.key(), "XiVO HA");
        fs::copy(pub_of(&pair.key()), &pair.authorized_keys).unwrap();
    }

    // Fixed: the same tree syncs.
    write(
        &pair.m("etc/xivo/ha.conf"),
        &format!(r#"{{"node_type": "master", "remote_address": "{own}"}}"#),
    );
    assert_success(&pair.run(&["sync"]));
    assert_eq!(
        read(&pair.s("etc/asterisk/extensions_extra.d/a.conf")),
        "[a]\n"
    );
}
