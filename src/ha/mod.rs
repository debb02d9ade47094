//! The HA settings of a node (`xivo-ha configure`): ha.conf and its sentinels, the SIP expiry in
//! the configuration database, and the provisioning backup registrar. The database step runs in
//! one transaction before any file is replaced, so a failure leaves the node as it was.

pub mod ha_conf;
pub mod provisioning;
pub mod sip_expiry;

use std::net::IpAddr;
use std::path::PathBuf;

use crate::context::Context;
use crate::db::{DbError, error_reason};
use crate::fsutil::FileError;
pub use ha_conf::{HaConfig, NodeType};
use provisioning::DefaultRegistrar;
use sip_expiry::SipExpiry;

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("{}:{line}:{column}: {reason}: fix the file or remove it (no ha.conf means HA disabled)", path.display())]
    CorruptHaConf {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{}: {reason}: provd's `default` configuration must be a JSON object", path.display())]
    CorruptProvdConfig { path: PathBuf, reason: String },
    #[error("`{0}` is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("{address} is not usable as the {peer}'s address: {reason}")]
    UnusableAddress {
        address: IpAddr,
        peer: &'static str,
        reason: &'static str,
    },
    #[error(
        "the configuration database {target} has no `staticsip` table: point --db at XiVO's `asterisk` database"
    )]
    NoStaticsip { target: String },
    #[error(
        "no provd `default` configuration at {}: a master gives its devices the slave as backup registrar through it; is xivo-provd installed?",
        path.display()
    )]
    NoProvdConfig { path: PathBuf },
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What `configure` did.
#[derive(Debug)]
pub struct Outcome {
    pub config: HaConfig,
    /// One line per change made; empty when the node was already configured so.
    pub changes: Vec<String>,
}

/// Parses and checks the peer's address given on the command line.
pub fn parse_peer(address: &str, peer: &'static str) -> Result<IpAddr, HaError> {
    let ip: IpAddr = address
        .trim()
        .parse()
        .map_err(|_| HaError::BadAddress(address.to_owned()))?;
    let unusable = |reason| HaError::UnusableAddress {
        address: ip,
        peer,
        reason,
    };
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(unusable("it is not a host address"));
    }
    if crate::net::is_own_address(ip) {
        return Err(unusable(
            "it is this node's own address; give the other node's",
        ));
    }
    Ok(ip)
}

/// Applies the HA settings for `target` to this node. Idempotent.
pub async fn configure(ctx: &Context, target: HaConfig) -> Result<Outcome, HaError> {
    let paths = &ctx.paths;
    let current = HaConfig::load(paths)?;
    let mut changes = Vec::new();

    // Provisioning: a master hands out the slave as backup, disabled blanks it, a slave keeps it.
    let backup = match target.node_type {
        NodeType::Master => Some(target.remote_address.as_str()),
        NodeType::Disabled => Some(""),
        NodeType::Slave => None,
    };
    let mut registrar = match backup {
        Some(_) => DefaultRegistrar::load(paths)?,
        None => None,
    };
    if target.node_type == NodeType::Master && registrar.is_none() {
        return Err(HaError::NoProvdConfig {
            path: paths.provd_config("default"),
        });
    }
    let registrar_changed = match (&mut registrar, backup) {
        (Some(registrar), Some(address)) => registrar.set_backup(address),
        _ => false,
    };

    // Database first, in one transaction; the provd file is written just before the commit and
    // put back if the commit fails.
    let db = ctx.config_db()?;
    let mut client = db.connect().await?;
    let sql = |e: tokio_postgres::Error| HaError::Db(db.query_error(error_reason(&e)));
    if !sip_expiry::has_staticsip_table(&client)
        .await
        .map_err(sql)?
    {
        return Err(HaError::NoStaticsip {
            target: db.describe(),
        });
    }
    let transaction = client.transaction().await.map_err(sql)?;
    let expiry = SipExpiry::for_node(target.node_type);
    let changed_expiry = sip_expiry::apply(&transaction, expiry).await.map_err(sql)?;
    if !changed_expiry.is_empty() {
        changes.push(format!(
            "SIP expiry set to min {} s, max {} s, default {} s",
            expiry.min, expiry.max, expiry.default
        ));
    }
    if let (Some(registrar), true) = (&registrar, registrar_changed) {
        registrar.write()?;
        if let Err(e) = transaction.commit().await {
            registrar.restore()?;
            return Err(sql(e));
        }
        changes.push(match backup {
            Some("") | None => format!(
                "backup registrar and proxy blanked in {}",
                registrar.path.display()
            ),
            Some(address) => format!(
                "backup registrar and proxy set to {address} in {}",
                registrar.path.display()
            ),
        });
    } else {
        transaction.commit().await.map_err(sql)?;
    }

    if target.save(paths)? {
        changes.push(format!(
            "{} written: node type {}{}",
            paths.ha_conf().display(),
            target.node_type,
            match target.node_type {
                NodeType::Disabled => String::new(),
                _ => format!(", peer {}", target.remote_address),
            }
        ));
    }
    if current != target {
        tracing::info!(from = %current.node_type, to = %target.node_type, "HA settings changed");
    }
    Ok(Outcome {
        config: target,
        changes,
    })
}
