//! A real OpenSSH server for the tests: its own host key, config, authorized_keys file and pid
//! file in a temporary directory; on 127.0.0.1 or on a test host; killed on drop.

use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private sshd, killed on drop.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub address: Ipv4Addr,
    pub port: u16,
    netns: Option<String>,
    /// A shadow file mounted over /etc/shadow for sshd alone (see [`start_sshd_with_password`]).
    shadow: Option<std::path::PathBuf>,
    child: Option<Child>,
}

/// Starts sshd on 127.0.0.1 with a fresh host key, accepting the keys in `authorized_keys`.
pub fn start_sshd(authorized_keys: &Path) -> Sshd {
    start_sshd_at(
        Ipv4Addr::LOCALHOST,
        free_port(),
        None,
        authorized_keys,
        None,
    )
}

/// Starts sshd on 127.0.0.1 that also accepts password logins, root's password being
/// `password`: inside sshd's own mount namespace only, where a shadow file of the test's is
/// bind-mounted over /etc/shadow. This machine's /etc/shadow is neither changed nor read.
pub fn start_sshd_with_password(authorized_keys: &Path, password: &str) -> Sshd {
    start_sshd_at(
        Ipv4Addr::LOCALHOST,
        free_port(),
        None,
        authorized_keys,
        Some(password),
    )
}

/// Starts sshd on a test host (inside its network namespace) at `host.ip:port`.
pub fn start_sshd_on(host: &super::testhost::TestHost, port: u16, authorized_keys: &Path) -> Sshd {
    start_sshd_at(
        host.ip,
        port,
        Some(host.netns.clone()),
        authorized_keys,
        None,
    )
}

/// Starts sshd on a test host at `host.ip:port` that also accepts password logins, root's
/// password being `password` (as [`start_sshd_with_password`]).
pub fn start_sshd_on_with_password(
    host: &super::testhost::TestHost,
    port: u16,
    authorized_keys: &Path,
    password: &str,
) -> Sshd {
    start_sshd_at(
        host.ip,
        port,
        Some(host.netns.clone()),
        authorized_keys,
        Some(password),
    )
}

fn start_sshd_at(
    address: Ipv4Addr,
    port: u16,
    netns: Option<String>,
    authorized_keys: &Path,
    password: Option<&str>,
) -> Sshd {
    // sshd's privilege separation directory must exist.
    fs::create_dir_all("/run/sshd").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shadow = password.map(|password| {
        let output = Command::new("openssl")
            .args(["passwd", "-6", "-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(password.as_bytes())?;
                child.wait_with_output()
            })
            .expect("openssl passwd runs");
        super::assert_success(&output);
        let hash = String::from_utf8(output.stdout).unwrap();
        let shadow = dir.path().join("shadow");
        fs::write(&shadow, format!("root:{}:::::::\n", hash.trim())).unwrap();
        shadow
    });
    let (root_login, password_auth) = match password {
        Some(_) => ("yes", "yes"),
        None => ("prohibit-password", "no"),
    };
    let config = format!(
        "ListenAddress {address}\nPort {port}\nHostKey {host_key}\nAuthorizedKeysFile {keys}\n\
         PermitRootLogin {root_login}\nStrictModes no\nPidFile {pid}\nUsePAM no\n\
         PasswordAuthentication {password_auth}\nKbdInteractiveAuthentication no\n",
        host_key = dir.path().join("host_key").display(),
        keys = authorized_keys.display(),
        pid = dir.path().join("sshd.pid").display(),
    );
    fs::write(dir.path().join("sshd_config"), config).unwrap();
    let mut sshd = Sshd {
        dir,
        address,
        port,
        netns,
        shadow,
        child: None,
    };
    sshd.new_host_key();
    sshd.start();
    sshd
}

impl Sshd {
    pub fn new_host_key(&self) {
        let key = self.dir.path().join("host_key");
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(key.with_extension("pub"));
        keygen(&key, "test host");
    }

    pub fn start(&mut self) {
        let log = fs::File::create(self.dir.path().join("sshd.log")).unwrap();
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(netns) = &self.netns {
            argv.extend(["ip", "netns", "exec", netns].map(Into::into));
        }
        if let Some(shadow) = &self.shadow {
            // A mount namespace of sshd's own (private propagation): the bind mount is seen by
            // sshd alone and goes away with it. unshare and sh exec, so the child is sshd.
            argv.extend(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c"].map(Into::into),
            );
            argv.push("mount --bind \"$0\" /etc/shadow && exec /usr/sbin/sshd \"$@\"".into());
            argv.push(shadow.into());
        } else {
            argv.push("/usr/sbin/sshd".into());
        }
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        let child = command
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((self.address, self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The slave "reinstalled": same address and port, another host key.
    pub fn restart_with_new_host_key(&mut self) {
        self.stop();
        self.new_host_key();
        self.start();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn keygen(path: &Path, comment: &str) {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .unwrap();
    super::assert_success(&output);
}
