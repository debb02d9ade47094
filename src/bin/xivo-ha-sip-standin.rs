//! A stand-in Asterisk for tests and demos: answers SIP OPTIONS (and any other SIP request)
//! on UDP with `200 OK`, optionally accepts TCP connections on a second port as the PostgreSQL
//! path, and goes SIP-silent or back on SIGUSR1 while the process (and its container) stays up,
//! which is how a test kills "only Asterisk". SIGTERM and SIGINT end it at once (it is PID 1 in
//! its container, where the kernel ignores signals without a handler).
//!
//! Like Asterisk it has a control socket (`/var/run/asterisk/asterisk.ctl` when it runs as
//! PID 1 in its container, or `--ctl PATH`) and a remote
//! console: run as `asterisk -rx "COMMAND"` (a link named `asterisk` to this binary), it sends
//! the command to the running stand-in and prints the answer. Asterisk's commands:
//! `core show channels count` (Asterisk's three lines), `core stop gracefully` (new calls
//! refused, SIP requests answered `503 Service Unavailable` as a shutting-down Asterisk does,
//! exit when the last call ends; the command returns then, as Asterisk's does), `core abort
//! shutdown`. The tests' own: `standin call start` (holds a call open) and `standin call end`.
//!
//! usage: xivo-ha-sip-standin [--sip-port 5060] [--tcp-port 5432] [--silent] [--ctl PATH]
//!        xivo-ha-sip-standin --check [--sip-port 5060]   (health check: one OPTIONS to localhost)
//!        asterisk -rx COMMAND   (or xivo-ha-sip-standin -rx COMMAND; $XIVO_HA_STANDIN_CTL)

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket, UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Asterisk's control socket.
const CTL: &str = "/var/run/asterisk/asterisk.ctl";

struct Options {
    sip_port: u16,
    tcp_port: Option<u16>,
    silent: bool,
    check: bool,
    /// The control socket: by default only as PID 1 (in its container), so that stand-ins run
    /// on a host never touch its /var/run.
    ctl: Option<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        sip_port: 5060,
        tcp_port: None,
        silent: false,
        check: false,
        ctl: (std::process::id() == 1).then(|| CTL.to_owned()),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut port = |name: &str| -> Result<u16, String> {
            let value = args.next().ok_or(format!("{name} needs a port"))?;
            value
                .parse()
                .map_err(|_| format!("{name}: `{value}` is not a port"))
        };
        match arg.as_str() {
            "--sip-port" => options.sip_port = port("--sip-port")?,
            "--tcp-port" => options.tcp_port = Some(port("--tcp-port")?),
            "--silent" => options.silent = true,
            "--check" => options.check = true,
            "--ctl" => options.ctl = Some(args.next().ok_or("--ctl needs a path")?.clone()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

/// The response to a SIP request: status 200 with the request's Via, From, To (tagged),
/// Call-ID and CSeq, as RFC 3261 section 8.2.6 asks.
fn respond(request: &str, status: &str) -> Option<String> {
    let mut lines = request.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let method = parts.next()?;
    if method.is_empty() || parts.next().is_none() || parts.next() != Some("SIP/2.0") {
        return None;
    }
    let mut response = format!("SIP/2.0 {status}\r\n");
    for line in lines.take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                response.push_str(line);
                response.push_str("\r\n");
            }
            "to" | "t" => {
                response.push_str(line);
                if !line.contains(";tag=") {
                    response.push_str(";tag=standin");
                }
                response.push_str("\r\n");
            }
            _ => {}
        }
    }
    response.push_str("Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\nServer: xivo-ha-sip-standin\r\nContent-Length: 0\r\n\r\n");
    Some(response)
}

/// The calls the stand-in holds, and whether it is stopping gracefully.
#[derive(Debug, Default)]
struct Calls {
    active: u64,
    processed: u64,
    stopping: bool,
}

/// `1 active call`, `2 active calls`, `1 call processed`: Asterisk's plural (`s` on the noun).
fn count(n: u64, before: &str, noun: &str, after: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {before}{noun}{s}{after}")
}

