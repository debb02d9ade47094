//! The probes of a peer: an ICMP echo (surge-ping), a TCP connect to its PostgreSQL port, and
//! a SIP `OPTIONS` request over UDP to its SIP port. Two ways to run them:
//! - [`Pipeline`], the slave's watch of its master: a task that sends OPTIONS every few tens
//!   of milliseconds, pings and connects less often, never waits for an answer before the next
//!   probe and reports each answer with its arrival time, however late (the verdict decides on
//!   time without an answer: [`super::verdict`]);
//! - [`Prober::round`], one round with a timeout, each path retrying within it (the master's
//!   watch of its slave, `check-master-status`, `doctor`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::settings::MonitorSettings;
use super::verdict::{Observation, Path};

/// SIP OPTIONS transmissions per round (the first and its retransmissions, same transaction).
pub const SIP_ATTEMPTS: u32 = 8;
/// ICMP echo requests per round, staggered.
pub const ICMP_ATTEMPTS: u32 = 3;
/// TCP connection attempts per round, staggered (the kernel's own SYN retry comes after 1 s,
/// too late for a round).
pub const TCP_ATTEMPTS: u32 = 3;

/// What one path saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathReport {
    pub answered: bool,
    /// Time from the first attempt to the answer, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// The answer (`SIP/2.0 200 OK`, `connected`, `refused`) or why there was none.
    pub detail: String,
}

impl PathReport {
    fn answered(started: Instant, detail: impl Into<String>) -> PathReport {
        PathReport {
            answered: true,
            rtt_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
            detail: detail.into(),
        }
    }

    fn silent(detail: impl Into<String>) -> PathReport {
        PathReport {
            answered: false,
            rtt_ms: None,
            detail: detail.into(),
        }
    }
}

/// One round's evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    pub icmp: PathReport,
    pub tcp: PathReport,
    pub sip: PathReport,
}

impl RoundReport {
    pub fn observation(&self) -> Observation {
        Observation {
            icmp: self.icmp.answered,
            tcp: self.tcp.answered,
            sip: self.sip.answered,
        }
    }

    /// One line for logs and the state file.
    pub fn evidence(&self) -> String {
        let path = |name: &str, report: &PathReport| match report.rtt_ms {
            Some(ms) => format!("{name} {} in {ms:.0} ms", report.detail),
            None => format!("{name} {}", report.detail),
        };
        format!(
            "{}; {}; {}",
            path("icmp", &self.icmp),
            path("tcp", &self.tcp),
            path("sip", &self.sip)
        )
    }
}

/// The probes' timeouts and ports.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    pub icmp_timeout: Duration,
    pub tcp_timeout: Duration,
    pub sip_timeout: Duration,
    pub pg_port: u16,
    pub sip_port: u16,
}

impl From<&MonitorSettings> for ProbeSettings {
    fn from(s: &MonitorSettings) -> Self {
        ProbeSettings {
            icmp_timeout: s.icmp_timeout,
            tcp_timeout: s.tcp_timeout,
            sip_timeout: s.sip_timeout,
            pg_port: s.pg_port,
            sip_port: s.sip_port,
        }
    }
}

/// Probes one master. Holds the ICMP socket for the master's address family.
pub struct Prober {
    master: IpAddr,
    settings: ProbeSettings,
    /// `Err` when no ICMP socket could be opened (no CAP_NET_RAW): that path then never answers
    /// and the other two decide, which is logged once.
    icmp: Result<surge_ping::Client, String>,
    cseq: u32,
}

impl Prober {
    /// Needs a tokio runtime (surge-ping runs a receiving task).
    pub fn new(master: IpAddr, settings: ProbeSettings) -> Prober {
        let icmp = icmp_client(master).inspect_err(|reason| {
            tracing::warn!("{reason}: the master is probed by TCP and SIP only");
        });
        Prober {
            master,
            settings,
            icmp,
            cseq: 0,
        }
    }

    pub fn master(&self) -> IpAddr {
        self.master
    }

    /// Runs the three probes at once; returns when all have answered or timed out.
    pub async fn round(&mut self) -> RoundReport {
        self.cseq = self.cseq.wrapping_add(1);
        let sip_target = SocketAddr::new(self.master, self.settings.sip_port);
        let tcp_target = SocketAddr::new(self.master, self.settings.pg_port);
        let (icmp, tcp, sip) = tokio::join!(
            self.icmp_probe(),
            tcp_probe(tcp_target, self.settings.tcp_timeout),
            sip_options(sip_target, self.cseq, self.settings.sip_timeout),
        );
        RoundReport { icmp, tcp, sip }
    }

