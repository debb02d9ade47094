//! XiVO's classic command names (`xivo-check-master-status`, `xivo-sync`, ...) as busybox-style
//! entry points of the one binary: the table of names, the subcommand each runs and its
//! classic usage, and the rewrite of an invocation through one of them. [`command`] creates
//! the links (`xivo-ha install-links`).

pub mod command;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// One of XiVO's command names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// The name XiVO's scripts and administrators call.
    pub name: &'static str,
    /// The `xivo-ha` subcommand it runs.
    pub subcommand: &'static str,
    /// Its arguments as XiVO documents them (shown by `<name> --help`).
    pub usage: &'static str,
}

impl Link {
    /// `Usage:` line of `<name> --help`.
    pub fn usage_line(&self) -> String {
        format!("{} {}", self.name, self.usage)
    }
}

/// XiVO's command names, the subcommand each one runs, with XiVO's own arguments.
pub const LINKS: &[Link] = &[
    Link {
        name: "xivo-check-master-status",
        subcommand: "check-master-status",
        usage: "<master_ip>",
    },
    Link {
        name: "xivo-manage-slave-services",
        subcommand: "manage-slave-services",
        usage: "<start|stop>",
    },
    Link {
        name: "xivo-master-slave-db-replication",
        subcommand: "db-replication",
        usage: "<slave_ip>",
    },
    Link {
        name: "xivo-sync",
        subcommand: "sync",
        usage: "[-i | --back]",
    },
    Link {
        name: "xivo-monitoring-update",
        subcommand: "monitoring-update",
        usage: "[--no-reload]",
    },
];

/// The classic name `program` (a path, as in `argv[0]`) was invoked as, if any.
pub fn classic(program: &OsString) -> Option<&'static Link> {
    let name = Path::new(program).file_name()?.to_str()?;
    LINKS.iter().find(|link| link.name == name)
}

/// Turns an invocation through one of XiVO's command names into the matching subcommand, and
/// says which name it was.
pub fn rewrite_args(mut args: Vec<OsString>) -> (Vec<OsString>, Option<&'static Link>) {
    let Some(link) = args.first().and_then(classic) else {
        return (args, None);
    };
    args[0] = OsString::from("xivo-ha");
    args.insert(1, OsString::from(link.subcommand));
    (args, Some(link))
}

#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    #[error("cannot find this program's own path: {0}")]
    OwnPath(std::io::Error),
    #[error("{} exists and is not a link to {}: remove it or pass --force", link.display(), exe.display())]
    Exists { link: PathBuf, exe: PathBuf },
    #[error(transparent)]
    File(#[from] crate::fsutil::FileError),
}

impl LinksError {
    /// A command line that cannot be acted on as given (exit 2).
    pub fn is_usage(&self) -> bool {
        match self {
            LinksError::OwnPath(_) | LinksError::Exists { .. } => true,
            LinksError::File(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn plain_invocations_are_left_alone() {
        assert_eq!(
            rewrite_args(args(&["xivo-ha", "status"])),
            (args(&["xivo-ha", "status"]), None)
        );
    }

    #[test]
    fn classic_names_map_to_their_subcommand() {
        for link in LINKS {
            let invoked = args(&[&format!("/usr/sbin/{}", link.name), "10.0.0.1"]);
            assert_eq!(
                rewrite_args(invoked),
                (args(&["xivo-ha", link.subcommand, "10.0.0.1"]), Some(link))
            );
        }
    }
}