impl Calls {
    /// The answer to a console command (`core stop gracefully` only sets the flag: the caller
    /// waits for the end).
    fn command(&mut self, command: &str) -> String {
        match command
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .as_str()
        {
            "core show channels count" => format!(
                "{}\n{}\n{}\n",
                // Each call has two legs (the phone's and the callee's).
                count(self.active * 2, "active ", "channel", ""),
                count(self.active, "active ", "call", ""),
                count(self.processed, "", "call", " processed")
            ),
            "core stop gracefully" => {
                self.stopping = true;
                String::new()
            }
            "core abort shutdown" => {
                self.stopping = false;
                String::new()
            }
            "standin call start" if self.stopping => {
                "refused: shutting down gracefully\n".to_owned()
            }
            "standin call start" => {
                self.active += 1;
                format!("{}\n", count(self.active, "active ", "call", ""))
            }
            "standin call end" => {
                if self.active > 0 {
                    self.active -= 1;
                    self.processed += 1;
                }
                format!("{}\n", count(self.active, "active ", "call", ""))
            }
            other => format!(
                "No such command '{other}' (type 'core show help {other}' for other possible commands)\n"
            ),
        }
    }

    /// Stopping with no call left: time to exit.
    fn done(&self) -> bool {
        self.stopping && self.active == 0
    }
}

/// `asterisk -rx COMMAND`: sends it to the running stand-in, prints the answer.
async fn remote(ctl: &str, command: &str) -> ExitCode {
    let Ok(mut stream) = UnixStream::connect(ctl).await else {
        eprintln!("Unable to connect to remote asterisk (does {ctl} exist?)");
        return ExitCode::FAILURE;
    };
    if stream
        .write_all(format!("{command}\n").as_bytes())
        .await
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    print!("{answer}");
    ExitCode::SUCCESS
}

/// One console connection: a command line, its answer. `core stop gracefully` answers when
/// the stand-in exits or the shutdown is aborted, as Asterisk's console does.
async fn console(stream: UnixStream, calls: Arc<Mutex<Calls>>, changed: watch::Sender<()>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let command = line.trim();
    let answer = calls.lock().expect("calls lock").command(command);
    if command.split_whitespace().collect::<Vec<_>>() == ["core", "stop", "gracefully"] {
        eprintln!("xivo-ha-sip-standin: stopping gracefully");
        let mut watch = changed.subscribe();
        changed.send_replace(());
        while calls.lock().expect("calls lock").stopping {
            if watch.changed().await.is_err() {
                break;
            }
        }
    }
    let _ = write.write_all(answer.as_bytes()).await;
    let _ = write.shutdown().await;
    // After the answer: the console that ended the last call gets it before the exit.
    changed.send_replace(());
}

