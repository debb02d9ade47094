//! A PostgreSQL server of the test's own inside a test host's network namespace: a slave's
//! database server at an address that is not this machine's, which the test can unplug.
//! Debian's binaries (the newest /usr/lib/postgresql/*/bin), run as user postgres, with the data
//! directory and the Unix socket in a temporary directory; the socket reaches the server from
//! this machine whatever happens to the link. Stopped (immediate shutdown) on drop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::testhost::TestHost;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The server's address and port on the test host.
    pub address: Ipv4Addr,
    pub port: u16,
    child: Child,
}

/// The newest PostgreSQL server binaries installed.
fn bin_dir() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .max_by_key(|p| {
            // 9.6 < 15: compare the major version as a number.
            p.parent()
                .and_then(|v| {
                    v.file_name()?
                        .to_str()?
                        .split('.')
                        .next()?
                        .parse::<u32>()
                        .ok()
                })
                .unwrap_or(0)
        })
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// `program args...` as user postgres (setpriv execs, so the child is the program itself).
fn as_postgres(program: PathBuf) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    command
}

fn check(what: &str, output: Output) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh cluster's data directory, `<dir>/data` (owner postgres, trust authentication,
/// UTF8), in a new temporary directory; with the server binaries that made it.
pub fn initdb() -> (PathBuf, tempfile::TempDir) {
    let bin = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    check(
        "initdb",
        as_postgres(bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap(),
    );
    (bin, dir)
}

/// Starts a server listening on `host.ip:5432` (the namespace's own port space), trusting
/// connections from this machine's end of the link and from the Unix socket.
pub fn start_cluster_on(host: &TestHost) -> Cluster {
    let (bin, dir) = initdb();
    let data = dir.path().join("data");
    let hba = data.join("pg_hba.conf");
    let mut rules = std::fs::read_to_string(&hba).unwrap();
    rules.push_str(&format!("host all all {}/32 trust\n", host.gateway));
    std::fs::write(&hba, rules).unwrap();
    let port = 5432;
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = host
        .command("setpriv")
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(dir.path())
        .args(["-p", &port.to_string()])
        .args(["-c", &format!("listen_addresses={}", host.ip)])
        .args(["-c", "fsync=off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("postgres starts");
    let cluster = Cluster {
        dir,
        address: host.ip,
        port,
        child,
    };
    super::wait_for_blocking(
        "the test host's PostgreSQL to accept connections",
        Duration::from_secs(30),
        || {
            Command::new(bin.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(cluster.dir.path())
                .args(["-p", &port.to_string()])
                .status()
                .unwrap()
                .success()
        },
    );
    cluster
}

impl Cluster {
    /// key=value connection string over the Unix socket (the link plays no part).
    pub fn socket_url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.dir.path().display(),
            self.port
        )
    }

    /// `-h <socket dir> -p <port> -U postgres`, for psql or pg_dump.
    pub fn socket_args(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.dir.path().display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the postmaster takes its backends with it.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let _ = self.child.wait();
    }
}
