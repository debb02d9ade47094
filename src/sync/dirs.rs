//! The directory lists of the file sync: what the master pushes to the slave every hour (XiVO's
//! `xivo-sync` list) and what `sync --back` brings back from the slave after a failback, with
//! the checks that keep a configured list from ever mirroring (and deleting) too much, and
//! whether the two lists overlap ([`overlap`]).

/// What the master mirrors to the slave, as XiVO's `xivo-sync` does: the dial plan and Asterisk
/// files that the web interface does not keep in the database, music on hold, certificates and
/// the sounds administrators upload. Override with `XIVO_HA_SYNC_DIRS`.
pub const SYNC_DIRS: &[&str] = &[
    "/etc/asterisk/extensions_extra.d",
    "/etc/xivo/asterisk",
    "/var/lib/asterisk/agi-bin",
    "/var/lib/asterisk/moh",
    "/var/lib/xivo/certificates",
    "/var/lib/xivo/sounds/acd",
    "/var/lib/xivo/sounds/playback",
];

/// What the slave may have recorded while it stood in for the master: voicemail messages and
/// call recordings (Asterisk's MixMonitor default directory, where XiVO's call recording
/// writes). Override with `XIVO_HA_SYNC_BACK_DIRS`.
pub const BACK_DIRS: &[&str] = &[
    "/var/spool/asterisk/voicemail",
    "/var/spool/asterisk/monitor",
];

/// Parses a configured list (commas or whitespace between entries) and checks each entry: an
/// absolute path, no `.` or `..` segment, and never `/` itself, since `--delete-after` on `/`
/// would wipe the slave.
pub fn parse_list(text: &str) -> Result<Vec<String>, String> {
    let dirs: Vec<String> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .map(|entry| entry.trim_end_matches('/').to_owned())
        .collect();
    if dirs.is_empty() {
        return Err("the list is empty".into());
    }
    for dir in &dirs {
        check(dir)?;
    }
    Ok(dirs)
}

fn check(dir: &str) -> Result<(), String> {
    if dir.is_empty() {
        return Err("`/` cannot be synced: list directories below it".into());
    }
    if !dir.starts_with('/') {
        return Err(format!("`{dir}` is not an absolute path"));
    }
    if dir
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!("`{dir}` has a `.` or `..` segment"));
    }
    Ok(())
}

/// The first directory of `forward` (`XIVO_HA_SYNC_DIRS`) that is one of `back`
/// (`XIVO_HA_SYNC_BACK_DIRS`), holds one or lies inside one, with that back directory: there
/// the forward sync's `--delete-after` reaches what the copy-back brings home. Whole path
/// segments are compared (`/a/b` does not hold `/a/bc`).
pub fn overlap<'a>(forward: &'a [String], back: &'a [String]) -> Option<(&'a str, &'a str)> {
    use std::path::Path;
    forward.iter().find_map(|dir| {
        back.iter()
            .find(|back_dir| {
                Path::new(dir).starts_with(back_dir) || Path::new(back_dir).starts_with(dir)
            })
            .map(|back_dir| (dir.as_str(), back_dir.as_str()))
    })
}

/// The defaults as owned strings.
pub fn defaults(list: &[&str]) -> Vec<String> {
    list.iter().map(|dir| (*dir).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_the_checks() {
        for dir in SYNC_DIRS.iter().chain(BACK_DIRS) {
            check(dir).unwrap();
        }
    }

    #[test]
    fn lists_accept_commas_and_whitespace() {
        assert_eq!(
            parse_list(" /etc/a, /var/b/\n/var/c ").unwrap(),
            vec!["/etc/a", "/var/b", "/var/c"]
        );
    }

    #[test]
    fn the_default_lists_do_not_overlap() {
        assert_eq!(overlap(&defaults(SYNC_DIRS), &defaults(BACK_DIRS)), None);
    }

    #[test]
    fn a_forward_dir_overlaps_the_same_dir_a_parent_or_a_child() {
        let back = defaults(BACK_DIRS);
        let list = |dirs: &[&str]| defaults(dirs);
        for (forward, expected) in [
            (
                "/var/spool/asterisk/voicemail",
                "/var/spool/asterisk/voicemail",
            ),
            ("/var/spool/asterisk", "/var/spool/asterisk/voicemail"),
            ("/var", "/var/spool/asterisk/voicemail"),
            (
                "/var/spool/asterisk/monitor/2026",
                "/var/spool/asterisk/monitor",
            ),
            (
                "/var/spool/asterisk/voicemail/default/1000",
                "/var/spool/asterisk/voicemail",
            ),
        ] {
            let forward = list(&["/etc/xivo/asterisk", forward]);
            assert_eq!(
                overlap(&forward, &back),
                Some((forward[1].as_str(), expected)),
                "{forward:?}"
            );
        }
    }

    #[test]
    fn a_shared_prefix_that_is_not_a_whole_segment_is_no_overlap() {
        let back = defaults(BACK_DIRS);
        for forward in [
            "/var/spool/asterisk/voice",
            "/var/spool/asterisk/voicemail-old",
            "/var/spool/asterisk/monitoring",
            "/var/spool/asterisk/outgoing",
        ] {
            assert_eq!(overlap(&defaults(&[forward]), &back), None, "{forward}");
        }
    }

    #[test]
    fn dangerous_entries_are_refused() {
        for bad in ["/", "etc/asterisk", "/etc/../root", "/etc/./x", "", " , "] {
            assert!(parse_list(bad).is_err(), "{bad:?} accepted");
        }
    }
}
