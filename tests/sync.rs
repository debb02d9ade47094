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
use std::time::Duration;

use common::files::{read, set_mtime, snapshot, write};
use common::smtp::start_smtp_server;
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

/// Makes `path` `seconds` newer than now (a master's copy changed after the slave's).
fn set_mtime_ahead(path: &Path, seconds: u64) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(seconds))
        .unwrap();
}

/// Issue 14 part 4: the copy-back brings home what the slave made or changed since the last
/// copy-back listed its files, not the copies it still holds of what the master deleted or
/// moved since; with no copy-back on record it brings everything (said once), and `--all`
/// does so on request. Newer files here are kept and nothing is deleted, whatever the rule.
#[test]
fn back_brings_home_only_what_the_slave_changed_since_the_last_copy_back() {
    let pair = Pair::with_key();
    let inbox = "var/spool/asterisk/voicemail/default/1000/INBOX";
    let old = "var/spool/asterisk/voicemail/default/1000/Old";
    let file = |dir: &str, name: &str| format!("{dir}/{name}");
    // Left on the slave during an earlier failover, a minute ago.
    for name in ["msg0000.txt", "msg0001.txt"] {
        write(&pair.s(&file(inbox, name)), name);
        set_mtime(&pair.s(&file(inbox, name)), 60);
    }
    let first = pair.run(&["sync", "--back"]);
    assert_success(&first);
    let said = stderr(&first)
        .matches(&format!(
            "copy-back: no earlier copy-back from root@{} on record",
            pair.ip()
        ))
        .count();
    assert_eq!(said, 1, "{}", stderr(&first));
    assert!(
        stdout(&first).contains("considered every file of the slave's"),
        "{}",
        stdout(&first)
    );
    pair.assert_copied(&[&file(inbox, "msg0000.txt"), &file(inbox, "msg0001.txt")]);

    // On the master since: msg0000 deleted, msg0001 heard (Asterisk renames it into Old,
    // keeping its time); a message only here.
    fs::remove_file(pair.m(&file(inbox, "msg0000.txt"))).unwrap();
    fs::create_dir_all(pair.m(old)).unwrap();
    fs::rename(
        pair.m(&file(inbox, "msg0001.txt")),
        pair.m(&file(old, "msg0001.txt")),
    )
    .unwrap();
    write(&pair.m(&file(inbox, "msg0005.txt")), "master only");
    // On the slave since (it served again): a new message, a recording, and a file it changed
    // that the master changed later still.
    write(&pair.s(&file(inbox, "msg0002.txt")), "made since");
    write(
        &pair.s("var/spool/asterisk/monitor/call-2.wav"),
        "recording",
    );
    write(&pair.s(&file(inbox, "msg0003.txt")), "slave's copy");
    write(&pair.m(&file(inbox, "msg0003.txt")), "master's newer copy");
    set_mtime_ahead(&pair.m(&file(inbox, "msg0003.txt")), 60);
    let slave_before = snapshot(pair.slave.path());

    let second = pair.run(&["sync", "--back"]);
    assert_success(&second);
    pair.assert_copied(&[
        &file(inbox, "msg0002.txt"),
        "var/spool/asterisk/monitor/call-2.wav",
    ]);
    assert!(
        !pair.m(&file(inbox, "msg0000.txt")).exists(),
        "a message deleted on the master came back"
    );
    assert!(
        !pair.m(&file(inbox, "msg0001.txt")).exists(),
        "a message moved on the master came back"
    );
    assert_eq!(read(&pair.m(&file(old, "msg0001.txt"))), "msg0001.txt");
    assert_eq!(
        read(&pair.m(&file(inbox, "msg0003.txt"))),
        "master's newer copy"
    );
    assert_eq!(read(&pair.m(&file(inbox, "msg0005.txt"))), "master only");
    assert_eq!(snapshot(pair.slave.path()), slave_before);
    let printed = stdout(&second);
    assert!(
        printed.contains("2 files (19 bytes) brought back")
            && printed.contains("considered what the slave changed after"),
        "{printed}"
    );
    assert!(
        !stderr(&second).contains("no earlier copy-back"),
        "{}",
        stderr(&second)
    );
    let status = stdout(&pair.run(&["status"]));
    assert!(
        status.contains("considered what the slave changed after"),
        "{status}"
    );

    // Nothing new on the slave: nothing to bring back, not even a connection for rsync.
    let third = pair.run(&["sync", "--back"]);
    assert_success(&third);
    assert!(
        stdout(&third).contains("0 files (0 bytes) brought back"),
        "{}",
        stdout(&third)
    );

    // `--all`: today's rule on request, every file not older here.
    let all = pair.run(&["sync", "--back", "--all"]);
    assert_success(&all);
    assert!(
        stderr(&all).contains("asked for with --all"),
        "{}",
        stderr(&all)
    );
    pair.assert_copied(&[&file(inbox, "msg0000.txt"), &file(inbox, "msg0001.txt")]);
    assert_eq!(
        read(&pair.m(&file(inbox, "msg0003.txt"))),
        "master's newer copy"
    );
    assert_eq!(snapshot(pair.slave.path()), slave_before);
}