async fn check(port: u16) -> ExitCode {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
        return ExitCode::FAILURE;
    };
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let local = socket.local_addr().expect("bound");
    let request = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKcheck\r\nMax-Forwards: 70\r\nFrom: <sip:check@{local}>;tag=c\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: check@standin\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    if socket.send_to(request.as_bytes(), target).await.is_err() {
        return ExitCode::FAILURE;
    }
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) if buf[..n].starts_with(b"SIP/2.0 200") => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let called = args.remove(0);
    let as_asterisk = Path::new(&called).file_name() == Some("asterisk".as_ref());
    if as_asterisk || args.first().is_some_and(|a| a.starts_with("-r")) {
        let ctl = std::env::var("XIVO_HA_STANDIN_CTL").unwrap_or_else(|_| CTL.to_owned());
        return match args.as_slice() {
            [rx, command] if rx == "-rx" => remote(&ctl, command).await,
            [r, x, command] if r == "-r" && x == "-x" => remote(&ctl, command).await,
            _ => {
                eprintln!("usage: asterisk -rx COMMAND");
                ExitCode::from(2)
            }
        };
    }
    let options = match parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("xivo-ha-sip-standin: {e}");
            return ExitCode::from(2);
        }
    };
    if options.check {
        return check(options.sip_port).await;
    }
    let answering = Arc::new(AtomicBool::new(!options.silent));
    let udp = match UdpSocket::bind(("0.0.0.0", options.sip_port)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "xivo-ha-sip-standin: cannot bind UDP {}: {e}",
                options.sip_port
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(port) = options.tcp_port {
        let listener = match TcpListener::bind(("0.0.0.0", port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("xivo-ha-sip-standin: cannot bind TCP {port}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Accept and drop: a connection that opens is all the monitor's TCP path asks.
        tokio::spawn(async move {
            loop {
                if let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                }
            }
        });
    }
    let calls = Arc::new(Mutex::new(Calls::default()));
    let (changed, mut watch_calls) = watch::channel(());
    if let Some(path) = &options.ctl {
        if let Some(dir) = Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::remove_file(path);
        let ctl = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("xivo-ha-sip-standin: cannot bind {path}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (calls, changed) = (calls.clone(), changed.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = ctl.accept().await {
                tokio::spawn(console(stream, calls.clone(), changed.clone()));
            }
        });
    }
    let toggler = answering.clone();
    let mut usr1 = signal(SignalKind::user_defined1()).expect("SIGUSR1 handler");
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let now = !toggler.fetch_xor(true, Ordering::SeqCst);
            eprintln!(
                "xivo-ha-sip-standin: SIP {}",
                if now { "answering" } else { "silent" }
            );
        }
    });
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    eprintln!(
        "xivo-ha-sip-standin: SIP on UDP {}{}",
        options.sip_port,
        options
            .tcp_port
            .map(|p| format!(", TCP {p}"))
            .unwrap_or_default()
    );
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            _ = term.recv() => return ExitCode::SUCCESS,
            _ = int.recv() => return ExitCode::SUCCESS,
            _ = watch_calls.changed() => {
                if calls.lock().expect("calls lock").done() {
                    eprintln!("xivo-ha-sip-standin: last call ended, exiting");
                    // The console client that ended it prints its answer first.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return ExitCode::SUCCESS;
                }
            }
            received = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                if !answering.load(Ordering::SeqCst) {
                    continue;
                }
                let status = if calls.lock().expect("calls lock").stopping {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let text = String::from_utf8_lossy(&buf[..n]);
                if let Some(response) = respond(&text, status) {
                    let _ = udp.send_to(response.as_bytes(), from).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_echo_the_transaction_headers() {
        let request = "OPTIONS sip:10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:4000;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:10.0.0.1>\r\nCall-ID: abc@x\r\nCSeq: 3 OPTIONS\r\nMax-Forwards: 70\r\n\r\n";
        let response = respond(request, "200 OK").unwrap();
        assert!(response.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(response.contains("Call-ID: abc@x\r\n"));
        assert!(response.contains("To: <sip:10.0.0.1>;tag=standin\r\n"));
        assert!(response.contains("CSeq: 3 OPTIONS\r\n"));
        assert!(!response.contains("Max-Forwards"));
        assert!(respond("SIP/2.0 200 OK\r\n\r\n", "200 OK").is_none());
        assert!(respond("garbage", "200 OK").is_none());
        let busy = respond(request, "503 Service Unavailable").unwrap();
        assert!(busy.starts_with("SIP/2.0 503 Service Unavailable\r\n"));
    }

    #[test]
    fn channel_counts_are_asterisks_lines() {
        let mut calls = Calls::default();
        assert_eq!(
            calls.command("core show channels count"),
            "0 active channels\n0 active calls\n0 calls processed\n"
        );
        calls.command("standin call start");
        assert_eq!(
            calls.command("core show channels count"),
            "2 active channels\n1 active call\n0 calls processed\n"
        );
        calls.command("standin call end");
        assert!(
            calls
                .command("core show channels count")
                .ends_with("1 call processed\n")
        );
        assert!(
            calls
                .command("core stop now please")
                .starts_with("No such command")
        );
    }
}
