//! What the copy-back brings home: the files the slave made or changed since the last
//! successful copy-back listed them, not the copies it merely still holds (a message brought
//! home and deleted or moved on the master since, or a file the forward sync mirrored there).
//! The rule ([`since`]) is pure; [`list`] runs GNU `find` on the slave over the sync's own ssh
//! options, the slave's clock read first in the same call, so that the times compared are all
//! the slave's and no clock skew between the nodes enters the rule.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};

use super::SyncError;
use super::ssh::{SshTarget, quote_for_sh};
use crate::status::documents::SlaveListing;

/// Taken off the last listing's time: a file the slave stamped up to this much before that
/// listing is listed again. It covers filesystems that keep whole seconds, the kernel's coarse
/// file clock (a file made just after `date` ran may be stamped a few milliseconds before), and
/// a slave clock that NTP steps back by a fraction of a second. It stays below the time between
/// a slave's last message and the master's copy-back at a failback (the slave's SIP silent for
/// `XIVO_HA_MONITOR_UP_AFTER_MS`, 3 s by default), so a message deleted on the master after that copy-back
/// does not come back.
pub const MARGIN: TimeDelta = TimeDelta::seconds(2);

/// Which of the slave's files a copy-back considers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// Every file under the directories (today's rule, before any listing), and why.
    Everything(String),
    /// Files modified after this instant of the slave's clock.
    ChangedAfter(DateTime<Utc>),
}

impl Since {
    /// The threshold, `None` for everything.
    pub fn after(&self) -> Option<DateTime<Utc>> {
        match self {
            Since::Everything(_) => None,
            Since::ChangedAfter(at) => Some(*at),
        }
    }
}

/// The rule for a copy-back from `remote` (`user@host`), given the last successful listing on
/// record: what changed after it (less [`MARGIN`]); everything when asked (`--all`), when there
/// is none, or when it was of another slave.
pub fn since(previous: Option<&SlaveListing>, remote: &str, all: bool) -> Since {
    if all {
        return Since::Everything("asked for with --all".into());
    }
    match previous {
        None => Since::Everything(format!("no earlier copy-back from {remote} on record")),
        Some(listing) if listing.remote != remote => Since::Everything(format!(
            "the last copy-back on record was from {}, not {remote}",
            listing.remote
        )),
        Some(listing) => Since::ChangedAfter(listing.at - MARGIN),
    }
}

/// The slave's clock now reads earlier than the last listing: it was set back, and files made
/// since may carry times before the threshold. The copy-back then lists everything.
pub fn clock_went_back(previous: &SlaveListing, slave_now: DateTime<Utc>) -> bool {
    slave_now < previous.at
}

/// The slave's files under `dirs`, relative to its tree, and its clock when the listing began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub at: DateTime<Utc>,
    /// Paths relative to the remote root (`var/spool/...`), raw bytes: any file name goes.
    pub files: Vec<Vec<u8>>,
}

/// The remote command: the slave's clock, then every non-directory under each of `dirs` that
/// exists (a missing one is nothing to bring back), modified after `after` when given,
/// NUL-separated. A `find` that fails (an unreadable directory) fails the whole listing.
pub fn script(remote_root: &str, dirs: &[String], after: Option<DateTime<Utc>>) -> String {
    let newer = after
        .map(|at| {
            format!(
                " -newermt @{}.{:09}",
                at.timestamp(),
                at.timestamp_subsec_nanos()
            )
        })
        .unwrap_or_default();
    let dirs: Vec<String> = dirs
        .iter()
        .map(|dir| quote_for_sh(dir.trim_start_matches('/')))
        .collect();
    format!(
        "date +%s.%N && cd {} && for d in {}; do if [ -d \"$d\" ]; then find \"$d\" ! -type d{newer} -print0 || exit 1; fi; done",
        quote_for_sh(remote_root),
        dirs.join(" ")
    )
}

