//! The monitor's settings: `XIVO_HA_MONITOR_*` variables from custom.env or the environment,
//! each with a default, checked once at start-up so that a bad value stops the monitor before
//! it touches anything.

use std::time::Duration;

use serde::Deserialize;

use super::probe::Cadence;
use super::witness::{self, Witnesses};
pub use crate::settings::SettingsError;
use crate::settings::{EnvFile, from_env};

/// The prefix of every monitor variable (`XIVO_HA_MONITOR_INTERVAL_MS`, ...).
pub const PREFIX: &str = "XIVO_HA_MONITOR_";

/// How often the slave connects to the master's PostgreSQL port (the TCP path).
pub const TCP_EVERY: Duration = Duration::from_secs(1);

/// Settings as read from the variables; see [`MonitorSettings`] for the checked form.
#[derive(Clone, Debug, Deserialize)]
struct Raw {
    #[serde(default = "d_interval_ms")]
    interval_ms: u64,
    #[serde(default = "d_sip_interval_ms")]
    sip_interval_ms: u64,
    #[serde(default = "d_down_after_ms")]
    down_after_ms: u64,
    #[serde(default = "d_up_after_ms")]
    up_after_ms: u64,
    #[serde(default = "d_hold_down_ms")]
    hold_down_ms: u64,
    #[serde(default = "d_timeout_ms")]
    icmp_timeout_ms: u64,
    #[serde(default = "d_timeout_ms")]
    tcp_timeout_ms: u64,
    #[serde(default = "d_timeout_ms")]
    sip_timeout_ms: u64,
    #[serde(default = "d_pg_port")]
    pg_port: u16,
    #[serde(default = "d_sip_port")]
    sip_port: u16,
    #[serde(default = "d_containers")]
    containers: String,
    #[serde(default = "d_stop_grace_s")]
    stop_grace_s: u32,
    #[serde(default = "d_start_timeout_s")]
    start_timeout_s: u64,
    #[serde(default = "d_start_settle_ms")]
    start_settle_ms: u64,
    #[serde(default)]
    hook_pre_start: Option<String>,
    #[serde(default)]
    hook_post_start: Option<String>,
    #[serde(default)]
    hook_pre_stop: Option<String>,
    #[serde(default)]
    hook_post_stop: Option<String>,
    #[serde(default)]
    witnesses: String,
    #[serde(default = "d_drain_max_s")]
    drain_max_s: u64,
}

fn d_interval_ms() -> u64 {
    200
}
fn d_sip_interval_ms() -> u64 {
    40
}
fn d_down_after_ms() -> u64 {
    1200
}
fn d_up_after_ms() -> u64 {
    3000
}
fn d_hold_down_ms() -> u64 {
    10_000
}
fn d_timeout_ms() -> u64 {
    900
}
fn d_pg_port() -> u16 {
    5432
}
fn d_sip_port() -> u16 {
    5060
}
fn d_containers() -> String {
    "asterisk,monit".into()
}
fn d_stop_grace_s() -> u32 {
    10
}
fn d_start_timeout_s() -> u64 {
    60
}
fn d_start_settle_ms() -> u64 {
    1500
}
fn d_drain_max_s() -> u64 {
    1800
}

/// Shell commands run around the start and stop of the slave's services (XiVO regenerates its
/// configuration and updates DHCP there). Run with `/bin/sh -c`; a failing hook is logged and
/// does not stop the action, as the services matter more than the hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    pub pre_start: Option<String>,
    pub post_start: Option<String>,
    pub pre_stop: Option<String>,
    pub post_stop: Option<String>,
}

