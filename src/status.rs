//! The HA dashboard (`xivo-ha status`): this node's role and peer, and the latest state each
//! component recorded (monitor verdict, slave services, replication, sync, DB Replic).
//! [`command`] prints it.

pub mod command;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ha::{HaConfig, HaError};
use crate::paths::Paths;
use crate::state;

#[derive(Debug, Serialize)]
pub struct Status {
    pub node_type: crate::ha::NodeType,
    pub remote_address: String,
    /// Each component's latest state document, by component name.
    pub components: BTreeMap<String, serde_json::Value>,
}

impl Status {
    pub fn gather(paths: &Paths) -> Result<Status, HaError> {
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
            crate::ha::NodeType::Disabled => "HA: disabled\n".to_owned(),
            crate::ha::NodeType::Master => {
                format!("HA: master, slave at {}\n", self.remote_address)
            }
            crate::ha::NodeType::Slave => {
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