/// The :00 order, with the voicemail spool also mirrored to the slave (XIVO_HA_SYNC_DIRS
/// listing it: the slave then holds the master's copies): the copy-back, then the sync. A
/// message the master deleted after a sync is on the slave until the next sync; the copy-back
/// that comes first must not bring it back, and must bring home what the slave made before
/// that sync's `--delete-after` removes it there.
#[tokio::test]
async fn the_hourly_copy_back_leaves_alone_what_the_sync_mirrored() {
    let pair = Pair::with_key();
    let env = pair.m("etc/docker/xivo/custom.env");
    let mut text = read(&env);
    text.push_str("XIVO_HA_SYNC_DIRS=/var/spool/asterisk/voicemail\n");
    write(&env, &text);
    let inbox = "var/spool/asterisk/voicemail/default/1000/INBOX";
    let message = format!("{inbox}/msg0000.txt");
    write(&pair.m(&message), "left on the master");
    set_mtime(&pair.m(&message), 60);
    let ctx = xivo_ha::context::Context::new(pair.master.path(), "", None);

    // One :00: the copy-back (the first: every file; none yet), then the sync.
    let report = xivo_ha::sync::copy_back(&ctx).await.unwrap().unwrap();
    assert_eq!(report.files_transferred, 0);
    assert!(report.listed.is_some() && report.since.is_none());
    xivo_ha::sync::run_hourly(&ctx).await.unwrap().unwrap();
    assert_eq!(read(&pair.s(&message)), "left on the master");

    // Deleted on the master; meanwhile the slave made a message of its own.
    fs::remove_file(pair.m(&message)).unwrap();
    let made = format!("{inbox}/msg0001.txt");
    write(&pair.s(&made), "left on the slave");

    // The next :00.
    let report = xivo_ha::sync::copy_back(&ctx).await.unwrap().unwrap();
    assert_eq!(report.transferred, vec![format!("/{made}")]);
    assert!(report.since.is_some());
    assert!(!pair.m(&message).exists(), "the deleted message came back");
    let report = xivo_ha::sync::run_hourly(&ctx).await.unwrap().unwrap();
    assert_eq!(report.deleted, vec![format!("/{message}")]);
    assert!(!pair.s(&message).exists());
    assert_eq!(read(&pair.s(&made)), "left on the slave");
    assert_eq!(read(&pair.m(&made)), "left on the slave");

    // And the one after: nothing comes back.
    let report = xivo_ha::sync::copy_back(&ctx).await.unwrap().unwrap();
    assert_eq!(report.files_transferred, 0, "{report:?}");
    assert!(!pair.m(&message).exists());
}

