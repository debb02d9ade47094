//! `xivo-ha db-replic [--exit-when-idle]`: checks XiVO CC's flag and the settings, then runs
//! DB Replic ([`super::run`]) until SIGTERM/SIGINT, or until caught up when asked.

use std::process::ExitCode;

use clap::Args;

use super::settings::DbReplicSettings;
use super::{DbReplicError, RunOptions};
use crate::context::Context;
use crate::db::DbTarget;

#[derive(Debug, Args)]
pub struct DbReplicArgs {
    /// Stop once every table is delivered to both sinks (one-off backfill), instead of
    /// running until stopped.
    #[arg(long)]
    pub exit_when_idle: bool,
}

/// `xivo-ha db-replic`.
pub async fn run(ctx: &Context, args: DbReplicArgs) -> Result<ExitCode, DbReplicError> {
    let flag = ctx.paths.xc_enabled();
    if !flag.exists() {
        println!(
            "DB Replic is not enabled on this node ({} does not exist): nothing to do",
            flag.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let env = ctx.env()?;
    let settings = DbReplicSettings::load(&env)?;
    let options = RunOptions {
        source: DbTarget::parse("XiVO (source)", ctx.db_url.expose())?,
        paths: ctx.paths.clone(),
        exit_when_idle: args.exit_when_idle,
    };
    super::run(settings, options, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM can be handled");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
