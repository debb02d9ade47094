//! `xivo-ha monitoring-update [--conf-dir DIR] [--no-reload]` (XiVO's `xivo-monitoring-update`):
//! runs [`super::update`] and says what it changed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::MonitError;
use crate::context::Context;

#[derive(Debug, Args)]
pub struct MonitoringUpdateArgs {
    /// monit's include directory, under --root [default: XIVO_HA_MONITORING_CONF_DIR or /etc/monit/conf.d].
    #[arg(long)]
    pub conf_dir: Option<PathBuf>,
    /// Write the checks but do not ask monit to reload.
    #[arg(long)]
    pub no_reload: bool,
}

/// `xivo-ha monitoring-update`.
pub fn update(ctx: &Context, args: &MonitoringUpdateArgs) -> Result<ExitCode, MonitError> {
    let outcome = super::update(ctx, args.conf_dir.as_deref(), !args.no_reload)?;
    if outcome.changes.is_empty() {
        println!(
            "monit checks in {} already up to date: nothing changed",
            outcome.dir.display()
        );
    }
    for change in &outcome.changes {
        println!("{change}");
    }
    if let Some(reload) = &outcome.reload {
        println!("{reload}");
    } else if args.no_reload && !outcome.changes.is_empty() {
        println!("monit not reloaded (--no-reload): run `monit reload`");
    }
    Ok(ExitCode::SUCCESS)
}
