//! `xivo-ha configure disabled | master <slave_ip> | slave <master_ip>`: checks the command
//! line, applies the settings with [`super::configure`] and says what changed and what to do
//! next.

use std::process::ExitCode;

use clap::Args;

use super::{Change, HaConfig, HaError, NodeType};
use crate::context::Context;

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// disabled, master or slave.
    #[arg(value_enum)]
    pub node_type: NodeType,
    /// The peer: the slave's address for a master, the master's for a slave.
    pub peer: Option<String>,
}

/// `xivo-ha configure`.
pub async fn configure(ctx: &Context, args: ConfigureArgs) -> Result<ExitCode, HaError> {
    let outcome = super::configure(ctx, target(&args)?).await?;
    if outcome.changes.is_empty() {
        println!(
            "HA already configured as {}: nothing changed",
            outcome.config.node_type
        );
        return Ok(ExitCode::SUCCESS);
    }
    for change in &outcome.changes {
        println!("{change}");
    }
    println!("Restart the services for the change to take effect: xivo-service restart");
    if outcome
        .changes
        .iter()
        .any(|change| matches!(change, Change::BackupRegistrar { .. }))
    {
        println!("Then resynchronise the devices so that they learn their new registrars.");
    }
    Ok(ExitCode::SUCCESS)
}

/// The settings the command line asks for.
fn target(args: &ConfigureArgs) -> Result<HaConfig, HaError> {
    let peer = match args.node_type {
        NodeType::Disabled => {
            return match &args.peer {
                None => Ok(HaConfig::default()),
                Some(extra) => Err(HaError::Usage(format!(
                    "`configure disabled` takes no address (got `{extra}`)"
                ))),
            };
        }
        NodeType::Master => "slave",
        NodeType::Slave => "master",
    };
    let node_type = args.node_type;
    let Some(address) = args.peer.as_deref() else {
        return Err(HaError::Usage(format!(
            "`configure {node_type}` needs the {peer}'s address: xivo-ha configure {node_type} <{peer}_ip>"
        )));
    };
    Ok(HaConfig {
        node_type,
        remote_address: super::parse_peer(address, peer)?.to_string(),
    })
}
