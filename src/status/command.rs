//! `xivo-ha status [--json]`: prints the dashboard of [`super::Status`].

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

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
    match Status::gather(&ctx.paths) {
        Ok(status) => {
            print(&status, args.json, || status.render());
            Ok(ExitCode::SUCCESS)
        }
        // ha.conf is unreadable: the components' states all the same, then the error.
        Err(unreadable) => {
            print(&unreadable, args.json, || unreadable.render());
            Err(unreadable.error)
        }
    }
}

/// `doc` on stdout: as JSON with `--json`, else as `render` writes it.
fn print(doc: &impl Serialize, json: bool, render: impl FnOnce() -> String) {
    if json {
        let text = serde_json::to_string_pretty(doc).expect("status serialises");
        println!("{text}");
    } else {
        print!("{}", render());
    }
}
