//! Making the host's monit read xivo-ha's checks again, from the container: through monit's own
//! HTTP interface (`set httpd port 2812 and use address localhost allow localhost` in monitrc),
//! which the sidecar reaches with `network_mode: host`, as the `monit` command reaches its daemon.
//!
//! monit's HTTP interface has no reload action (`monit reload` itself sends SIGHUP to the pid in
//! monit's pid file, which a container cannot see), so the reload goes through monit: the
//! always-present check `xivo-ha-reload` (see [`super::checks::reload`]) has monit run its own
//! `monit reload` on the host when the stamp file changes. xivo-ha rewrites the stamp, wakes
//! monit up (`POST /_runtime action=validate`, what the web interface's button does) so that
//! it checks at once instead of at its next cycle, then reads `/_status` until monit shows
//! exactly xivo-ha's current checks.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::MonitError;
use crate::secret::Secret;

/// How long monit may take to wake up, reload and show the new checks.
const CONFIRM_WITHIN: Duration = Duration::from_secs(15);
/// One HTTP exchange with monit.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened to monit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// monit reloaded: it now shows exactly these checks of xivo-ha's.
    Reloaded { url: String },
    /// Nothing answers at the URL: no monit here, or its HTTP interface is off.
    NotReachable { url: String, reason: String },
    /// monit answers but has not loaded `xivo-ha-reload` yet (the first installation).
    NoReloadCheck { url: String },
    /// monit was woken up but did not show the new checks in time.
    NotConfirmed { url: String, shows: Vec<String> },
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadOutcome::Reloaded { url } => write!(f, "monit reloaded (through {url})"),
            ReloadOutcome::NotReachable { url, reason } => write!(
                f,
                "monit's HTTP interface does not answer at {url} ({reason}): reload skipped, monit reads the checks when it starts; to have them followed at once, enable it in monitrc (`set httpd port 2812 and use address localhost allow localhost`) or set XIVO_HA_MONITORING_URL"
            ),
            ReloadOutcome::NoReloadCheck { url } => write!(
                f,
                "monit at {url} has not loaded xivo-ha's reload check yet: run `monit reload` on the host once; from then on xivo-ha reloads monit itself"
            ),
            ReloadOutcome::NotConfirmed { url, shows } => write!(
                f,
                "monit at {url} was asked to reload but still shows {}: see monit's log (`monit -t` checks its configuration)",
                if shows.is_empty() {
                    "none of xivo-ha's checks".to_owned()
                } else {
                    shows.join(", ")
                }
            ),
        }
    }
}

/// Where monit's HTTP interface is, and its credentials (`allow user:password` in monitrc).
#[derive(Clone)]
pub struct Interface {
    pub url: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// A failed exchange: nothing answered, or monit said no.
enum Failure {
    Unreachable(String),
    Refused(MonitError),
}

impl Interface {
    pub fn authority(&self) -> Result<&str, MonitError> {
        self.url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| MonitError::BadUrl(self.url.clone()))
    }

