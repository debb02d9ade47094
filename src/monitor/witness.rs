//! The slave's witnesses (`XIVO_HA_MONITOR_WITNESSES`): third parties it tries before acting
//! on a down verdict, so that a slave cut off from the network does not take the master's
//! place while the master still serves (split brain). A witness is an IP address (ICMP echo)
//! or `host:port` (TCP connect); by default the node's default gateway, read from the routing
//! table at each check; `none` turns the check off. Any witness answering proves this node is
//! connected. The decision itself is [`super::isolation`]'s.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::probe::{self, PathReport};

/// Where the routing table is read (this network namespace's).
pub const ROUTE_TABLE: &str = "/proc/net/route";

/// One witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Witness {
    /// Answers ICMP echo.
    Icmp(IpAddr),
    /// Accepts (or refuses: its kernel answered) a TCP connection.
    Tcp(SocketAddr),
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Witness::Icmp(ip) => write!(f, "{ip} (icmp)"),
            Witness::Tcp(address) => write!(f, "{address} (tcp)"),
        }
    }
}

/// Which witnesses the slave tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Witnesses {
    /// The default gateway of the routing table (ICMP), read at each check.
    Gateway,
    /// The listed ones.
    List(Vec<Witness>),
    /// `none`: no check, a down verdict is acted on at once (as before witnesses).
    Off,
}

/// What the dashboard and `status` say of the check.
impl fmt::Display for Witnesses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Witnesses::Gateway => f.write_str("the default gateway (icmp)"),
            Witnesses::List(list) if list.is_empty() => f.write_str("none listed"),
            Witnesses::List(list) => {
                let names: Vec<String> = list.iter().map(Witness::to_string).collect();
                f.write_str(&names.join(", "))
            }
            Witnesses::Off => f.write_str(
                "off (XIVO_HA_MONITOR_WITNESSES=none): a down verdict is acted on at once",
            ),
        }
    }
}

/// `10.0.0.1, 10.0.0.2:22` → the witnesses; empty → the gateway; `none` → off.
pub fn parse(text: &str) -> Result<Witnesses, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Witnesses::Gateway);
    }
    if text.eq_ignore_ascii_case("none") {
        return Ok(Witnesses::Off);
    }
    let mut list = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let witness = if let Ok(ip) = item.parse::<IpAddr>() {
            Witness::Icmp(ip)
        } else if let Ok(address) = item.parse::<SocketAddr>() {
            Witness::Tcp(address)
        } else {
            return Err(format!(
                "`{item}` is not an IP address (ICMP) or IP:port (TCP): give addresses, not names (a cut-off node cannot resolve names), or `none`"
            ));
        };
        if !list.contains(&witness) {
            list.push(witness);
        }
    }
    Ok(Witnesses::List(list))
}

/// The default gateway in the text of `/proc/net/route` (the first `00000000` destination with
/// mask `00000000` and the gateway flag), if any.
pub fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    const RTF_GATEWAY: u32 = 0x2;
    route_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway, flags, mask) = (
            fields.get(1)?,
            fields.get(2)?,
            fields.get(3)?,
            fields.get(7)?,
        );
        let flags = u32::from_str_radix(flags, 16).ok()?;
        if *destination != "00000000" || *mask != "00000000" || flags & RTF_GATEWAY == 0 {
            return None;
        }
        // The kernel writes the address in host byte order (little-endian on x86 and arm).
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        Some(Ipv4Addr::from(raw.to_le_bytes()))
    })
}

/// The witnesses to try now: the list, or the routing table's default gateway. `None` when
/// the check is off; an empty list when there is no default route.
pub fn resolve(witnesses: &Witnesses) -> Option<Vec<Witness>> {
    match witnesses {
        Witnesses::Off => None,
        Witnesses::List(list) => Some(list.clone()),
        Witnesses::Gateway => Some(
            std::fs::read_to_string(ROUTE_TABLE)
                .ok()
                .as_deref()
                .and_then(default_gateway)
                .map(|gateway| vec![Witness::Icmp(IpAddr::V4(gateway))])
                .unwrap_or_default(),
        ),
    }
}

/// What one witness round saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WitnessRound {
    /// A witness answered: this node is connected.
    pub answered: bool,
    /// One line: each witness and what it said (or why there was none to try).
    pub detail: String,
}

/// Tries every witness at once, each for at most `timeout`.
pub async fn round(witnesses: &[Witness], timeout: Duration) -> WitnessRound {
    if witnesses.is_empty() {
        return WitnessRound {
            answered: false,
            detail: "no witness to try: no default route (set XIVO_HA_MONITOR_WITNESSES)".into(),
        };
    }
    let reports = join_all(witnesses.iter().map(|witness| try_one(*witness, timeout))).await;
    let answered = reports.iter().any(|r| r.answered);
    let detail = witnesses
        .iter()
        .zip(&reports)
        .map(|(witness, report)| format!("{witness} {}", report.detail))
        .collect::<Vec<_>>()
        .join("; ");
    WitnessRound { answered, detail }
}

async fn try_one(witness: Witness, timeout: Duration) -> PathReport {
    match witness {
        Witness::Tcp(address) => probe::tcp_probe(address, timeout).await,
        Witness::Icmp(ip) => match probe::icmp_client(ip) {
            Ok(client) => probe::icmp_echo(&client, ip, timeout).await,
            Err(reason) => PathReport {
                answered: false,
                rtt_ms: None,
                detail: reason,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn witnesses_parse_as_icmp_tcp_gateway_or_off() {
        assert_eq!(parse("").unwrap(), Witnesses::Gateway);
        assert_eq!(parse(" none ").unwrap(), Witnesses::Off);
        assert_eq!(
            parse("192.0.2.1, 192.0.2.2:22,192.0.2.1").unwrap(),
            Witnesses::List(vec![
                Witness::Icmp("192.0.2.1".parse().unwrap()),
                Witness::Tcp("192.0.2.2:22".parse().unwrap()),
            ])
        );
        let error = parse("gw.example:22").unwrap_err();
        assert!(error.contains("`gw.example:22`"), "{error}");
        // As the dashboard names them.
        assert_eq!(
            parse("192.0.2.1, 192.0.2.2:22").unwrap().to_string(),
            "192.0.2.1 (icmp), 192.0.2.2:22 (tcp)"
        );
        assert_eq!(parse("").unwrap().to_string(), "the default gateway (icmp)");
        assert!(parse("none").unwrap().to_string().starts_with("off"));
    }

    #[test]
    fn the_default_gateway_is_read_from_the_routing_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway(table), Some(Ipv4Addr::new(10, 0, 2, 1)));
        let no_default = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                          eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(default_gateway(no_default), None);
        // An unreachable default (no gateway flag) is no gateway.
        let unreachable = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                           *\t00000000\t00000000\t0201\t0\t0\t0\t00000000\n";
        assert_eq!(default_gateway(unreachable), None);
    }

    #[tokio::test]
    async fn a_listening_or_refusing_port_answers_and_no_witness_does_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = Witness::Tcp(listener.local_addr().unwrap());
        let seen = round(&[open], Duration::from_millis(500)).await;
        assert!(seen.answered, "{seen:?}");
        let none = round(&[], Duration::from_millis(500)).await;
        assert!(!none.answered);
        assert!(none.detail.contains("no default route"), "{}", none.detail);
    }
}