    async fn icmp_probe(&self) -> PathReport {
        match &self.icmp {
            Ok(client) => icmp_echo(client, self.master, self.settings.icmp_timeout).await,
            Err(reason) => PathReport::silent(format!("not probed: {reason}")),
        }
    }
}

/// How often the [`Pipeline`] probes each path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    pub sip: Duration,
    pub icmp: Duration,
    pub tcp: Duration,
}

/// One answer of the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub path: Path,
    /// When it arrived.
    pub at: Instant,
    /// Since the request it answers was sent.
    pub rtt: Duration,
    /// `SIP/2.0 200 OK`, `echo reply`, `connected`, `refused (host up)`.
    pub detail: String,
}

/// Answers the pipeline may hold while the monitor's loop is busy (about 40 s of answers at
/// the default cadence); beyond, answers are dropped, and the verdict can only err towards
/// "silent", which a stalled loop could not act on anyway.
const ANSWERS_QUEUED: usize = 1024;

/// SIP requests whose send time is remembered, to time their answers (older ones still count
/// as answers, timed from the oldest remembered).
const SENT_KEPT: usize = 64;

/// The running probes of one master: a task, stopped when this is dropped.
pub struct Pipeline {
    master: IpAddr,
    answers: tokio::sync::mpsc::Receiver<Answer>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Probe = std::pin::Pin<Box<dyn Future<Output = Option<Answer>> + Send>>;

impl Pipeline {
    /// Starts probing `master` (needs a tokio runtime).
    pub fn start(master: IpAddr, settings: ProbeSettings, cadence: Cadence) -> Pipeline {
        let (tx, answers) = tokio::sync::mpsc::channel(ANSWERS_QUEUED);
        let icmp = icmp_client(master).inspect_err(|reason| {
            tracing::warn!("{reason}: the master is probed by TCP and SIP only");
        });
        let task = tokio::spawn(run_pipeline(master, settings, cadence, icmp.ok(), tx));
        Pipeline {
            master,
            answers,
            task,
        }
    }

    pub fn master(&self) -> IpAddr {
        self.master
    }

