//! The HA dashboard (`xivo-ha status`): this node's role and peer, and the latest state each
//! component recorded (monitor verdict, slave services, replication, sync, DB Replic).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::paths::Paths;
use crate::settings::{HaConfig, SettingsError};
use crate::state;

#[derive(Debug, Serialize)]
pub struct Status {
    pub node_type: crate::settings::NodeType,
    pub remote_address: String,
    /// Each component's latest state document, by component name.
    pub components: BTreeMap<String, serde_json::Value>,
}

impl Status {
    pub fn gather(paths: &Paths) -> Result<Status, SettingsError> {
        let ha = HaConfig::load(paths)?;
        Ok(Status {
            node_type: ha.node_type,
            remote_address: ha.remote_address,
            components: state::load_all(paths),
        })
    }

    /// The human form: one line for the role, one per component (its `summary`).
    pub fn render(&self) -> String {
        let mut out = match self.node_type {
            crate::settings::NodeType::Disabled => "HA: disabled\n".to_owned(),
            crate::settings::NodeType::Master => {
                format!("HA: master, slave at {}\n", self.remote_address)
            }
            crate::settings::NodeType::Slave => {
                format!("HA: slave, master at {}\n", self.remote_address)
            }
        };
        for (component, value) in &self.components {
            let summary = match value.get("summary").and_then(|s| s.as_str()) {
                Some(summary) => summary.to_owned(),
                None => value.to_string(),
            };
            out.push_str(&format!("{component}: {summary}\n"));
        }
        if self.components.is_empty() {
            out.push_str("(no monitor, replication, sync or DB Replic run recorded yet)\n");
        }
        out
    }
}