/// The monitor's checked settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorSettings {
    /// A round: the slave's timeline mark, ICMP echo and re-reading of ha.conf (and the
    /// maintenance file), on either role. The master's probe round of its slave has its own
    /// cadence ([`super::peer::ROUND_EVERY`]).
    pub interval: Duration,
    /// Time between two SIP OPTIONS to the master (the slave's watch).
    pub sip_interval: Duration,
    /// SIP silent this long: the master is down.
    pub down_after: Duration,
    /// SIP answering this long (and the hold-down passed): the master is up again.
    pub up_after: Duration,
    /// Minimum time in the down state before the master may be declared up again.
    pub hold_down: Duration,
    pub icmp_timeout: Duration,
    pub tcp_timeout: Duration,
    pub sip_timeout: Duration,
    /// The master's PostgreSQL port: the TCP path.
    pub pg_port: u16,
    /// The master's SIP port (UDP).
    pub sip_port: u16,
    /// The slave's service containers (started side by side, stopped in reverse order).
    pub containers: Vec<String>,
    /// `docker stop` grace time before SIGKILL.
    pub stop_grace: Duration,
    /// How long a started container may take to be running (and healthy, with a health check).
    pub start_timeout: Duration,
    /// How long a started container without a health check must keep running to count as
    /// started (one with a health check counts once healthy); 0: as soon as it runs.
    pub start_settle: Duration,
    pub hooks: Hooks,
    /// Tried before a takeover: a slave that none answers is the one cut off.
    pub witnesses: Witnesses,
    /// How long a failback lets the slave's calls finish (`core stop gracefully`) before it
    /// stops the containers; zero stops them at once.
    pub drain_max: Duration,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        let raw: Raw = serde_json::from_str("{}").expect("defaults deserialise");
        MonitorSettings::check(raw).expect("defaults are valid")
    }
}

impl MonitorSettings {
    /// Reads the `XIVO_HA_MONITOR_*` variables (environment over custom.env) and checks them.
    pub fn load(env: &EnvFile) -> Result<MonitorSettings, SettingsError> {
        let raw: Raw = from_env(PREFIX, env)?;
        MonitorSettings::check(raw)
    }

    fn check(raw: Raw) -> Result<MonitorSettings, SettingsError> {
        let invalid = |name: &str, reason: &str| SettingsError::Invalid {
            variable: format!("{PREFIX}{name}"),
            reason: reason.to_owned(),
        };
        if raw.interval_ms < 50 {
            return Err(invalid(
                "INTERVAL_MS",
                "must be at least 50 (milliseconds between probe rounds)",
            ));
        }
        if raw.sip_interval_ms < 10 {
            return Err(invalid(
                "SIP_INTERVAL_MS",
                "must be at least 10 (milliseconds between SIP OPTIONS)",
            ));
        }
        // A window must hold several probes, or one lost packet is a failover.
        let least = 4 * raw.sip_interval_ms;
        for (name, value) in [
            ("DOWN_AFTER_MS", raw.down_after_ms),
            ("UP_AFTER_MS", raw.up_after_ms),
        ] {
            if value < least {
                return Err(invalid(
                    name,
                    &format!(
                        "must be at least 4 SIP intervals ({least} ms with XIVO_HA_MONITOR_SIP_INTERVAL_MS={})",
                        raw.sip_interval_ms
                    ),
                ));
            }
        }
        for (name, value) in [
            ("ICMP_TIMEOUT_MS", raw.icmp_timeout_ms),
            ("TCP_TIMEOUT_MS", raw.tcp_timeout_ms),
            ("SIP_TIMEOUT_MS", raw.sip_timeout_ms),
        ] {
            if value < 10 {
                return Err(invalid(name, "must be at least 10 milliseconds"));
            }
        }
        if raw.pg_port == 0 || raw.sip_port == 0 {
            let name = if raw.pg_port == 0 {
                "PG_PORT"
            } else {
                "SIP_PORT"
            };
            return Err(invalid(name, "must be a port number from 1 to 65535"));
        }
        if raw.start_timeout_s == 0 {
            return Err(invalid("START_TIMEOUT_S", "must be at least 1 second"));
        }
        let containers =
            parse_containers(&raw.containers).map_err(|reason| invalid("CONTAINERS", &reason))?;
        let witnesses =
            witness::parse(&raw.witnesses).map_err(|reason| invalid("WITNESSES", &reason))?;
        let hook = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        Ok(MonitorSettings {
            interval: Duration::from_millis(raw.interval_ms),
            sip_interval: Duration::from_millis(raw.sip_interval_ms),
            down_after: Duration::from_millis(raw.down_after_ms),
            up_after: Duration::from_millis(raw.up_after_ms),
            hold_down: Duration::from_millis(raw.hold_down_ms),
            icmp_timeout: Duration::from_millis(raw.icmp_timeout_ms),
            tcp_timeout: Duration::from_millis(raw.tcp_timeout_ms),
            sip_timeout: Duration::from_millis(raw.sip_timeout_ms),
            pg_port: raw.pg_port,
            sip_port: raw.sip_port,
            containers,
            stop_grace: Duration::from_secs(raw.stop_grace_s.into()),
            start_timeout: Duration::from_secs(raw.start_timeout_s),
            start_settle: Duration::from_millis(raw.start_settle_ms),
            hooks: Hooks {
                pre_start: hook(raw.hook_pre_start),
                post_start: hook(raw.hook_post_start),
                pre_stop: hook(raw.hook_pre_stop),
                post_stop: hook(raw.hook_post_stop),
            },
            witnesses,
            drain_max: Duration::from_secs(raw.drain_max_s),
        })
    }

