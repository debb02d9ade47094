//! Maintenance mode: while it is on, the monitor of this node leaves the slave's services and
//! the master's hourly jobs alone (an administrator upgrades the pair), until it is switched off
//! or its deadline passes. Its state is one document, `/var/lib/xivo-ha/maintenance.json`,
//! present while it is on ([`MaintenanceDoc`]); the monitor reads it every round, so no
//! restart is needed, and removes it at its deadline.
//!
//! Here: setting and clearing it, and the pure decision of [`phase`]; [`command`]: the
//! `xivo-ha maintenance on|off|status` command.

pub mod command;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::fsutil::FileError;
use crate::paths::Paths;
use crate::status::documents::{Component, MaintenanceDoc};
use crate::status::store;

/// How long maintenance lasts unless `--for` says otherwise.
pub const DEFAULT_FOR: Duration = Duration::from_secs(2 * 3600);

/// Where maintenance stands at a given time.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Off,
    On(MaintenanceDoc),
    /// Its deadline passed, its file is still there: to be ended now.
    Expired(MaintenanceDoc),
}

/// The pure decision: `doc` (the file, if present) at `now`.
pub fn phase(doc: Option<MaintenanceDoc>, now: DateTime<Utc>) -> Phase {
    match doc {
        None => Phase::Off,
        Some(doc) if doc.is_on(now) => Phase::On(doc),
        Some(doc) => Phase::Expired(doc),
    }
}

/// The file as it is now (an unreadable one counts as none, with a warning from the store).
pub fn load(paths: &Paths) -> Option<MaintenanceDoc> {
    store::load(paths, Component::Maintenance)
}

/// The file as it is now, or the warning [`load`] would log (for the monitor, which reads it
/// every round and throttles that warning).
pub fn read(paths: &Paths) -> Result<Option<MaintenanceDoc>, String> {
    store::read(paths, Component::Maintenance)
}

/// On at `now`: the file is there and its deadline not passed.
pub fn is_on(paths: &Paths, now: DateTime<Utc>) -> Option<MaintenanceDoc> {
    on_at(load(paths), now)
}

/// `doc` (the file, if present) if it is on at `now`.
pub fn on_at(doc: Option<MaintenanceDoc>, now: DateTime<Utc>) -> Option<MaintenanceDoc> {
    match phase(doc, now) {
        Phase::On(doc) => Some(doc),
        Phase::Off | Phase::Expired(_) => None,
    }
}

/// A maintenance from `now` for `duration`.
pub fn new_doc(
    reason: &str,
    set_by: &str,
    now: DateTime<Utc>,
    duration: Duration,
) -> MaintenanceDoc {
    let until = now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
    let reason = if reason.trim().is_empty() {
        "no reason given".to_owned()
    } else {
        reason.trim().to_owned()
    };
    MaintenanceDoc {
        summary: format!(
            "ON until {} ({reason}), set by {set_by} at {}: the monitor leaves the services and the hourly jobs alone",
            until.format("%Y-%m-%d %H:%M:%S UTC"),
            now.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        reason,
        set_by: set_by.to_owned(),
        set_at: now,
        until,
    }
}

/// Switches maintenance on (or replaces the current one).
pub fn set(paths: &Paths, doc: &MaintenanceDoc) -> Result<(), FileError> {
    store::save(paths, Component::Maintenance, doc)
}

/// Switches it off; returns the maintenance that was on, if any.
pub fn clear(paths: &Paths) -> Result<Option<MaintenanceDoc>, FileError> {
    let doc = load(paths);
    store::remove(paths, Component::Maintenance)?;
    Ok(doc)
}

/// The one line describing `doc` for logs and mails.
pub fn describe(doc: &MaintenanceDoc) -> String {
    format!(
        "\"{}\", set by {} at {}, deadline {}",
        doc.reason,
        doc.set_by,
        doc.set_at.format("%Y-%m-%d %H:%M:%S UTC"),
        doc.until.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// `1h30m`, `90m`, `2h`, `45s`, `1d`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration: give e.g. 2h, 90m, 1h30m or 45s");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Who is switching it: the user behind sudo, else the user, else the uid; and the host.
pub fn who() -> String {
    let user = ["SUDO_USER", "USER"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .or_else(|| {
            let uid = nix::unistd::getuid();
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
                .or_else(|| Some(format!("uid {uid}")))
        })
        .unwrap_or_default();
    format!("{user}@{}", crate::alert::settings::hostname())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn durations_in_hours_minutes_seconds() {
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        for bad in ["", "h", "2x", "1h30", "0m", "-1h"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("is not a duration"), "{bad}: {error}");
        }
    }

    #[test]
    fn it_is_on_until_its_deadline_then_expired() {
        let doc = new_doc(
            " upgrade ",
            "root@xivo1",
            at("2026-12-01T10:00:00Z"),
            DEFAULT_FOR,
        );
        assert_eq!(doc.until, at("2026-12-01T12:00:00Z"));
        assert_eq!(doc.reason, "upgrade");
        assert!(
            doc.summary
                .starts_with("ON until 2026-12-01 12:00:00 UTC (upgrade), set by root@xivo1")
        );
        assert_eq!(phase(None, at("2026-12-01T11:00:00Z")), Phase::Off);
        assert_eq!(
            phase(Some(doc.clone()), at("2026-12-01T11:59:59Z")),
            Phase::On(doc.clone())
        );
        assert_eq!(
            phase(Some(doc.clone()), at("2026-12-01T12:00:00Z")),
            Phase::Expired(doc)
        );
        assert_eq!(
            new_doc("", "u@h", at("2026-12-01T10:00:00Z"), DEFAULT_FOR).reason,
            "no reason given"
        );
    }

    #[test]
    fn set_and_clear_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let now = Utc::now();
        assert_eq!(is_on(&paths, now), None);
        let doc = new_doc("upgrade", "root@xivo1", now, Duration::from_secs(60));
        set(&paths, &doc).unwrap();
        assert_eq!(is_on(&paths, now), Some(doc.clone()));
        assert_eq!(is_on(&paths, now + chrono::Duration::seconds(61)), None);
        assert_eq!(clear(&paths).unwrap(), Some(doc));
        assert_eq!(clear(&paths).unwrap(), None);
        assert!(!paths.state_dir().join("maintenance.json").exists());
    }
}
