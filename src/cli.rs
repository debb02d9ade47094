//! The command line: the global options, the subcommands (each one's arguments and function
//! live in its component's `command` module), parsing (with XiVO's classic names of
//! [`crate::links`] and the settings this node has, in the help texts), logging, and the
//! dispatch, where a command's error becomes the one line and the exit code of
//! [`crate::Error`]. Output for the user goes to stdout, logs to stderr.

use std::ffi::OsString;
use std::fmt::Display;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::context::Context;
use crate::error::Result;
use crate::links::{self, Link};
use crate::{alert, dbreplic, doctor, ha, maintenance, monit, monitor, replication, status, sync};

#[derive(Debug, Parser)]
#[command(
    name = "xivo-ha",
    version,
    about = "High availability for a pair of XiVO servers"
)]
pub struct Cli {
    /// Prefix of every filesystem path the program touches (tests and demos use a temp dir).
    #[arg(long, global = true, env = "XIVO_HA_ROOT", default_value = "/")]
    pub root: PathBuf,
    /// The local XiVO configuration database: a PostgreSQL URL or key=value string
    /// [default: XIVO_HA_DB from the environment or the settings file, else XiVO's local socket].
    #[arg(long, global = true)]
    pub db: Option<String>,
    /// The KEY=value settings file [default: <root>/etc/docker/xivo/custom.env].
    #[arg(long, global = true, env = "XIVO_HA_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Log lines (on stderr) for people or for a log collector
    /// [default: XIVO_HA_LOG_FORMAT from the environment or the settings file, else human].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show this node's HA role and the latest state of each component.
    Status(status::command::StatusArgs),
    /// Set the HA settings: disabled, master <slave_ip> or slave <master_ip>.
    Configure(ha::command::ConfigureArgs),
    /// The sidecar: probes the master and fails over on a slave, runs the hourly jobs on a master.
    Monitor(monitor::command::MonitorArgs),
    /// One probe round of the master (XiVO's cron job): stops the slave's services when it
    /// answers, starts them when it does not. Only on a slave.
    CheckMasterStatus(monitor::command::CheckArgs),
    /// Start or stop the slave's telephony containers.
    ManageSlaveServices(monitor::command::ManageArgs),
    /// Copy the configuration database to the slave (XiVO's xivo-master-slave-db-replication).
    DbReplication(replication::command::DbReplicationArgs),
    /// Mirror the master's files to the slave over SSH (`-i`: set up the key; `--back`: bring
    /// back voicemail and recordings after a failback).
    Sync(sync::command::SyncArgs),
    /// DB Replic: forward cel and queue_log to XiVO CC's reporting database and Elasticsearch.
    DbReplic(dbreplic::command::DbReplicArgs),
    /// Check every condition HA needs on this node's role; exit 1 when one fails.
    Doctor(doctor::command::DoctorArgs),
    /// Regenerate monit's checks for what runs on this node, then reload monit.
    MonitoringUpdate(monit::command::MonitoringUpdateArgs),
    /// Create XiVO's classic command names as links to this binary in DIR.
    InstallLinks(links::command::InstallLinksArgs),
    /// Print the settings reference generated from the catalog (env/custom.env, docs/settings.md).
    #[command(hide = true)]
    Settings(crate::settings::command::SettingsArgs),
    /// Maintenance mode: the monitor leaves the services and the hourly jobs alone (upgrades).
    Maintenance(maintenance::command::MaintenanceArgs),
}

/// The whole program: parse, set up logging and the runtime, run, print one line on error.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let (args, link) = links::rewrite_args(args);
    let cli = parse(args, link);
    let start = match Context::start(cli.root.clone(), cli.db.clone(), cli.env_file.clone()) {
        Ok(start) => start,
        Err(error) => {
            let error = crate::Error::from(error);
            eprintln!("xivo-ha: error: {error}");
            return error.exit_code();
        }
    };
    init_logging(
        cli.log_format.unwrap_or(start.global.log_format),
        &start.global.log,
    );
    for warning in &start.warnings {
        tracing::warn!("{warning}");
    }
    crate::db::trust_ca_file(start.global.pg_ca_file.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("xivo-ha: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let result = run(start.ctx, cli.command).await;
        // The alerts this command raised go out before it exits (bounded: a mail server that
        // does not answer is recorded as such, and the command's result stands).
        alert::flush(ALERT_FLUSH).await;
        result
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xivo-ha: error: {error}");
            error.exit_code()
        }
    }
}

/// How long a command waits at its end for its alert mails to go out.
const ALERT_FLUSH: std::time::Duration = std::time::Duration::from_secs(30);

/// The clap definition, its usage in XiVO's words when invoked through a classic name.
pub fn command(link: Option<&Link>) -> clap::Command {
    let command = Cli::command();
    match link {
        Some(link) => {
            command.mut_subcommand(link.subcommand, |sub| sub.override_usage(link.usage_line()))
        }
        None => command,
    }
}