    /// The slave's probing cadence: SIP every `sip_interval`, ICMP every round, TCP every
    /// [`TCP_EVERY`] (a connection to PostgreSQL, kept rare).
    pub fn cadence(&self) -> Cadence {
        Cadence {
            sip: self.sip_interval,
            icmp: self.interval,
            tcp: TCP_EVERY.max(self.interval),
        }
    }

    /// How long one probe round may take at most: the slowest path's timeout.
    pub fn round_timeout(&self) -> Duration {
        self.icmp_timeout
            .max(self.tcp_timeout)
            .max(self.sip_timeout)
    }
}

/// The prefix of the master's schedule variables (`XIVO_HA_REPLICATION_INTERVAL_S`).
pub const MASTER_PREFIX: &str = "XIVO_HA_REPLICATION_";

#[derive(Clone, Debug, Deserialize)]
struct MasterRaw {
    #[serde(default = "d_replication_interval_s")]
    interval_s: u64,
}

fn d_replication_interval_s() -> u64 {
    60
}

/// What a master's monitor runs when (the hourly jobs run at :00 whatever these say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterSettings {
    /// Time between the starts of two incremental replications.
    pub replication_interval: Duration,
}

impl Default for MasterSettings {
    fn default() -> Self {
        MasterSettings {
            replication_interval: Duration::from_secs(d_replication_interval_s()),
        }
    }
}

impl MasterSettings {
    /// Reads `XIVO_HA_REPLICATION_INTERVAL_S` (environment over custom.env) and checks it.
    pub fn load(env: &EnvFile) -> Result<MasterSettings, SettingsError> {
        let raw: MasterRaw = from_env(MASTER_PREFIX, env)?;
        if !(1..=3600).contains(&raw.interval_s) {
            return Err(SettingsError::Invalid {
                variable: format!("{MASTER_PREFIX}INTERVAL_S"),
                reason: "must be from 1 to 3600 seconds (3600: hourly, XiVO's cadence)".into(),
            });
        }
        Ok(MasterSettings {
            replication_interval: Duration::from_secs(raw.interval_s),
        })
    }
}

