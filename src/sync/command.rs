//! `xivo-ha sync [-i | --back]` (XiVO's `xivo-sync [-i]`): sets up the key (`-i`), or runs one
//! sync to the slave or back from it under the lock, and says what it moved.

use std::process::ExitCode;

use clap::Args;

use super::{
    Direction, KEY_PATH, SyncError, SyncSettings, considered, keys, master_remote, run_recorded,
    skipped_note,
};
use crate::context::Context;
use crate::ha::{HaConfig, NodeType};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Create the master's sync key and install it on the slave (asks the slave's password once
    /// on a terminal when no agent key is accepted).
    #[arg(short = 'i', long = "init", conflicts_with = "back")]
    pub init: bool,
    /// After a failback: bring back from the slave the voicemail and recordings made while it
    /// stood in, never deleting and never overwriting a newer file here.
    #[arg(long)]
    pub back: bool,
    /// With --back: every file of the slave's directories, not only what the slave changed
    /// since the last copy-back (files newer here are still kept, nothing is deleted).
    #[arg(long, requires = "back")]
    pub all: bool,
}

/// `xivo-ha sync [-i | --back]`.
pub async fn run(ctx: &Context, args: SyncArgs) -> Result<ExitCode, SyncError> {
    let ha = HaConfig::load(&ctx.paths)?;
    if args.init {
        if ha.node_type != NodeType::Master {
            return Err(SyncError::NotMaster {
                node_type: ha.node_type,
            });
        }
        let slave = master_remote(ctx, &ha)?;
        let settings = SyncSettings::load(ctx)?;
        let target = settings.target(ctx, slave);
        let key = ctx.paths.under(KEY_PATH);
        let installed = keys::set_up(&target, &key, &settings.authorized_keys).await?;
        println!(
            "created {} ({}) and installed it on {} with {}",
            installed.private.display(),
            installed.public_line,
            target.destination(),
            installed.installed_with
        );
        println!("test it with: {}", keys::test_command(&target, &key));
        return Ok(ExitCode::SUCCESS);
    }
    if ha.node_type != NodeType::Master {
        // As XiVO's xivo-sync: not an error, the slave simply has nothing to push.
        println!(
            "this node is {}, not a master: nothing to sync (the master pushes its files to the slave)",
            ha.node_type
        );
        return Ok(ExitCode::SUCCESS);
    }
    let direction = if args.back {
        Direction::Back { all: args.all }
    } else {
        Direction::ToSlave
    };
    let report = run_recorded(ctx, &ha, direction).await?;
    match direction {
        Direction::ToSlave => println!(
            "synced to {}: {} files ({} bytes) transferred, {} deleted{}",
            report.remote,
            report.files_transferred,
            report.bytes_transferred,
            report.deleted.len(),
            skipped_note(&report.skipped)
        ),
        Direction::Back { .. } => {
            for file in &report.transferred {
                println!("brought back {file}");
            }
            if let Some(backup_dir) = &report.backup_dir {
                for file in &report.replaced {
                    tracing::warn!(
                        "{file} was older here and was replaced by the slave's copy; the master's copy is kept in {}{file}",
                        backup_dir.display()
                    );
                }
            }
            println!(
                "{} files ({} bytes) brought back from {}; newer files on this master were kept, nothing was deleted{}",
                report.files_transferred,
                report.bytes_transferred,
                report.remote,
                considered(report.since)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
