//! A real nginx (Debian's `nginx`, `.ci/run` installs it) run as a child on a free loopback
//! port with a configuration of the test's own (temp paths, no system file read), killed on
//! drop; and a stand-in xivo-auth for it to ask.
//!
//! The stand-in stands for XiVO's xivo-auth as the dashboard's nginx location uses it: HTTPS
//! on loopback with a self-signed certificate (as XiVO's), `POST /0.1/token` with HTTP Basic
//! credentials and a JSON body naming the backend: 200 and a token when the login is the one
//! administrator it is given and the backend is `xivo_admin` (the web interface's
//! administrators), 401 otherwise. It writes one line per request to its log, for the test to
//! count the checks. It is a Python script run by Debian's interpreter.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::KilledOnDrop;
use super::monitor_process::free_port;

const PYTHON: &str = "/usr/bin/python3";

const XIVO_AUTH: &str = r#"
import base64, json, ssl, sys, uuid
from http.server import HTTPServer, BaseHTTPRequestHandler
cert, key, login, log = sys.argv[1:5]
expected = "Basic " + base64.b64encode(login.encode()).decode()
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            backend = json.loads(body or b"{}").get("backend")
        except ValueError:
            backend = None
        ok = (self.path == "/0.1/token" and backend == "xivo_admin"
              and self.headers.get("Authorization") == expected)
        with open(log, "a") as f:
            f.write("POST %s backend=%s %s\n" % (self.path, backend, "ok" if ok else "refused"))
        if ok:
            status, out = 200, {"data": {"token": str(uuid.uuid4()), "auth_id": "admin"}}
        else:
            status, out = 401, {"reason": ["Authentication Failed"], "status_code": 401}
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready %d" % server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The stand-in xivo-auth, killed on drop.
pub struct XivoAuth {
    _child: KilledOnDrop,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl XivoAuth {
    /// Accepts `user:password` (and nothing else) for the `xivo_admin` backend.
    pub fn start(login: &str) -> XivoAuth {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(made.success(), "openssl req");
        let log = dir.path().join("requests.log");
        let mut child = Command::new(PYTHON)
            .arg("-c")
            .arg(XIVO_AUTH)
            .arg(&cert)
            .arg(&key)
            .arg(login)
            .arg(&log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the stand-in xivo-auth did not start: {line:?}"));
        XivoAuth {
            _child: KilledOnDrop(child),
            port,
            log,
            _dir: dir,
        }
    }

    /// The requests it answered, one line each (`POST /0.1/token backend=xivo_admin ok`).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// nginx, killed on drop.
pub struct Nginx {
    child: Child,
    pub base: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx with `http` at the http level and `server` inside one plain-HTTP server on
    /// loopback. `{dir}` in either is replaced by a directory of its own.
    pub fn start(http: &str, server: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = free_port();
        let config = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
error_log {d}/error.log info;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
{}\n  server {{\n    listen 127.0.0.1:{port};\n    server_name localhost;\n{}\n  }}\n}}\n",
            http.replace("{dir}", &d),
            server.replace("{dir}", &d),
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, &config).unwrap();
        let tested = Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&file)
            .output()
            .expect("nginx runs (apt-get install nginx)");
        assert!(
            tested.status.success(),
            "nginx -t refuses:\n{}\n{config}",
            String::from_utf8_lossy(&tested.stderr)
        );
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        Nginx {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until it accepts connections.
    pub async fn wait_ready(&self) {
        let address = self.base.trim_start_matches("http://").to_owned();
        super::wait_for("nginx to listen", Duration::from_secs(10), async || {
            tokio::net::TcpStream::connect(&address).await.is_ok()
        })
        .await;
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master's SIGKILL leaves its worker: SIGTERM (by pid) lets it stop its workers.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
