//! This host's network interfaces (addresses and subnets) and small reachability checks that
//! several components share: "is this address mine?", "is the peer on my subnet?", "does this
//! TCP port answer?".

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// One address of one interface, with its prefix length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl InterfaceAddress {
    /// Whether `other` lies in this address's subnet.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.address, other) {
            (IpAddr::V4(mine), IpAddr::V4(other)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(mine) & mask == u32::from(other) & mask
            }
            (IpAddr::V6(mine), IpAddr::V6(other)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(mine) & mask == u128::from(other) & mask
            }
            _ => false,
        }
    }
}

impl InterfaceAddress {
    /// The directed broadcast address of this address's IPv4 subnet (none for /31 and /32,
    /// which have no broadcast, nor for IPv6, which has none).
    pub fn broadcast(&self) -> Option<IpAddr> {
        match self.address {
            IpAddr::V4(mine) if self.prefix_len <= 30 => {
                let host_bits = u32::MAX
                    .checked_shr(u32::from(self.prefix_len))
                    .unwrap_or(0);
                Some(IpAddr::V4((u32::from(mine) | host_bits).into()))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.interface, self.address, self.prefix_len)
    }
}

/// The addresses of this host's interfaces (empty when the system will not say).
pub fn interface_addresses() -> Vec<InterfaceAddress> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|interface| {
            let address = interface.address?;
            let netmask = interface.netmask;
            let (address, prefix_len) = if let Some(v4) = address.as_sockaddr_in() {
                let mask = netmask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in())
                    .map(|m| m.ip());
                (
                    IpAddr::V4(v4.ip()),
                    mask.map_or(32, |m| u32::from(m).count_ones() as u8),
                )
            } else {
                let v6 = address.as_sockaddr_in6()?;
                let mask = netmask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in6())
                    .map(|m| m.ip());
                (
                    IpAddr::V6(v6.ip()),
                    mask.map_or(128, |m| u128::from(m).count_ones() as u8),
                )
            };
            Some(InterfaceAddress {
                interface: interface.interface_name,
                address,
                prefix_len,
            })
        })
        .collect()
}

/// Whether `ip` is one of this host's own addresses (loopback included).
pub fn is_own_address(ip: IpAddr) -> bool {
    ip.is_loopback() || interface_addresses().iter().any(|a| a.address == ip)
}

/// Whether `ip` is a broadcast address: the limited broadcast or the broadcast of one of this
/// host's subnets.
pub fn is_broadcast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => true,
        IpAddr::V4(_) => interface_addresses()
            .iter()
            .any(|a| a.broadcast() == Some(ip)),
        IpAddr::V6(_) => false,
    }
}

/// Connects to `address` within `timeout`; returns how long the connection took.
pub async fn tcp_answers(address: SocketAddr, timeout: Duration) -> std::io::Result<Duration> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} ms", timeout.as_millis()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_contain_their_neighbours_only() {
        let mine = InterfaceAddress {
            interface: "eth0".into(),
            address: "10.20.0.1".parse().unwrap(),
            prefix_len: 24,
        };
        assert!(mine.contains("10.20.0.2".parse().unwrap()));
        assert!(!mine.contains("10.20.1.2".parse().unwrap()));
        assert!(!mine.contains("::1".parse().unwrap()));
        let host_route = InterfaceAddress {
            prefix_len: 32,
            ..mine.clone()
        };
        assert!(!host_route.contains("10.20.0.2".parse().unwrap()));
        let everything = InterfaceAddress {
            prefix_len: 0,
            ..mine
        };
        assert!(everything.contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn broadcast_is_the_subnet_with_every_host_bit_set() {
        let at = |address: &str, prefix_len| InterfaceAddress {
            interface: "eth0".into(),
            address: address.parse().unwrap(),
            prefix_len,
        };
        let broadcast = |a: InterfaceAddress| a.broadcast().map(|b| b.to_string());
        assert_eq!(
            broadcast(at("192.0.2.7", 24)).as_deref(),
            Some("192.0.2.255")
        );
        assert_eq!(broadcast(at("192.0.2.7", 30)).as_deref(), Some("192.0.2.7"));
        assert_eq!(
            broadcast(at("192.0.2.7", 0)).as_deref(),
            Some("255.255.255.255")
        );
        assert_eq!(broadcast(at("192.0.2.7", 31)), None);
        assert_eq!(broadcast(at("2001:db8::7", 64)), None);
        assert!(is_broadcast("255.255.255.255".parse().unwrap()));
        assert!(is_broadcast("127.255.255.255".parse().unwrap()));
        assert!(!is_broadcast("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn loopback_is_listed_as_own() {
        assert!(is_own_address("127.0.0.1".parse().unwrap()));
        let addresses = interface_addresses();
        assert!(
            addresses
                .iter()
                .any(|a| a.address.is_loopback() && a.prefix_len == 8),
            "{addresses:?}"
        );
    }

    #[tokio::test]
    async fn tcp_check_tells_open_from_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        assert!(tcp_answers(open, Duration::from_secs(2)).await.is_ok());
        drop(listener);
        assert!(tcp_answers(open, Duration::from_secs(2)).await.is_err());
    }
}