/// `asterisk,monit` → the names, checked against Docker's container name syntax
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) so that a typo is caught before anything is started.
pub fn parse_containers(list: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let name = name.strip_prefix('/').unwrap_or(name);
        let valid = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(format!(
                "`{name}` is not a Docker container name (letters, digits, `_`, `.`, `-`)"
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        return Err(
            "lists no container: give the slave's service containers, e.g. `asterisk,monit`".into(),
        );
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::env_file::refusal;

    fn load(text: &str) -> Result<MonitorSettings, SettingsError> {
        MonitorSettings::load(&EnvFile::for_test(text))
    }

    #[test]
    fn the_variables_and_defaults_are_the_catalogs() {
        use crate::settings::catalog::{Component, check_struct};
        check_struct::<Raw>(Component::Monitor, PREFIX, &[]);
        check_struct::<MasterRaw>(Component::Replication, MASTER_PREFIX, &[]);
    }

    #[test]
    fn the_replication_interval_is_a_minute_by_default_and_at_most_an_hour() {
        let env = |text: &str| EnvFile::for_test(text);
        assert_eq!(
            MasterSettings::load(&env("")).unwrap(),
            MasterSettings::default()
        );
        assert_eq!(
            MasterSettings::default().replication_interval,
            Duration::from_secs(60)
        );
        let hourly = MasterSettings::load(&env("XIVO_HA_REPLICATION_INTERVAL_S=3600\n")).unwrap();
        assert_eq!(hourly.replication_interval, Duration::from_secs(3600));
        for bad in ["0", "3601", "soon"] {
            let error =
                MasterSettings::load(&env(&format!("XIVO_HA_REPLICATION_INTERVAL_S={bad}\n")))
                    .unwrap_err()
                    .to_string();
            assert!(error.contains("XIVO_HA_REPLICATION_INTERVAL_S"), "{error}");
        }
    }

    #[test]
    fn defaults_match_the_documentation() {
        let settings = load("").unwrap();
        assert_eq!(settings, MonitorSettings::default());
        assert_eq!(settings.interval, Duration::from_millis(200));
        assert_eq!(settings.sip_interval, Duration::from_millis(40));
        assert_eq!(
            (settings.down_after, settings.up_after),
            (Duration::from_millis(1200), Duration::from_secs(3))
        );
        assert_eq!(settings.hold_down, Duration::from_secs(10));
        assert_eq!((settings.pg_port, settings.sip_port), (5432, 5060));
        assert_eq!(settings.containers, vec!["asterisk", "monit"]);
        assert_eq!(settings.start_settle, Duration::from_millis(1500));
        assert_eq!(settings.hooks, Hooks::default());
        assert_eq!(settings.witnesses, Witnesses::Gateway);
        assert_eq!(settings.drain_max, Duration::from_secs(1800));
    }

    #[test]
    fn variables_override_defaults() {
        let settings = load(
            "XIVO_HA_MONITOR_INTERVAL_MS=250\nXIVO_HA_MONITOR_CONTAINERS=asterisk, monit ,xivo-ctid\n\
             XIVO_HA_MONITOR_HOOK_PRE_START=xivo-create-config\n",
        )
        .unwrap();
        assert_eq!(settings.interval, Duration::from_millis(250));
        assert_eq!(settings.containers, vec!["asterisk", "monit", "xivo-ctid"]);
        assert_eq!(
            settings.hooks.pre_start.as_deref(),
            Some("xivo-create-config")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = refusal(load("XIVO_HA_MONITOR_DOWN_AFTER_MS=100\n"));
        assert!(
            error.starts_with(
                "XIVO_HA_MONITOR_DOWN_AFTER_MS: must be at least 4 SIP intervals (160 ms"
            ),
            "{error}"
        );
        let error = refusal(load("XIVO_HA_MONITOR_CONTAINERS=aster isk\n"));
        assert!(
            error.contains("XIVO_HA_MONITOR_CONTAINERS") && error.contains("aster isk"),
            "{error}"
        );
        let error = refusal(load("XIVO_HA_MONITOR_CONTAINERS=,\n"));
        assert!(error.contains("lists no container"), "{error}");
        let error = refusal(load("XIVO_HA_MONITOR_WITNESSES=router\n"));
        assert!(
            error.starts_with("XIVO_HA_MONITOR_WITNESSES: `router`"),
            "{error}"
        );
        let error = refusal(load("XIVO_HA_MONITOR_SIP_PORT=sip\n"));
        assert!(error.contains("XIVO_HA_MONITOR_SIP_PORT"), "{error}");
    }
}