/// Parses `args` (already rewritten from a classic name); exits on a bad command line or after
/// printing the help, which then shows the settings this node has where they are not the
/// defaults.
fn parse(args: Vec<OsString>, link: Option<&Link>) -> Cli {
    let mut command = command(link);
    let matches = match command.clone().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => match help_context(&args) {
            Some(ctx) => with_configured(command.clone(), &ctx)
                .try_get_matches_from(&args)
                .unwrap_or_else(|e| e.exit()),
            None => e.exit(),
        },
        Err(e) => e.exit(),
    };
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// The context a command line asking for help names: its global options as far as they parse,
/// with the environment and the defaults for the rest.
fn help_context(args: &[OsString]) -> Option<Context> {
    let without_help = args.iter().filter(|a| *a != "--help" && *a != "-h");
    let matches = Cli::command()
        .ignore_errors(true)
        .disable_help_subcommand(true)
        .try_get_matches_from(without_help)
        .ok()?;
    Context::start(
        matches.get_one::<PathBuf>("root")?.clone(),
        matches.get_one::<String>("db").cloned(),
        matches.get_one::<PathBuf>("env_file").cloned(),
    )
    .ok()
    .map(|start| start.ctx)
}

/// `command` with, after the help of each subcommand that has some, the settings of this node
/// that differ from the defaults.
fn with_configured(mut command: clap::Command, ctx: &Context) -> clap::Command {
    let notes = [
        (
            &["db-replication"][..],
            configured_note(ctx, replication::command::configured(ctx)),
        ),
        (
            &["monitor", "check-master-status", "manage-slave-services"],
            configured_note(ctx, monitor::command::configured(ctx)),
        ),
    ];
    for (subcommands, note) in notes {
        let Some(note) = note else { continue };
        for name in subcommands {
            command = command.mut_subcommand(name, |sub| sub.after_help(note.clone()));
        }
    }
    command
}

fn configured_note(ctx: &Context, lines: Result<Vec<String>, impl Display>) -> Option<String> {
    match lines {
        Ok(lines) if lines.is_empty() => None,
        Ok(lines) => Some(format!(
            "Configured on this node ({} and the environment), differing from the defaults:\n  {}",
            ctx.env_file.display(),
            lines.join("\n  ")
        )),
        Err(e) => Some(format!("This node's settings cannot be read: {e}")),
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: not in cron mail, log files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs one parsed command in its context (see [`Context::start`]): each command returns its
/// component's error, wrapped here.
pub async fn run(ctx: Context, command: Command) -> Result<ExitCode> {
    if raises_alerts(&command) {
        alert::install(&ctx);
    }
    Ok(match command {
        Command::Status(args) => status::command::run(&ctx, args)?,
        Command::Configure(args) => ha::command::configure(&ctx, args).await?,
        Command::InstallLinks(args) => links::command::install(&args)?,
        Command::Sync(args) => sync::command::run(&ctx, args).await?,
        Command::MonitoringUpdate(args) => monit::command::update(&ctx, &args)?,
        Command::CheckMasterStatus(args) => {
            monitor::command::check_master_status(&ctx, args).await?
        }
        Command::ManageSlaveServices(args) => {
            monitor::command::manage_slave_services(&ctx, args).await?
        }
        Command::Monitor(args) => monitor::command::run(&ctx, args).await?,
        Command::DbReplication(args) => replication::command::run(&ctx, args).await?,
        Command::Doctor(args) => doctor::command::run(&ctx, args).await,
        Command::DbReplic(args) => dbreplic::command::run(&ctx, args).await?,
        Command::Settings(args) => crate::settings::command::run(&args),
        Command::Maintenance(args) => maintenance::command::run(&ctx, args)?,
    })
}

/// The commands that may raise an alert (the others never start the alert task).
fn raises_alerts(command: &Command) -> bool {
    match command {
        Command::Monitor(_)
        | Command::CheckMasterStatus(_)
        | Command::ManageSlaveServices(_)
        | Command::DbReplication(_)
        | Command::Sync(_)
        | Command::DbReplic(_) => true,
        Command::Status(_)
        | Command::Configure(_)
        | Command::Doctor(_)
        | Command::MonitoringUpdate(_)
        | Command::InstallLinks(_)
        | Command::Maintenance(_)
        | Command::Settings(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Each classic usage names only what its subcommand takes: its flags, and its positional
    /// argument by name or by its values.
    #[test]
    fn classic_usages_name_the_subcommands_own_arguments() {
        let cli = Cli::command();
        for link in links::LINKS {
            let sub = cli
                .find_subcommand(link.subcommand)
                .unwrap_or_else(|| panic!("{}: no subcommand {}", link.name, link.subcommand));
            for token in link.usage.split(|c| " []".contains(c)) {
                let known = if let Some(long) = token.strip_prefix("--") {
                    sub.get_arguments().any(|a| a.get_long() == Some(long))
                } else if let Some(short) = token.strip_prefix('-') {
                    sub.get_arguments()
                        .any(|a| a.get_short().map(String::from).as_deref() == Some(short))
                } else if let Some(inner) = token.strip_prefix('<') {
                    let inner = inner.trim_end_matches('>');
                    sub.get_positionals().any(|a| {
                        a.get_id() == inner
                            || inner.split('|').all(|value| {
                                a.get_possible_values()
                                    .iter()
                                    .any(|p| p.matches(value, false))
                            })
                    })
                } else {
                    token.is_empty() || token == "|"
                };
                assert!(
                    known,
                    "{}: `{token}` is not an argument of {}",
                    link.name, link.subcommand
                );
            }
        }
    }
}
