//! A real SMTP server for the alert tests: Debian's aiosmtpd (`python3-aiosmtpd`) on a free
//! loopback port, storing every message it receives in a maildir, killed by its pid on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Debian's interpreter, which has the python3-aiosmtpd package (not a pyenv one).
const PYTHON: &str = "/usr/bin/python3";

/// One message as received: its headers (with aiosmtpd's `X-RcptTo` and `X-MailFrom`) and
/// body, as text.
#[derive(Clone, Debug)]
pub struct Received {
    pub text: String,
}

impl Received {
    /// The value of header `name` (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let mut lines = self.text.lines().peekable();
        let prefix = format!("{}:", name.to_ascii_lowercase());
        while let Some(line) = lines.next() {
            if line.is_empty() {
                return None;
            }
            if line.to_ascii_lowercase().starts_with(&prefix) {
                let mut value = line[prefix.len()..].trim().to_owned();
                while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                }
                return Some(value);
            }
        }
        None
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The body, decoded from quoted-printable when it is so encoded.
    pub fn body(&self) -> String {
        let raw = self.text.split_once("\n\n").map_or("", |(_, body)| body);
        let qp = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        if !qp {
            return raw.to_owned();
        }
        let joined = raw.replace("=\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && let Some(hex) = joined.get(i + 1..i + 3)
                && let Ok(byte) = u8::from_str_radix(hex, 16)
            {
                out.push(byte);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

pub struct SmtpServer {
    pub port: u16,
    _child: super::KilledOnDrop,
    dir: tempfile::TempDir,
}

/// Starts aiosmtpd on a free loopback port and waits until it accepts connections.
pub fn start_smtp_server() -> SmtpServer {
    let port = super::sshd::free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(PYTHON)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir.path().join("maildir"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aiosmtpd runs (apt-get install python3-aiosmtpd)");
    let server = SmtpServer {
        port,
        _child: super::KilledOnDrop(child),
        dir,
    };
    super::wait_for_blocking("the SMTP server to listen", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    server
}

impl SmtpServer {
    /// `127.0.0.1:PORT`, for `XIVO_HA_ALERT_SMTP`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn new_dir(&self) -> PathBuf {
        self.dir.path().join("maildir/new")
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.new_dir()) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap(), e.path()))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| Received {
                text: std::fs::read_to_string(path).unwrap().replace("\r\n", "\n"),
            })
            .collect()
    }

    /// Waits until `n` messages arrived; returns them.
    pub fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        super::wait_for_blocking(&format!("{n} mails"), timeout, || {
            self.messages().len() >= n
        });
        self.messages()
    }
}