    /// The next answer (pending forever once the task is gone).
    pub async fn next(&mut self) -> Answer {
        match self.answers.recv().await {
            Some(answer) => answer,
            None => std::future::pending().await,
        }
    }
}

/// The SIP side of the pipeline: one UDP socket connected to the master, one Call-ID, a new
/// transaction (branch, CSeq) per request.
struct SipPath {
    socket: UdpSocket,
    base: SipRequest,
    /// `(cseq, sent at)` of the last requests, by `cseq % SENT_KEPT`.
    sent: Vec<(u32, Instant)>,
}

impl SipPath {
    async fn open(target: SocketAddr) -> std::io::Result<SipPath> {
        let bind: SocketAddr = match target {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("valid"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("valid"),
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(target).await?;
        let local = socket.local_addr()?;
        Ok(SipPath {
            socket,
            base: SipRequest::options(target, local, 0),
            sent: vec![(u32::MAX, Instant::now()); SENT_KEPT],
        })
    }

    async fn send(&mut self) {
        let cseq = self.base.cseq.wrapping_add(1);
        self.base.cseq = cseq;
        self.base.branch = format!("z9hG4bK{:016x}", rand::random::<u64>());
        self.sent[cseq as usize % SENT_KEPT] = (cseq, Instant::now());
        // A send error (ICMP unreachable reported on the socket) is silence, as is no answer.
        let _ = self.socket.send(self.base.to_string().as_bytes()).await;
    }

    /// The answer in `datagram`, if it is a SIP response to one of our requests.
    fn answer(&self, datagram: &[u8], at: Instant) -> Option<Answer> {
        let status = parse_response(datagram, &self.base.call_id)?;
        let oldest = self.sent.iter().map(|(_, sent)| *sent).min().unwrap_or(at);
        let sent = response_cseq(datagram)
            .and_then(|cseq| {
                let (kept, sent) = self.sent[cseq as usize % SENT_KEPT];
                (kept == cseq).then_some(sent)
            })
            .unwrap_or(oldest);
        Some(Answer {
            path: Path::Sip,
            at,
            rtt: at.saturating_duration_since(sent),
            detail: status,
        })
    }
}

/// The CSeq number of a SIP message.
fn response_cseq(datagram: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(datagram).ok()?;
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("cseq") {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

async fn run_pipeline(
    master: IpAddr,
    settings: ProbeSettings,
    cadence: Cadence,
    icmp: Option<surge_ping::Client>,
    answers: tokio::sync::mpsc::Sender<Answer>,
) {
    let sip_target = SocketAddr::new(master, settings.sip_port);
    let tcp_target = SocketAddr::new(master, settings.pg_port);
    let every = |period: Duration| {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    };
    let (mut sip_tick, mut icmp_tick, mut tcp_tick) =
        (every(cadence.sip), every(cadence.icmp), every(cadence.tcp));
    let mut sip: Option<SipPath> = None;
    let mut sip_error_logged = false;
    let mut in_flight: FuturesUnordered<Probe> = FuturesUnordered::new();
    let mut buf = vec![0u8; 4096];
    let mut seq: u16 = 0;
    loop {
        let answer = tokio::select! {
            _ = sip_tick.tick() => {
                if sip.is_none() {
                    match SipPath::open(sip_target).await {
                        Ok(path) => sip = Some(path),
                        Err(e) if !sip_error_logged => {
                            tracing::warn!("SIP probe of {sip_target}: {e}; retrying");
                            sip_error_logged = true;
                        }
                        Err(_) => {}
                    }
                }
                if let Some(path) = &mut sip {
                    path.send().await;
                }
                None
            }
            received = async { sip.as_ref().expect("guarded").socket.recv(&mut buf).await }, if sip.is_some() => {
                match received {
                    Ok(n) => sip.as_ref().and_then(|path| path.answer(&buf[..n], Instant::now())),
                    // ICMP port unreachable on the connected socket: silence.
                    Err(_) => None,
                }
            }
            _ = icmp_tick.tick(), if icmp.is_some() => {
                let client = icmp.clone().expect("guarded");
                seq = seq.wrapping_add(1);
                let timeout = settings.icmp_timeout;
                let sequence = seq;
                in_flight.push(Box::pin(async move {
                    let sent = Instant::now();
                    let mut pinger = client.pinger(master, surge_ping::PingIdentifier(rand::random())).await;
                    pinger.timeout(timeout);
                    pinger
                        .ping(surge_ping::PingSequence(sequence), &[0x58; 16])
                        .await
                        .ok()
                        .map(|_| Answer { path: Path::Icmp, at: Instant::now(), rtt: sent.elapsed(), detail: "echo reply".into() })
                }));
                None
            }
            _ = tcp_tick.tick() => {
                let timeout = settings.tcp_timeout;
                in_flight.push(Box::pin(async move {
                    let sent = Instant::now();
                    let detail = match tokio::time::timeout(timeout, TcpStream::connect(tcp_target)).await {
                        Ok(Ok(_)) => "connected",
                        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused (host up)",
                        _ => return None,
                    };
                    Some(Answer { path: Path::Tcp, at: Instant::now(), rtt: sent.elapsed(), detail: detail.into() })
                }));
                None
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => done,
        };
        if let Some(answer) = answer
            && let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) = answers.try_send(answer)
        {
            return;
        }
        if answers.is_closed() {
            return;
        }
    }
}

/// What the pipeline's answers showed, path by path, for the state document, the log lines and
/// the timeline: the last answer of each path. A path is answering while its last answer is
/// fresher than twice its cadence (and than the window asked for): TCP, probed every second,
/// is not silent in the rounds between two of its probes.
#[derive(Clone, Debug)]
pub struct Seen {
    cadence: Cadence,
    last: [Option<Answer>; 3],
}

fn index(path: Path) -> usize {
    match path {
        Path::Icmp => 0,
        Path::Tcp => 1,
        Path::Sip => 2,
    }
}

impl Seen {
    pub fn new(cadence: Cadence) -> Seen {
        Seen {
            cadence,
            last: [None, None, None],
        }
    }

    pub fn note(&mut self, answer: Answer) {
        let slot = &mut self.last[index(answer.path)];
        if slot.as_ref().is_none_or(|last| last.at <= answer.at) {
            *slot = Some(answer);
        }
    }

    fn fresh_within(&self, path: Path, window: Duration) -> Duration {
        let cadence = match path {
            Path::Icmp => self.cadence.icmp,
            Path::Tcp => self.cadence.tcp,
            Path::Sip => self.cadence.sip,
        };
        window.max(2 * cadence)
    }

    /// The evidence at `now`, each path judged over at least `window`.
    pub fn report(&self, now: Instant, window: Duration) -> RoundReport {
        let path = |path: Path| match &self.last[index(path)] {
            Some(answer)
                if now.saturating_duration_since(answer.at) < self.fresh_within(path, window) =>
            {
                PathReport {
                    answered: true,
                    rtt_ms: Some(answer.rtt.as_secs_f64() * 1000.0),
                    detail: answer.detail.clone(),
                }
            }
            Some(answer) => PathReport::silent(format!(
                "no answer for {} ms",
                now.saturating_duration_since(answer.at).as_millis()
            )),
            None => PathReport::silent("no answer yet"),
        };
        RoundReport {
            icmp: path(Path::Icmp),
            tcp: path(Path::Tcp),
            sip: path(Path::Sip),
        }
    }
}

/// An ICMP client for `target`'s address family; the error says how to get one.
pub fn icmp_client(target: IpAddr) -> Result<surge_ping::Client, String> {
    let kind = match target {
        IpAddr::V4(_) => surge_ping::ICMP::V4,
        IpAddr::V6(_) => surge_ping::ICMP::V6,
    };
    let config = surge_ping::Config::builder().kind(kind).build();
    surge_ping::Client::new(&config)
        .map_err(|e| format!("cannot open an ICMP socket ({e}); give xivo-ha CAP_NET_RAW"))
}

/// ICMP echo requests to `target`, staggered over `timeout`: answered at the first reply.
pub async fn icmp_echo(
    client: &surge_ping::Client,
    target: IpAddr,
    timeout: Duration,
) -> PathReport {
    let ident = surge_ping::PingIdentifier(rand::random());
    let started = Instant::now();
    let outcome = staggered(ICMP_ATTEMPTS, timeout, move |attempt| {
        let client = client.clone();
        async move {
            let mut pinger = client.pinger(target, ident).await;
            // The attempt may wait for the rest of the round: a late reply still counts.
            pinger.timeout(Duration::from_secs(30));
            pinger
                .ping(surge_ping::PingSequence(attempt as u16), &[0x58; 16])
                .await
                .map(|_| "echo reply".to_owned())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    match outcome {
        Ok(detail) => PathReport::answered(started, detail),
        Err(reason) => PathReport::silent(reason),
    }
}

/// Starts up to `attempts` tries of `attempt` spread over `timeout`, the first at once; returns
/// the first success, or the last failure when none succeeds within `timeout`.
async fn staggered<F, Fut>(attempts: u32, timeout: Duration, attempt: F) -> Result<String, String>
where
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let spacing = timeout / attempts.max(1);
    let deadline = Instant::now() + timeout;
    let mut running = FuturesUnordered::new();
    let mut started = 0;
    let mut last_error = "no answer".to_owned();
    let mut next_start = Instant::now();
    loop {
        if started < attempts && Instant::now() >= next_start {
            running.push(attempt(started));
            started += 1;
            next_start += spacing;
        }
        let wake = if started < attempts {
            next_start.min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            Some(result) = running.next(), if !running.is_empty() => match result {
                Ok(detail) => return Ok(detail),
                Err(e) => last_error = e,
            },
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    return Err(format!("no answer within {} ms ({last_error})", timeout.as_millis()));
                }
            }
        }
    }
}

/// A TCP connection to the PostgreSQL port: accepted or refused, the host is there.
pub async fn tcp_probe(target: SocketAddr, timeout: Duration) -> PathReport {
    let started = Instant::now();
    let outcome = staggered(TCP_ATTEMPTS, timeout, |_| async move {
        match TcpStream::connect(target).await {
            Ok(_) => Ok("connected".to_owned()),
            // A reset is an answer from the host's kernel: the host is up.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Ok("refused (host up)".to_owned())
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    match outcome {
        Ok(detail) => PathReport::answered(started, detail),
        Err(reason) => PathReport::silent(reason),
    }
}

/// A SIP OPTIONS request to `target` over UDP, retransmitted within `timeout`; any SIP response
/// to it, whatever its status, means a SIP stack is alive there.
pub async fn sip_options(target: SocketAddr, cseq: u32, timeout: Duration) -> PathReport {
    let started = Instant::now();
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("valid"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("valid"),
    };
    let socket = match UdpSocket::bind(bind).await {
        Ok(socket) => socket,
        Err(e) => return PathReport::silent(format!("cannot open a UDP socket: {e}")),
    };
    // Connected: the kernel picks the source address and only the master's replies arrive.
    if let Err(e) = socket.connect(target).await {
        return PathReport::silent(format!("cannot reach {target}: {e}"));
    }
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(e) => return PathReport::silent(format!("no local address: {e}")),
    };
    let request = SipRequest::options(target, local, cseq);
    let bytes = request.to_string();
    let deadline = started + timeout;
    let spacing = timeout / SIP_ATTEMPTS;
    let mut buf = vec![0u8; 4096];
    let mut last_error = String::from("no SIP response");
    for attempt in 0..SIP_ATTEMPTS {
        if let Err(e) = socket.send(bytes.as_bytes()).await {
            last_error = format!("send failed: {e}");
        }
        let resend_at = (started + spacing * (attempt + 1)).min(deadline);
        let resend_at = if attempt + 1 == SIP_ATTEMPTS {
            deadline
        } else {
            resend_at
        };
        loop {
            match tokio::time::timeout_at(resend_at, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(n)) => match parse_response(&buf[..n], &request.call_id) {
                    Some(status) => return PathReport::answered(started, status),
                    None => {
                        last_error = "an answer that is not a SIP response to our OPTIONS".into()
                    }
                },
                // ICMP port unreachable: the host is up but nothing listens on SIP.
                Ok(Err(e)) => {
                    last_error = e.to_string();
                    tokio::time::sleep_until(resend_at).await;
                    break;
                }
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    PathReport::silent(format!(
        "no answer within {} ms ({last_error})",
        timeout.as_millis()
    ))
}

/// A well-formed RFC 3261 OPTIONS request (section 11): one transaction, retransmitted as is.
#[derive(Clone, Debug)]
pub struct SipRequest {
    pub target: SocketAddr,
    pub local: SocketAddr,
    pub cseq: u32,
    pub branch: String,
    pub tag: String,
    pub call_id: String,
}

impl SipRequest {
    pub fn options(target: SocketAddr, local: SocketAddr, cseq: u32) -> SipRequest {
        let random = || format!("{:016x}", rand::random::<u64>());
        SipRequest {
            target,
            local,
            cseq,
            // The magic cookie marks an RFC 3261 branch.
            branch: format!("z9hG4bK{}", random()),
            tag: random(),
            call_id: format!("{}@xivo-ha", random()),
        }
    }
}

/// `host:port`, with IPv6 hosts in brackets as SIP URIs want them.
fn host_port(address: SocketAddr) -> String {
    match address {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

impl std::fmt::Display for SipRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = host_port(self.target);
        let local = host_port(self.local);
        write!(
            f,
            "OPTIONS sip:{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:xivo-ha@{local}>;tag={tag}\r\n\
             To: <sip:{target}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} OPTIONS\r\n\
             Contact: <sip:xivo-ha@{local}>\r\n\
             Accept: application/sdp\r\n\
             User-Agent: xivo-ha/{version}\r\n\
             Content-Length: 0\r\n\r\n",
            branch = self.branch,
            tag = self.tag,
            call_id = self.call_id,
            cseq = self.cseq,
            version = env!("CARGO_PKG_VERSION"),
        )
    }
}

/// The status line of a SIP response to the request with `call_id`, or `None` for anything
/// else (garbage, a request, a stray answer to another transaction).
pub fn parse_response(datagram: &[u8], call_id: &str) -> Option<String> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line.strip_prefix("SIP/2.0 ")?;
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(100..700).contains(&code.parse::<u16>().ok()?)
    {
        return None;
    }
    let matches_call = lines.take_while(|l| !l.is_empty()).any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name == "i") && value.trim() == call_id
    });
    matches_call.then(|| status_line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SipRequest {
        SipRequest::options(
            "10.1.2.3:5060".parse().unwrap(),
            "10.1.2.4:40000".parse().unwrap(),
            7,
        )
    }

    #[test]
    fn options_request_is_well_formed() {
        let r = request();
        let text = r.to_string();
        assert!(
            text.starts_with("OPTIONS sip:10.1.2.3:5060 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        for header in [
            "Via: SIP/2.0/UDP 10.1.2.4:40000;branch=z9hG4bK",
            "Max-Forwards: 70",
            "CSeq: 7 OPTIONS",
            "Call-ID: ",
            "From: <sip:xivo-ha@10.1.2.4:40000>;tag=",
            "To: <sip:10.1.2.3:5060>",
        ] {
            assert!(text.contains(header), "{header} missing in {text}");
        }
        // Every line ends with CRLF, no bare LF.
        assert!(!text.replace("\r\n", "").contains('\n'));
        let v6 = SipRequest::options(
            "[fd00::1]:5060".parse().unwrap(),
            "[fd00::2]:4000".parse().unwrap(),
            1,
        );
        assert!(
            v6.to_string()
                .starts_with("OPTIONS sip:[fd00::1]:5060 SIP/2.0\r\n")
        );
    }

    #[test]
    fn any_sip_response_to_our_call_counts_nothing_else_does() {
        let r = request();
        let response = |status: &str, call_id: &str| {
            format!("SIP/2.0 {status}\r\nVia: x\r\nCall-ID: {call_id}\r\nCSeq: 7 OPTIONS\r\n\r\n")
        };
        assert_eq!(
            parse_response(response("200 OK", &r.call_id).as_bytes(), &r.call_id).as_deref(),
            Some("SIP/2.0 200 OK")
        );
        assert!(
            parse_response(response("404 Not Found", &r.call_id).as_bytes(), &r.call_id).is_some()
        );
        let compact = format!("SIP/2.0 503 Busy\r\ni: {}\r\n\r\n", r.call_id);
        assert!(parse_response(compact.as_bytes(), &r.call_id).is_some());
        assert!(parse_response(response("200 OK", "other@x").as_bytes(), &r.call_id).is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n", &r.call_id).is_none());
        assert!(parse_response(r.to_string().as_bytes(), &r.call_id).is_none());
        assert!(parse_response(&[0xff, 0xfe], &r.call_id).is_none());
    }

    /// A UDP responder on loopback that answers only every third datagram: the retransmissions
    /// within the round get through.
    #[tokio::test]
    async fn retransmissions_get_through_a_lossy_responder() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = 0;
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                seen += 1;
                if seen % 3 != 0 {
                    continue;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let call_id = text
                    .lines()
                    .find(|l| l.starts_with("Call-ID:"))
                    .unwrap()
                    .to_owned();
                let answer = format!("SIP/2.0 200 OK\r\n{call_id}\r\n\r\n");
                server.send_to(answer.as_bytes(), from).await.unwrap();
            }
        });
        let report = sip_options(target, 1, Duration::from_millis(800)).await;
        assert!(report.answered, "{report:?}");
        assert_eq!(report.detail, "SIP/2.0 200 OK");
    }

    #[tokio::test]
    async fn a_closed_port_and_a_silent_one_are_no_answer() {
        // Nothing listens: ICMP port unreachable.
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let report = sip_options(closed, 1, Duration::from_millis(200)).await;
        assert!(!report.answered);
        // Listening but never answering.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = Instant::now();
        let report = sip_options(silent.local_addr().unwrap(), 1, Duration::from_millis(200)).await;
        assert!(!report.answered);
        assert!(
            report.detail.contains("no answer within 200 ms"),
            "{}",
            report.detail
        );
        assert!(started.elapsed() < Duration::from_millis(400));
    }

    #[tokio::test]
    async fn tcp_refused_means_the_host_is_there() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let report = tcp_probe(closed, Duration::from_millis(300)).await;
        assert!(
            report.answered && report.detail.contains("refused"),
            "{report:?}"
        );
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let report = tcp_probe(open.local_addr().unwrap(), Duration::from_millis(300)).await;
        assert_eq!(
            (report.answered, report.detail.as_str()),
            (true, "connected")
        );
    }

    #[tokio::test]
    async fn a_round_against_loopback_sees_icmp_and_tcp() {
        let mut prober = Prober::new(
            "127.0.0.1".parse().unwrap(),
            ProbeSettings {
                icmp_timeout: Duration::from_millis(300),
                tcp_timeout: Duration::from_millis(300),
                sip_timeout: Duration::from_millis(100),
                // Ports nobody uses here: refused / unreachable.
                pg_port: 9,
                sip_port: 9,
            },
        );
        let report = prober.round().await;
        assert!(report.icmp.answered, "{report:?}");
        assert!(report.tcp.answered, "{report:?}");
        assert!(!report.sip.answered, "{report:?}");
        assert_eq!(
            report.observation().class(),
            super::super::verdict::RoundClass::SipDead
        );
    }
}
