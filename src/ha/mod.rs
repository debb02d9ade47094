//! The HA settings of a node (`xivo-ha configure`): ha.conf and its sentinels, the SIP expiry in
//! the configuration database, and the provisioning backup registrar. Every file is prepared
//! beside its target, then the database step commits in one transaction, then the files are
//! renamed into place, so a failure before the commit leaves the node as it was.
//! [`command`] is the command line's side (arguments, wording).

pub mod command;
pub mod ha_conf;
pub mod provisioning;
pub mod sip_expiry;

use std::fmt;
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
    /// ha.conf names a peer that `configure` refuses (`reason`).
    #[error("{}: {reason}: {fix}", path.display())]
    RefusedPeer {
        path: PathBuf,
        reason: String,
        fix: String,
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
    /// The command line asks for something `configure` cannot do.
    #[error("{0}")]
    Usage(String),
}

/// What `configure` did.
#[derive(Debug)]
pub struct Outcome {
    pub config: HaConfig,
    /// Every change made; empty when the node was already configured so.
    pub changes: Vec<Change>,
}

/// One change `configure` made; `Display` is the line shown to the administrator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// sip.conf's expiry in the configuration database.
    SipExpiry(SipExpiry),
    /// provd's `default` document: the backup registrar and proxy (empty: blanked).
    BackupRegistrar { path: PathBuf, address: String },
    /// ha.conf (and its sentinels).
    HaConf { path: PathBuf, config: HaConfig },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::SipExpiry(expiry) => write!(
                f,
                "SIP expiry set to min {} s, max {} s, default {} s",
                expiry.min, expiry.max, expiry.default
            ),
            Change::BackupRegistrar { path, address } if address.is_empty() => write!(
                f,
                "backup registrar and proxy blanked in {}",
                path.display()
            ),
            Change::BackupRegistrar { path, address } => write!(
                f,
                "backup registrar and proxy set to {address} in {}",
                path.display()
            ),
            Change::HaConf { path, config } => {
                write!(
                    f,
                    "{} written: node type {}",
                    path.display(),
                    config.node_type
                )?;
                match config.node_type {
                    NodeType::Disabled => Ok(()),
                    _ => write!(f, ", peer {}", config.remote_address),
                }
            }
        }
    }
}

/// Parses and checks the peer's address given on the command line.
pub fn parse_peer(address: &str, peer: &'static str) -> Result<IpAddr, HaError> {
    let ip: IpAddr = address
        .trim()
        .parse()
        .map_err(|_| HaError::BadAddress(address.to_owned()))?;
    check_peer(ip, peer)
}

/// The rules for a peer's address, the same wherever one is read (the command line, ha.conf):
/// a host address (not unspecified, multicast or broadcast) that is not this node's own (a
/// node that names itself probes itself and stops its own services). `peer` is the peer's
/// role (`master`, `slave`) for the message.
pub fn check_peer(ip: IpAddr, peer: &'static str) -> Result<IpAddr, HaError> {
    let unusable = |reason| HaError::UnusableAddress {
        address: ip,
        peer,
        reason,
    };
    // `::ffff:127.0.0.1` is 127.0.0.1.
    let canonical = ip.to_canonical();
    if canonical.is_unspecified() || canonical.is_multicast() {
        return Err(unusable("it is not a host address"));
    }
    if crate::net::is_broadcast(canonical) {
        return Err(unusable("it is a broadcast address, not a host's"));
    }
    if crate::net::is_own_address(canonical) {
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

    // Every file is prepared beside its target first, then the database commits, then the
    // files are renamed into place: a failure before the commit leaves everything as it was
    // (dropping the prepared files removes them).
    let mut prepared = Vec::new();
    if let (Some(registrar), true) = (&registrar, registrar_changed) {
        prepared.push(registrar.stage()?);
        changes.push(Change::BackupRegistrar {
            path: registrar.path.clone(),
            address: backup.unwrap_or_default().to_owned(),
        });
    }
    let ha_files = target.stage(paths)?;
    let ha_changed = !ha_files.is_empty();
    prepared.extend(ha_files);

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
    transaction.commit().await.map_err(sql)?;
    if !changed_expiry.is_empty() {
        changes.insert(0, Change::SipExpiry(expiry));
    }

    for file in prepared {
        file.commit()?;
    }
    if ha_changed {
        changes.push(Change::HaConf {
            path: paths.ha_conf(),
            config: target.clone(),
        });
    }
    if current != target {
        tracing::info!(from = %current.node_type, to = %target.node_type, "HA settings changed");
    }
    Ok(Outcome {
        config: target,
        changes,
    })
}
