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
    let status = match Status::gather(&ctx.paths) {
        Ok(status) => status,
        // ha.conf is unreadable: the components' states all the same, then the error.
        Err(unreadable) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&unreadable).expect("status serialises")
                );
            } else {
                print!("{}", unreadable.render());
            }
            return Err(unreadable.error);
        }
    };
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
