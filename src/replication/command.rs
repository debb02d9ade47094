//! `xivo-ha db-replication <slave_ip>` (XiVO's `xivo-master-slave-db-replication <slave_ip>`):
//! where to read and write from the command line and the settings, one run recorded for
//! `status`, what it did with the slave's changes and its summary printed; and the settings this node has that differ from the defaults,
//! for the command's help.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;

use super::merge::MergeList;
use super::target::{self, ENV_PREFIX, SlaveDbSettings};
use super::{Options, ReplicationError, run_and_record};
use crate::context::Context;
use crate::ha::HaConfig;
use crate::secret::Secret;
use crate::settings::differing;

#[derive(Debug, Args)]
pub struct DbReplicationArgs {
    /// The slave's address: its database `asterisk` on port 5432 receives the configuration.
    pub slave_ip: String,
    /// The master database to read [default: the global --db].
    #[arg(long, value_name = "URL")]
    pub source_db: Option<Secret>,
    /// The slave database to write [default: `asterisk` on <slave_ip>:5432, user and password
    /// from XIVO_HA_SLAVE_DB_*].
    #[arg(long, value_name = "URL")]
    pub target_db: Option<Secret>,
    /// Copy every table, even those unchanged since the last replication.
    #[arg(long)]
    pub full: bool,
}

/// `xivo-ha db-replication`: replicate to the slave, record the state, print the summary.
pub async fn run(ctx: &Context, args: DbReplicationArgs) -> Result<ExitCode, ReplicationError> {
    // The rules of `configure`, for the argument (a usage error) and for ha.conf, whether or
    // not --target-db says where the data goes: nothing is read or written before.
    let ip =
        crate::ha::parse_peer(&args.slave_ip, "slave").map_err(ReplicationError::BadSlaveIp)?;
    HaConfig::load(&ctx.paths)?.peer_in(&ctx.paths)?;
    let target = match &args.target_db {
        Some(url) => target::explicit("slave", url.expose())?,
        None => SlaveDbSettings::load(ctx)?.target(ip),
    };
    let source = target::explicit(
        "master",
        args.source_db.as_ref().unwrap_or(&ctx.db_url).expose(),
    )?;
    let options = Options {
        full: args.full,
        progress: std::io::stdout().is_terminal(),
        merge: MergeList::load(ctx)?,
    };
    let report = run_and_record(ctx, &source, &target, options)
        .await
        .inspect_err(|e| {
            // XiVO's script's words, which administrators and their scripts look for.
            eprintln!(
                "Slave replication failed: {}",
                super::one_line(&e.to_string())
            );
        })?;
    if let Some(text) = super::slave_changes_mail(&report.merge, &report.slave_changes) {
        println!("{text}");
    }
    println!("{}", report.summary());
    Ok(ExitCode::SUCCESS)
}

/// The slave connection settings of this node that differ from the defaults, one line each
/// (`port 5433 (XIVO_HA_SLAVE_DB_PORT)`); the password is only said to be set.
pub fn configured(ctx: &Context) -> Result<Vec<String>, ReplicationError> {
    let settings = SlaveDbSettings::load(ctx)?;
    let defaults: SlaveDbSettings = envy::prefixed(ENV_PREFIX)
        .from_iter(std::iter::empty::<(String, String)>())
        .expect("every slave database setting has a default");
    let mut lines = differing(
        ENV_PREFIX,
        vec![
            (
                "port",
                "PORT",
                settings.port.to_string(),
                defaults.port.to_string(),
            ),
            ("database", "NAME", settings.name, defaults.name),
            ("user", "USER", settings.user, defaults.user),
            ("sslmode", "SSLMODE", settings.sslmode, defaults.sslmode),
            (
                "connect timeout",
                "CONNECT_TIMEOUT_S",
                format!("{} s", settings.connect_timeout_s),
                format!("{} s", defaults.connect_timeout_s),
            ),
        ],
    );
    if settings.password.is_some() {
        lines.push(format!("password set ({ENV_PREFIX}PASSWORD)"));
    }
    Ok(lines)
}
