//! `xivo-ha status [--json]`: prints the dashboard of [`super::Status`].

use std::process::ExitCode;

use clap::Args;

use super::Status;
use crate::context::Context;
use crate::ha::HaError;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `xivo-ha status`.
pub fn run(ctx: &Context, args: StatusArgs) -> Result<ExitCode, HaError> {
    let status = Status::gather(&ctx.paths)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).expect("status serialises")
        );
    } else {
        print!("{}", status.render());
    }
    Ok(ExitCode::SUCCESS)
}
