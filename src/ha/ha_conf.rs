//! `/etc/xivo/ha.conf`, XiVO's HA settings file, and the sentinel files that follow it
//! (`/var/lib/xivo/is-primary` on a master, `/var/lib/xivo/is-secondary` on a slave).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::HaError;
use crate::fsutil;
use crate::paths::Paths;

/// The role of this node in the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    Disabled,
    Master,
    Slave,
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeType::Disabled => "disabled",
            NodeType::Master => "master",
            NodeType::Slave => "slave",
        })
    }
}

/// The content of ha.conf, field for field as XiVO writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaConfig {
    pub node_type: NodeType,
    /// The peer: the slave's address on a master, the master's on a slave, `""` when disabled.
    #[serde(default)]
    pub remote_address: String,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            node_type: NodeType::Disabled,
            remote_address: String::new(),
        }
    }
}

impl HaConfig {
    /// The peer's address when HA is on, checked with the rules of `configure`
    /// ([`super::check_peer`]); the only way to get it as an address, so that no reader acts on
    /// a peer that `configure` would refuse. The error says why a peer written in ha.conf (by
    /// hand, or by an older tool) is refused; [`HaConfig::peer_in`] names the file and the fix.
    pub fn peer(&self) -> Result<Option<IpAddr>, HaError> {
        let Some(peer) = self.peer_role() else {
            return Ok(None);
        };
        let ip = self
            .remote_address
            .trim()
            .parse()
            .map_err(|_| HaError::BadAddress(self.remote_address.clone()))?;
        super::check_peer(ip, peer).map(Some)
    }

    /// [`HaConfig::peer`] for a command acting on it: a refused peer is the one-line error
    /// naming `paths`' ha.conf and the fix (`xivo-ha configure <role> <peer_ip>`).
    pub fn peer_in(&self, paths: &Paths) -> Result<Option<IpAddr>, HaError> {
        self.peer().map_err(|e| HaError::RefusedPeer {
            path: paths.ha_conf(),
            reason: e.to_string(),
            fix: format!(
                "give the {}'s address with `xivo-ha configure {} <{}_ip>`",
                self.peer_role().unwrap_or("peer"),
                self.node_type,
                self.peer_role().unwrap_or("peer")
            ),
        })
    }

    /// The peer's role (`slave` on a master, `master` on a slave), `None` when disabled.
    fn peer_role(&self) -> Option<&'static str> {
        match self.node_type {
            NodeType::Disabled => None,
            NodeType::Master => Some("slave"),
            NodeType::Slave => Some("master"),
        }
    }

    /// Reads ha.conf; a missing file means disabled. A corrupt file is an error naming the file,
    /// line and column.
    pub fn load(paths: &Paths) -> Result<HaConfig, HaError> {
        let path = paths.ha_conf();
        let Some(bytes) = fsutil::read_optional(&path)? else {
            return Ok(HaConfig::default());
        };
        let config: HaConfig =
            serde_json::from_slice(&bytes).map_err(|e| HaError::CorruptHaConf {
                path: path.clone(),
                line: e.line(),
                column: e.column(),
                reason: strip_position(&e.to_string()),
            })?;
        if config.node_type != NodeType::Disabled
            && config.remote_address.parse::<IpAddr>().is_err()
        {
            return Err(HaError::CorruptHaConf {
                path,
                line: 1,
                column: 1,
                reason: format!(
                    "remote_address `{}` is not an IP address for a {} node",
                    config.remote_address, config.node_type
                ),
            });
        }
        Ok(config)
    }

    /// The bytes XiVO's tools expect in ha.conf.
    pub fn to_file_contents(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(self).expect("ha.conf serialises");
        json.push(b'\n');
        json
    }

    /// Writes ha.conf atomically (when it differs) and sets the sentinel files. Returns whether
    /// anything changed on disk.
    pub fn save(&self, paths: &Paths) -> Result<bool, HaError> {
        let changes = self.stage(paths)?;
        let changed = !changes.is_empty();
        for change in changes {
            change.commit()?;
        }
        Ok(changed)
    }

    /// Prepares ha.conf (when it differs) and the sentinel files beside them, without touching
    /// them (see [`fsutil::Staged`]); empty when the node already is so.
    pub fn stage(&self, paths: &Paths) -> Result<Vec<fsutil::Staged>, HaError> {
        let path = paths.ha_conf();
        let contents = self.to_file_contents();
        let mut changes = Vec::new();
        if fsutil::read_optional(&path)?.as_deref() != Some(contents.as_slice()) {
            changes.push(fsutil::stage(&path, &contents, Some(0o644))?);
        }
        for (flag, present) in [
            (paths.is_primary(), self.node_type == NodeType::Master),
            (paths.is_secondary(), self.node_type == NodeType::Slave),
        ] {
            changes.extend(fsutil::stage_flag_file(&flag, present)?);
        }
        Ok(changes)
    }
}

/// serde_json appends " at line L column C"; the error already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_means_disabled() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            HaConfig::load(&Paths::new(dir.path())).unwrap(),
            HaConfig::default()
        );
    }

    #[test]
    fn reads_what_xivo_writes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(paths.ha_conf().parent().unwrap()).unwrap();
        std::fs::write(
            paths.ha_conf(),
            r#"{"node_type": "slave", "remote_address": "10.0.0.1"}"#,
        )
        .unwrap();
        let config = HaConfig::load(&paths).unwrap();
        assert_eq!(config.node_type, NodeType::Slave);
        assert_eq!(config.remote_address, "10.0.0.1");
    }

    #[test]
    fn corrupt_file_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(paths.ha_conf().parent().unwrap()).unwrap();
        std::fs::write(paths.ha_conf(), "{\n  \"node_type\": \"primary\",\n}").unwrap();
        let message = HaConfig::load(&paths).unwrap_err().to_string();
        assert!(message.contains("ha.conf:2:"), "{message}");
        assert!(message.contains("primary"), "{message}");
    }

    #[test]
    fn a_peer_is_checked_as_on_the_command_line() {
        let slave = |address: &str| HaConfig {
            node_type: NodeType::Slave,
            remote_address: address.into(),
        };
        assert_eq!(
            slave("192.0.2.20").peer().unwrap(),
            Some("192.0.2.20".parse().unwrap())
        );
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
        ] {
            let message = slave(bad).peer().unwrap_err().to_string();
            assert!(
                message.contains(&format!("{bad} is not usable as the master's address")),
                "{message}"
            );
        }
        assert_eq!(HaConfig::default().peer().unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let message = HaConfig {
            node_type: NodeType::Master,
            remote_address: "127.0.0.1".into(),
        }
        .peer_in(&Paths::new(dir.path()))
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("ha.conf: 127.0.0.1 is not usable as the slave's address: ")
                && message.ends_with("`xivo-ha configure master <slave_ip>`"),
            "{message}"
        );
    }

    #[test]
    fn save_sets_sentinels_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let master = HaConfig {
            node_type: NodeType::Master,
            remote_address: "192.0.2.20".into(),
        };
        assert!(master.save(&paths).unwrap());
        assert!(!master.save(&paths).unwrap());
        assert!(paths.is_primary().exists() && !paths.is_secondary().exists());
        assert!(HaConfig::default().save(&paths).unwrap());
        assert!(!paths.is_primary().exists() && !paths.is_secondary().exists());
    }
}