/// With the spool also mirrored (XIVO_HA_SYNC_DIRS listing it), a copy-back that failed holds
/// the sync to the slave, by hand and from the monitor: its `--delete-after` would delete on the
/// slave the message it made while it served, not yet home. One line says so and how to get out;
/// nothing is changed on the slave. With the default lists a failed copy-back holds nothing; once
/// a copy-back succeeds, the sync runs.
#[tokio::test]
async fn a_failed_copy_back_holds_the_sync_when_the_spool_is_mirrored() {
    let mut pair = Pair::with_key();
    let smtp = start_smtp_server();
    let ctx = xivo_ha::context::Context::new(pair.master.path(), "", None);
    write(&pair.m("etc/xivo/asterisk/a.conf"), "a");
    // The slave unreachable at the copy-back, back for the sync: the default lists do not
    // overlap, nothing held.
    pair.sshd.stop();
    let back = pair.run(&["sync", "--back"]);
    assert_eq!(back.status.code(), Some(1), "{}", stderr(&back));
    pair.sshd.start();
    assert_success(&pair.run(&["sync"]));
    assert_eq!(read(&pair.s("etc/xivo/asterisk/a.conf")), "a");

    let env = pair.m("etc/docker/xivo/custom.env");
    let mut text = read(&env);
    text.push_str("XIVO_HA_SYNC_DIRS=/etc/xivo/asterisk /var/spool/asterisk/voicemail\n");
    text.push_str(&format!(
        "XIVO_HA_ALERT_SMTP={}\nXIVO_HA_ALERT_TO=root@localhost\nXIVO_HA_ALERT_FROM=xivo-ha@xivo1.test\n",
        smtp.address()
    ));
    write(&env, &text);
    let made = "var/spool/asterisk/voicemail/default/1000/INBOX/msg0000.txt";
    write(&pair.s(made), "left on the slave while it served");
    // The master's own spool, which the sync mirrors.
    let own = "var/spool/asterisk/voicemail/default/1001/INBOX/msg0000.txt";
    write(&pair.m(own), "left on the master");
    write(&pair.m("etc/xivo/asterisk/b.conf"), "b");
    pair.sshd.stop();
    let back = pair.run(&["sync", "--back"]);
    assert_eq!(back.status.code(), Some(1), "{}", stderr(&back));
    pair.sshd.start();
    let slave_before = snapshot(pair.slave.path());

    let output = pair.run(&["sync"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{}", stderr(&output));
    let remote = format!("root@{}", pair.ip());
    assert!(
        errors[0].starts_with(&format!(
            "xivo-ha: error: the sync to {remote} is held: the last copy-back failed (listing the files to copy back from {remote} failed: "
        )) && errors[0].contains(
            "XIVO_HA_SYNC_DIRS includes /var/spool/asterisk/voicemail, which the copy-back brings home: its --delete-after would remove on the slave"
        ) && errors[0].ends_with("run `xivo-ha sync --back` until it succeeds, then sync again"),
        "{}",
        errors[0]
    );
    // Mailed as any failure of the sync.
    let mail = smtp.wait_messages(1, Duration::from_secs(30));
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(
        mail[0].subject().contains("File sync to the slave failed")
            && mail[0]
                .body()
                .contains("is held: the last copy-back failed"),
        "{}",
        mail[0].text
    );
    let error = xivo_ha::sync::run_hourly(&ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("the sync to {remote} is held")),
        "{error}"
    );
    assert_eq!(snapshot(pair.slave.path()), slave_before);
    assert!(!pair.m(made).exists());
    let state: serde_json::Value =
        serde_json::from_str(&read(&pair.m("var/lib/xivo-ha/sync.json"))).unwrap();
    assert_eq!(state["ok"], false);
    let status = stdout(&pair.run(&["status"]));
    assert!(
        status.contains(&format!(
            "to {}: failed: the sync to {remote} is held",
            pair.ip()
        )),
        "{status}"
    );

    // The copy-back brings the message home; the sync then runs and the message stays.
    assert_success(&pair.run(&["sync", "--back"]));
    assert_eq!(read(&pair.m(made)), "left on the slave while it served");
    assert_success(&pair.run(&["sync"]));
    assert_eq!(read(&pair.s(made)), "left on the slave while it served");
    assert_eq!(read(&pair.s("etc/xivo/asterisk/b.conf")), "b");
    assert_eq!(read(&pair.s(own)), "left on the master");
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
