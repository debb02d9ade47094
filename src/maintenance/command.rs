//! `xivo-ha maintenance on [--for DURATION] [--reason TEXT] | off | status`.

use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Subcommand};

use super::{DEFAULT_FOR, parse_duration};
use crate::context::Context;
use crate::fsutil::FileError;

#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Leave the services and the hourly jobs alone until `off` or the deadline.
    On {
        /// How long at most (2h, 90m, 1h30m, 45s); it ends by itself then.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration, default_value = "2h")]
        duration: std::time::Duration,
        /// Why, for `status` and the other administrators.
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// Let the monitor act again.
    Off,
    /// Show whether maintenance mode is on, why, who set it and until when.
    Status,
}

/// `xivo-ha maintenance`.
pub fn run(ctx: &Context, args: MaintenanceArgs) -> Result<ExitCode, FileError> {
    let now = Utc::now();
    match args.action {
        Action::On { duration, reason } => {
            let previous = super::is_on(&ctx.paths, now);
            let doc = super::new_doc(&reason, &super::who(), now, duration);
            super::set(&ctx.paths, &doc)?;
            tracing::info!("maintenance mode on: {}", super::describe(&doc));
            if let Some(previous) = previous {
                println!(
                    "maintenance mode was on ({}); replaced",
                    super::describe(&previous)
                );
            }
            println!("maintenance mode {}", doc.summary);
            let again = if duration == DEFAULT_FOR {
                String::new()
            } else {
                format!(" --for {}s", duration.as_secs())
            };
            println!(
                "reminder: set it on the other node too (xivo-ha maintenance on{again}{}), and `xivo-ha maintenance off` on both when done",
                if doc.reason == "no reason given" {
                    String::new()
                } else {
                    format!(" --reason '{}'", doc.reason.replace('\'', ""))
                }
            );
        }
        Action::Off => match super::clear(&ctx.paths)? {
            Some(doc) if doc.is_on(now) => {
                tracing::info!("maintenance mode off (was {})", super::describe(&doc));
                println!(
                    "maintenance mode off (was {}): the monitor acts again; switch it off on the other node too",
                    super::describe(&doc)
                );
            }
            Some(_) | None => println!("maintenance mode was not on"),
        },
        Action::Status => match super::is_on(&ctx.paths, now) {
            Some(doc) => println!("maintenance mode {}", doc.summary),
            None => println!("maintenance mode off"),
        },
    }
    Ok(ExitCode::SUCCESS)
}
