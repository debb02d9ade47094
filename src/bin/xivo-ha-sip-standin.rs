//! A stand-in Asterisk for tests and demos: answers SIP OPTIONS (and any other SIP request)
//! on UDP with `200 OK`, optionally accepts TCP connections on a second port as the PostgreSQL
//! path, and goes SIP-silent or back on SIGUSR1 while the process (and its container) stays up,
//! which is how a test kills "only Asterisk". SIGTERM and SIGINT end it at once (it is PID 1 in
//! its container, where the kernel ignores signals without a handler).
//!
//! usage: xivo-ha-sip-standin [--sip-port 5060] [--tcp-port 5432] [--silent]
//!        xivo-ha-sip-standin --check [--sip-port 5060]   (health check: one OPTIONS to localhost)

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

struct Options {
    sip_port: u16,
    tcp_port: Option<u16>,
    silent: bool,
    check: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        sip_port: 5060,
        tcp_port: None,
        silent: false,
        check: false,
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
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

/// The response to a SIP request: status 200 with the request's Via, From, To (tagged),
/// Call-ID and CSeq, as RFC 3261 section 8.2.6 asks.
fn respond(request: &str) -> Option<String> {
    let mut lines = request.split("\r\n");
    let request_line = lines.next()?;
    let mut parts = request_line.split(' ');
    let method = parts.next()?;
    if method.is_empty() || parts.next().is_none() || parts.next() != Some("SIP/2.0") {
        return None;
    }
    let mut response = String::from("SIP/2.0 200 OK\r\n");
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
    let args: Vec<String> = std::env::args().skip(1).collect();
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
            received = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                if !answering.load(Ordering::SeqCst) {
                    continue;
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                if let Some(response) = respond(&text) {
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
        let response = respond(request).unwrap();
        assert!(response.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(response.contains("Call-ID: abc@x\r\n"));
        assert!(response.contains("To: <sip:10.0.0.1>;tag=standin\r\n"));
        assert!(response.contains("CSeq: 3 OPTIONS\r\n"));
        assert!(!response.contains("Max-Forwards"));
        assert!(respond("SIP/2.0 200 OK\r\n\r\n").is_none());
        assert!(respond("garbage").is_none());
    }
}
