//! Every filesystem path xivo-ha touches, under one `--root` prefix so that tests and demos run
//! in a temporary directory instead of `/`.

use std::path::{Path, PathBuf};

/// The filesystem layout of a XiVO node, rooted at `--root` (`/` in production).
#[derive(Clone, Debug)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `absolute` (a path as XiVO knows it, e.g. `/etc/xivo/ha.conf`) under the root.
    pub fn under(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let absolute = absolute.as_ref();
        let relative = absolute.strip_prefix("/").unwrap_or(absolute);
        self.root.join(relative)
    }

    /// XiVO's HA settings file (JSON).
    pub fn ha_conf(&self) -> PathBuf {
        self.under("/etc/xivo/ha.conf")
    }

    /// Present on a master.
    pub fn is_primary(&self) -> PathBuf {
        self.under("/var/lib/xivo/is-primary")
    }

    /// Present on a slave.
    pub fn is_secondary(&self) -> PathBuf {
        self.under("/var/lib/xivo/is-secondary")
    }

    /// XiVO's flag: the telephony services are kept down on this node.
    pub fn services_disabled_flag(&self) -> PathBuf {
        self.under("/var/lib/xivo/disabled")
    }

    /// XiVO CC's flag: DB Replic is enabled on this node.
    pub fn xc_enabled(&self) -> PathBuf {
        self.under("/var/lib/xivo/xc_enabled")
    }

    /// XiVO CC's site configuration (`KEY=value` lines).
    pub fn custom_env(&self) -> PathBuf {
        self.under("/etc/docker/xivo/custom.env")
    }

    /// A provd configuration document (`default` holds the registrars of the devices).
    pub fn provd_config(&self, id: &str) -> PathBuf {
        self.under("/var/lib/xivo-provd/jsondb/configs").join(id)
    }

    /// One directory per installed provisioning plugin.
    pub fn provd_plugins_dir(&self) -> PathBuf {
        self.under("/var/lib/xivo-provd/plugins")
    }

    /// Where xivo-ha keeps its own state files (one JSON file per component).
    pub fn state_dir(&self) -> PathBuf {
        self.under("/var/lib/xivo-ha")
    }

    /// This node's identity, made once on the node itself (see [`crate::node_id`]).
    pub fn node_id(&self) -> PathBuf {
        self.state_dir().join("node-id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_prefixed_by_the_root() {
        let paths = Paths::new("/tmp/node-a");
        assert_eq!(
            paths.ha_conf(),
            PathBuf::from("/tmp/node-a/etc/xivo/ha.conf")
        );
        assert_eq!(
            paths.provd_config("default"),
            PathBuf::from("/tmp/node-a/var/lib/xivo-provd/jsondb/configs/default")
        );
        assert_eq!(
            Paths::new("/").ha_conf(),
            PathBuf::from("/etc/xivo/ha.conf")
        );
    }
}
