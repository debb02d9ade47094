//! The alerts' settings: `XIVO_HA_ALERT_*` variables from custom.env or the environment: the
//! SMTP server (empty: no mail), the recipients and the sender.

use serde::Deserialize;

pub use crate::settings::SettingsError;
use crate::settings::{EnvFile, from_env};

/// The prefix of every alert variable (`XIVO_HA_ALERT_SMTP`, ...).
pub const PREFIX: &str = "XIVO_HA_ALERT_";

#[derive(Clone, Debug, Deserialize)]
struct Raw {
    #[serde(default = "d_smtp")]
    smtp: String,
    #[serde(default = "d_to")]
    to: String,
    #[serde(default)]
    from: Option<String>,
}

fn d_smtp() -> String {
    "127.0.0.1:25".into()
}
fn d_to() -> String {
    "root@localhost".into()
}

/// Where the alert mails go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertSettings {
    /// `host:port` of the SMTP server (the node's own postfix by default); `None`: mail off.
    pub smtp: Option<(String, u16)>,
    /// The recipients (`root@localhost`, as XiVO mails root).
    pub to: Vec<String>,
    /// The sender (`xivo-ha@<hostname>`).
    pub from: String,
}

impl AlertSettings {
    /// Reads the `XIVO_HA_ALERT_*` variables (environment over custom.env) and checks them.
    pub fn load(env: &EnvFile) -> Result<AlertSettings, SettingsError> {
        let raw: Raw = from_env(PREFIX, env)?;
        let invalid = |name: &str, reason: String| SettingsError::Invalid {
            variable: format!("{PREFIX}{name}"),
            reason,
        };
        let smtp = raw.smtp.trim();
        let smtp = if smtp.is_empty() {
            None
        } else {
            Some(parse_server(smtp).map_err(|r| invalid("SMTP", r))?)
        };
        let to: Vec<String> = raw
            .to
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if to.is_empty() {
            return Err(invalid(
                "TO",
                "lists no recipient: give one or more addresses, e.g. root@localhost".into(),
            ));
        }
        for address in &to {
            check_address(address).map_err(|r| invalid("TO", r))?;
        }
        let from = match raw.from.as_deref().map(str::trim) {
            Some(from) if !from.is_empty() => from.to_owned(),
            _ => format!("xivo-ha@{}", hostname()),
        };
        check_address(&from).map_err(|r| invalid("FROM", r))?;
        Ok(AlertSettings { smtp, to, from })
    }

    /// `127.0.0.1:25`, or `off`.
    pub fn describe(&self) -> String {
        match &self.smtp {
            Some((host, port)) => format!("{host}:{port}"),
            None => "off".into(),
        }
    }
}

/// This node's host name, for the mails and the default sender.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// `host:port` (`[v6]:port` for an IPv6 address); the port defaults to 25.
fn parse_server(text: &str) -> Result<(String, u16), String> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, Some(port)),
        _ => (text, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!(
            "`{text}` names no host: give host:port, e.g. 127.0.0.1:25 (empty turns mail off)"
        ));
    }
    let port = match port {
        None => 25,
        Some(port) => port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            format!("`{port}` is not a port number: give host:port, e.g. 127.0.0.1:25")
        })?,
    };
    Ok((host.to_owned(), port))
}

fn check_address(address: &str) -> Result<(), String> {
    address
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| format!("`{address}` is not a mail address ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::env_file::refusal;

    fn load(text: &str) -> Result<AlertSettings, SettingsError> {
        AlertSettings::load(&EnvFile::for_test(text))
    }

    #[test]
    fn defaults_mail_root_through_the_local_postfix() {
        let settings = load("").unwrap();
        assert_eq!(settings.smtp, Some(("127.0.0.1".into(), 25)));
        assert_eq!(settings.to, vec!["root@localhost"]);
        assert_eq!(settings.from, format!("xivo-ha@{}", hostname()));
    }

    #[test]
    fn variables_override_and_empty_smtp_turns_mail_off() {
        let settings = load(
            "XIVO_HA_ALERT_SMTP=mail.example.com:587\nXIVO_HA_ALERT_TO=a@example.com, b@example.com\n\
             XIVO_HA_ALERT_FROM=ha@example.com\n",
        )
        .unwrap();
        assert_eq!(settings.smtp, Some(("mail.example.com".into(), 587)));
        assert_eq!(settings.to, vec!["a@example.com", "b@example.com"]);
        assert_eq!(settings.from, "ha@example.com");
        assert_eq!(load("XIVO_HA_ALERT_SMTP=\n").unwrap().smtp, None);
        assert_eq!(
            load("XIVO_HA_ALERT_SMTP=[::1]:2525\n").unwrap().smtp,
            Some(("::1".into(), 2525))
        );
    }

    #[test]
    fn the_settings_table_declares_these_variables_with_these_defaults() {
        use crate::settings::catalog::{Component, check_struct};
        check_struct::<Raw>(Component::Alert, PREFIX, &[]);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = refusal(load("XIVO_HA_ALERT_SMTP=127.0.0.1:smtp\n"));
        assert!(error.starts_with("XIVO_HA_ALERT_SMTP:"), "{error}");
        let error = refusal(load("XIVO_HA_ALERT_TO=root\n"));
        assert!(
            error.starts_with("XIVO_HA_ALERT_TO:") && error.contains("`root`"),
            "{error}"
        );
        let error = refusal(load("XIVO_HA_ALERT_TO=,\n"));
        assert!(error.contains("lists no recipient"), "{error}");
    }
}