/// Reads [`script`]'s output: `<seconds>.<nanoseconds>\n` then NUL-terminated paths.
pub fn parse(stdout: &[u8]) -> Result<Listed, String> {
    let newline = stdout
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no clock reading in the listing")?;
    let clock = String::from_utf8_lossy(&stdout[..newline]);
    let clock = clock.trim();
    let (secs, nanos) = clock.split_once('.').unwrap_or((clock, "0"));
    let at = secs
        .parse::<i64>()
        .ok()
        .zip(nanos.parse::<u32>().ok())
        .and_then(|(s, n)| DateTime::from_timestamp(s, n))
        .ok_or_else(|| {
            format!("the slave's `date +%s.%N` printed `{clock}` (GNU coreutils' date needed)")
        })?;
    let files = stdout[newline + 1..]
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Listed { at, files })
}

/// Runs [`script`] on the slave over ssh with the sync's key and options.
pub async fn list(
    target: &SshTarget,
    key: &Path,
    remote_root: &str,
    dirs: &[String],
    after: Option<DateTime<Utc>>,
) -> Result<Listed, SyncError> {
    let mut args = target.key_args(key);
    args.extend([target.destination(), script(remote_root, dirs, after)]);
    let output = super::run_tool("ssh", args).await?;
    let what = "listing the files to copy back from";
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(target.explain(what, output.status.code(), &stderr));
    }
    parse(&output.stdout).map_err(|reason| SyncError::Remote {
        what: what.to_owned(),
        target: target.destination(),
        reason,
        hint: "the slave needs GNU find and date (Debian's findutils and coreutils)".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(remote: &str, at: &str) -> SlaveListing {
        SlaveListing {
            remote: remote.into(),
            at: at.parse().unwrap(),
        }
    }

    #[test]
    fn the_rule_is_what_changed_since_the_last_listing_of_that_slave() {
        let last = listing("root@192.0.2.20", "2026-12-01T14:00:00Z");
        assert_eq!(
            since(Some(&last), "root@192.0.2.20", false),
            Since::ChangedAfter("2026-12-01T13:59:58Z".parse().unwrap())
        );
        assert!(matches!(
            since(None, "root@192.0.2.20", false),
            Since::Everything(why) if why.contains("no earlier copy-back from root@192.0.2.20")
        ));
        assert!(matches!(
            since(Some(&last), "root@192.0.2.21", false),
            Since::Everything(why) if why.contains("was from root@192.0.2.20, not root@192.0.2.21")
        ));
        assert!(matches!(
            since(Some(&last), "root@192.0.2.20", true),
            Since::Everything(why) if why.contains("--all")
        ));
        assert!(clock_went_back(
            &last,
            "2026-12-01T13:59:59Z".parse().unwrap()
        ));
        assert!(!clock_went_back(
            &last,
            "2026-12-01T14:00:00Z".parse().unwrap()
        ));
    }

    #[test]
    fn the_script_quotes_and_filters() {
        let dirs = vec![
            "/var/spool/asterisk/voicemail".to_owned(),
            "/it's".to_owned(),
        ];
        let at = "2026-12-01T14:00:00.5Z".parse().unwrap();
        let script = script("/srv/slave root", &dirs, Some(at));
        assert!(
            script.starts_with("date +%s.%N && cd '/srv/slave root' && "),
            "{script}"
        );
        assert!(
            script.contains("for d in 'var/spool/asterisk/voicemail' 'it'\\''s'; do"),
            "{script}"
        );
        assert!(
            script.contains("-newermt @1796133600.500000000 -print0"),
            "{script}"
        );
        assert!(!super::script("/", &dirs, None).contains("-newermt"));
    }

    #[test]
    fn the_output_is_the_clock_then_nul_separated_paths() {
        let listed = parse(b"1796133600.250000000\nvar/a b\0var/new\nline\0").unwrap();
        assert_eq!(
            listed.at,
            "2026-12-01T14:00:00.25Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            listed.files,
            vec![b"var/a b".to_vec(), b"var/new\nline".to_vec()]
        );
        assert!(parse(b"1796133600.250000000\n").unwrap().files.is_empty());
        assert!(parse(b"+%s.N\n").unwrap_err().contains("GNU coreutils"));
        assert!(parse(b"").is_err());
    }
}
