//! The HA dashboard (`xivo-ha status`, the monitor's `/status`): this node's role and peer, and
//! the latest state document each component left (monitor verdict, slave services,
//! replication, sync, DB Replic).
//!
//! - [`command`]: `xivo-ha status [--json]` prints it.
//! - [`documents`]: the typed contract of those documents, shared by writers and readers.
//! - [`store`]: saving and loading them under `/var/lib/xivo-ha/`.

pub mod command;
pub mod documents;
pub mod store;

use serde::Serialize;

use crate::ha::{HaConfig, HaError};
use crate::paths::Paths;
use documents::Documents;

#[derive(Debug, Serialize)]
pub struct Status {
    pub node_type: crate::ha::NodeType,
    pub remote_address: String,
    /// Each component's latest state document, by component name.
    pub components: Documents,
}

impl Status {
    /// The dashboard; when ha.conf cannot be read, the error and every component's last state
    /// all the same.
    pub fn gather(paths: &Paths) -> Result<Status, Box<Unreadable>> {
        let components = store::load_all(paths);
        match HaConfig::load(paths) {
            Ok(ha) => Ok(Status {
                node_type: ha.node_type,
                remote_address: ha.remote_address,
                components,
            }),
            Err(error) => Err(Box::new(Unreadable { error, components })),
        }
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
        out.push_str(&render_components(&self.components));
        out
    }
}

/// The dashboard of a node whose ha.conf cannot be read: the error, and every component's last
/// state all the same (`{"error": ..., "components": ...}` in JSON).
#[derive(Debug)]
pub struct Unreadable {
    pub error: HaError,
    pub components: Documents,
}

impl Serialize for Unreadable {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut doc = serializer.serialize_struct("Unreadable", 2)?;
        doc.serialize_field("error", &self.error.to_string())?;
        doc.serialize_field("components", &self.components)?;
        doc.end()
    }
}

impl Unreadable {
    /// The component lines of the human form (the error goes to stderr).
    pub fn render(&self) -> String {
        render_components(&self.components)
    }
}

/// One line per component (its `summary`), in name order.
fn render_components(components: &Documents) -> String {
    let mut out = String::new();
    for (component, summary) in components.summaries() {
        out.push_str(&format!("{component}: {summary}\n"));
    }
    if components.is_empty() {
        out.push_str("(no monitor, replication, sync or DB Replic run recorded yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::NodeType;
    use documents::{MonitorDoc, SyncDetails, SyncDoc};

    #[test]
    fn one_line_for_the_role_then_one_per_component_in_name_order() {
        let sync = |summary: &str| SyncDoc {
            summary: summary.into(),
            started_at: chrono::Utc::now(),
            seconds: 1.0,
            ok: true,
            error: None,
            last_success_at: None,
            details: SyncDetails::default(),
        };
        let mut status = Status {
            node_type: NodeType::Master,
            remote_address: "192.0.2.20".into(),
            components: Documents::default(),
        };
        assert_eq!(
            status.render(),
            "HA: master, slave at 192.0.2.20\n(no monitor, replication, sync or DB Replic run recorded yet)\n"
        );
        status.components = Documents {
            sync_back: Some(sync("back ok")),
            sync: Some(sync("to ok")),
            monitor: Some(MonitorDoc {
                summary: "master: hourly jobs".into(),
                ..MonitorDoc::bare(NodeType::Master, chrono::Utc::now())
            }),
            ..Documents::default()
        };
        assert_eq!(
            status.render(),
            "HA: master, slave at 192.0.2.20\nmonitor: master: hourly jobs\nsync: to ok\nsync-back: back ok\n"
        );
    }
}
