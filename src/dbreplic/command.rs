//! `xivo-ha db-replic [--exit-when-idle] [--take-over-origin]`: checks XiVO CC's flag and the
//! settings, then runs DB Replic ([`super::run`]) until SIGTERM/SIGINT, or until caught up when
//! asked; or gives the origin to this node in both sinks ([`super::claim::take_over`]).

use std::process::ExitCode;

use clap::Args;

use super::claim::{self, Claimant};
use super::settings::DbReplicSettings;
use super::{DbReplicError, RunOptions};
use crate::context::Context;
use crate::db::DbTarget;
use crate::node_id::NodeId;

#[derive(Debug, Args)]
pub struct DbReplicArgs {
    /// Stop once every table is delivered to both sinks (one-off backfill), instead of
    /// running until stopped.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Make DB_REPLIC_ORIGIN this node's in the reporting database and Elasticsearch, where
    /// another node claimed it first (for a node that replaces that one), then exit.
    #[arg(long, conflicts_with = "exit_when_idle")]
    pub take_over_origin: bool,
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
    if args.take_over_origin {
        return take_over_origin(ctx, &settings).await;
    }
    let options = RunOptions {
        source: DbTarget::parse("XiVO (source)", ctx.db_url.expose())?,
        paths: ctx.paths.clone(),
        exit_when_idle: args.exit_when_idle,
    };
    super::run(settings, options, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `--take-over-origin`.
async fn take_over_origin(
    ctx: &Context,
    settings: &DbReplicSettings,
) -> Result<ExitCode, DbReplicError> {
    let me = Claimant::new(NodeId::load_or_create(&ctx.paths)?);
    let stores = claim::take_over(settings, &me)
        .await
        .map_err(|e| DbReplicError::TakeOver(e.message))?;
    println!(
        "origin `{}` is now this node's (node {}, host {}) in {}: start db-replic again",
        settings.origin,
        me.node_id,
        me.hostname,
        stores.join(" and ")
    );
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