    /// One HTTP/1.0 request, a form posted when `form` is given; returns the status and body.
    fn exchange(&self, request_line: &str, form: Option<&str>) -> Result<(u16, String), Failure> {
        let authority = self.authority().map_err(Failure::Refused)?;
        let addresses = authority
            .to_socket_addrs()
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let mut last = "no address".to_owned();
        let mut stream = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, HTTP_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let mut stream = stream.ok_or(Failure::Unreachable(last))?;
        let io = |e: std::io::Error| Failure::Unreachable(e.to_string());
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(io)?;
        let mut request = format!("{request_line} HTTP/1.0\r\nHost: {authority}\r\n");
        if let Some(user) = &self.user {
            let password = self.password.as_ref().map(Secret::expose).unwrap_or("");
            let pair = format!("{user}:{password}");
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
        }
        let mut body = String::new();
        if let Some(form) = form {
            // monit refuses a POST whose CSRF token, a parameter, is not the cookie's too.
            let token = format!("{:016x}", rand::random::<u64>());
            body = format!("{form}&securitytoken={token}");
            request.push_str(&format!(
                "Cookie: securitytoken={token}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(io)?;
        let response = String::from_utf8_lossy(&response);
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| {
                Failure::Unreachable(format!(
                    "not an HTTP answer: {:?}",
                    response.lines().next().unwrap_or_default()
                ))
            })?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        match status {
            401 => Err(Failure::Refused(MonitError::HttpAuth {
                url: self.url.clone(),
            })),
            403 => Err(Failure::Refused(MonitError::HttpForbidden {
                url: self.url.clone(),
            })),
            _ => Ok((status, body)),
        }
    }

    /// The names of the services monit runs now.
    fn services(&self) -> Result<Vec<String>, Failure> {
        let (status, body) = self.exchange("GET /_status?format=xml", None)?;
        if status != 200 {
            return Err(Failure::Refused(MonitError::HttpStatus {
                url: self.url.clone(),
                status,
            }));
        }
        Ok(service_names(&body))
    }

    /// Wakes monit up: it runs a cycle of its checks now.
    fn wake(&self) -> Result<(), Failure> {
        let (status, _) = self.exchange("POST /_runtime", Some("action=validate"))?;
        // monit answers the web interface's button with a redirect to the page.
        if !(200..400).contains(&status) {
            return Err(Failure::Refused(MonitError::HttpStatus {
                url: self.url.clone(),
                status,
            }));
        }
        Ok(())
    }
}

/// The `<name>` of every `<service>` in monit's XML status.
pub fn service_names(xml: &str) -> Vec<String> {
    xml.split("<service ")
        .skip(1)
        .filter_map(|service| {
            let start = service.find("<name>")? + "<name>".len();
            let end = service[start..].find("</name>")? + start;
            Some(service[start..end].to_owned())
        })
        .collect()
}

/// Has monit reload after the stamp file changed (written by the caller), then waits until it
/// shows exactly `wanted` among the services whose name starts with `prefix`.
pub fn reload_monit(
    interface: &Interface,
    prefix: &str,
    reload_check: &str,
    wanted: &[String],
) -> Result<ReloadOutcome, MonitError> {
    let url = interface.url.clone();
    let unreachable = |reason| ReloadOutcome::NotReachable {
        url: url.clone(),
        reason,
    };
    let before = match interface.services() {
        Ok(names) => names,
        Err(Failure::Unreachable(reason)) => return Ok(unreachable(reason)),
        Err(Failure::Refused(e)) => return Err(e),
    };
    if !before.iter().any(|name| name == reload_check) {
        return Ok(ReloadOutcome::NoReloadCheck { url });
    }
    match interface.wake() {
        Ok(()) => {}
        Err(Failure::Unreachable(reason)) => return Ok(unreachable(reason)),
        Err(Failure::Refused(e)) => return Err(e),
    }
    let mut wanted: Vec<String> = wanted.to_vec();
    wanted.sort();
    let deadline = Instant::now() + CONFIRM_WITHIN;
    loop {
        // monit does not answer while it reloads: that is no failure, only a wait.
        let shows = match interface.services() {
            Ok(names) => {
                let mut ours: Vec<String> = names
                    .into_iter()
                    .filter(|n| n.starts_with(prefix))
                    .collect();
                ours.sort();
                if ours == wanted {
                    return Ok(ReloadOutcome::Reloaded { url });
                }
                ours
            }
            Err(Failure::Unreachable(_)) => Vec::new(),
            Err(Failure::Refused(e)) => return Err(e),
        };
        if Instant::now() >= deadline {
            return Ok(ReloadOutcome::NotConfirmed { url, shows });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_read_from_monits_xml() {
        let xml = r#"<?xml version="1.0"?><monit><server><id>x</id></server><service type="7"><name>xivo-ha-reload</name><status>0</status></service><service type="5"><name>vm</name></service></monit>"#;
        assert_eq!(service_names(xml), vec!["xivo-ha-reload", "vm"]);
        assert!(service_names("<monit></monit>").is_empty());
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        let interface = |url: &str| Interface {
            url: url.into(),
            user: None,
            password: None,
        };
        assert_eq!(
            interface("http://127.0.0.1:2812").authority().unwrap(),
            "127.0.0.1:2812"
        );
        assert_eq!(
            interface("http://localhost:2812/").authority().unwrap(),
            "localhost:2812"
        );
        for bad in [
            "https://127.0.0.1:2812",
            "127.0.0.1:2812",
            "http://",
            "http://h:1/x",
        ] {
            assert!(interface(bad).authority().is_err(), "{bad}");
        }
    }
}
