//! The command line: clap definitions, dispatch to the library, and XiVO's classic command
//! names (`xivo-check-master-status`, `xivo-sync`, ...) as busybox-style entry points of the one
//! binary. Output for the user goes to stdout, logs to stderr.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::ha::{self, HaConfig, NodeType};
use crate::status::Status;

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
    /// The local XiVO configuration database: a PostgreSQL URL or key=value string.
    #[arg(
        long,
        global = true,
        env = "XIVO_HA_DB",
        default_value = crate::db::DEFAULT_CONFIG_DB,
        hide_env_values = true
    )]
    pub db: String,
    /// The KEY=value settings file [default: <root>/etc/docker/xivo/custom.env].
    #[arg(long, global = true, env = "XIVO_HA_ENV_FILE")]
    pub env_file: Option<PathBuf>,
    /// Log lines (on stderr) for people or for a log collector.
    #[arg(long, global = true, env = "XIVO_HA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
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
    Status(StatusArgs),
    /// Set the HA settings: disabled, master <slave_ip> or slave <master_ip>.
    Configure(ConfigureArgs),
    /// The sidecar: probes the master and fails over on a slave, runs the hourly jobs on a master.
    Monitor(crate::monitor::MonitorArgs),
    /// One probe round of the master (XiVO's cron job): stops the slave's services when it
    /// answers, starts them when it does not. Only on a slave.
    CheckMasterStatus(crate::monitor::CheckArgs),
    /// Start or stop the slave's telephony containers.
    ManageSlaveServices(crate::monitor::ManageArgs),
    /// Copy the configuration database to the slave (XiVO's xivo-master-slave-db-replication).
    DbReplication(crate::replication::DbReplicationArgs),
    /// Mirror the master's files to the slave over SSH (`-i`: set up the key; `--back`: bring
    /// back voicemail and recordings after a failback).
    Sync(crate::sync::SyncArgs),
    /// DB Replic: forward cel and queue_log to XiVO CC's reporting database and Elasticsearch.
    DbReplic(crate::dbreplic::DbReplicArgs),
    /// Check every condition HA needs on this node's role; exit 1 when one fails.
    Doctor(crate::doctor::DoctorArgs),
    /// Regenerate monit's checks for what runs on this node, then reload monit.
    MonitoringUpdate(MonitoringUpdateArgs),
    /// Create XiVO's classic command names as links to this binary in DIR.
    InstallLinks(InstallLinksArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// disabled, master or slave.
    #[arg(value_enum)]
    pub node_type: NodeType,
    /// The peer: the slave's address for a master, the master's for a slave.
    pub peer: Option<String>,
}

#[derive(Debug, Args)]
pub struct InstallLinksArgs {
    /// Where to create the links (e.g. /usr/sbin).
    pub dir: PathBuf,
    /// Replace files of the same name that are not already links to this binary.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct MonitoringUpdateArgs {
    /// monit's include directory, under --root [default: XIVO_HA_MONITORING_CONF_DIR or /etc/monit/conf.d].
    #[arg(long)]
    pub conf_dir: Option<PathBuf>,
    /// Write the checks but do not ask monit to reload.
    #[arg(long)]
    pub no_reload: bool,
}

/// XiVO's command names and the subcommand each one runs, with XiVO's own arguments.
pub const LINKS: &[(&str, &str)] = &[
    ("xivo-check-master-status", "check-master-status"),
    ("xivo-manage-slave-services", "manage-slave-services"),
    ("xivo-master-slave-db-replication", "db-replication"),
    ("xivo-sync", "sync"),
    ("xivo-monitoring-update", "monitoring-update"),
];

/// Turns an invocation through one of XiVO's command names into the matching subcommand.
pub fn rewrite_args(mut args: Vec<OsString>) -> std::result::Result<Vec<OsString>, String> {
    let Some(program) = args.first() else {
        return Ok(args);
    };
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let Some((_, subcommand)) = LINKS.iter().find(|(link, _)| *link == name) else {
        return Ok(args);
    };
    if Cli::command().find_subcommand(subcommand).is_none() {
        return Err(format!(
            "`{name}` is not available in xivo-ha {}: its subcommand `{subcommand}` is not built yet",
            env!("CARGO_PKG_VERSION")
        ));
    }
    args[0] = OsString::from("xivo-ha");
    args.insert(1, OsString::from(subcommand));
    Ok(args)
}

/// The whole program: parse, set up logging and the runtime, run, print one line on error.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match rewrite_args(args) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("xivo-ha: {message}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    init_logging(cli.log_format);
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
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xivo-ha: error: {error}");
            error.exit_code()
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XIVO_HA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Context::new(cli.root, cli.db, cli.env_file);
    match cli.command {
        Command::Status(args) => status(&ctx, args),
        Command::Configure(args) => configure(&ctx, args).await,
        Command::InstallLinks(args) => install_links(&args),
        Command::Sync(args) => crate::sync::run_command(&ctx, args).await,
        Command::MonitoringUpdate(args) => monitoring_update(&ctx, &args),
        Command::CheckMasterStatus(args) => crate::monitor::check_master_status(&ctx, args).await,
        Command::ManageSlaveServices(args) => {
            crate::monitor::manage_slave_services(&ctx, args).await
        }
        Command::Monitor(args) => crate::monitor::monitor_command(&ctx, args).await,
        Command::DbReplication(args) => crate::replication::run_cli(&ctx, args).await,
        Command::Doctor(args) => Ok(crate::doctor::command(&ctx, args).await),
        Command::DbReplic(args) => crate::dbreplic::command(&ctx, args).await,
    }
}

fn monitoring_update(ctx: &Context, args: &MonitoringUpdateArgs) -> Result<ExitCode> {
    let outcome = crate::monit::update(ctx, args.conf_dir.as_deref(), !args.no_reload)?;
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

fn status(ctx: &Context, args: StatusArgs) -> Result<ExitCode> {
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

async fn configure(ctx: &Context, args: ConfigureArgs) -> Result<ExitCode> {
    let target = match (args.node_type, args.peer.as_deref()) {
        (NodeType::Disabled, None) => HaConfig::default(),
        (NodeType::Disabled, Some(extra)) => {
            return Err(Error::Usage(format!(
                "`configure disabled` takes no address (got `{extra}`)"
            )));
        }
        (node_type, None) => {
            let peer = if node_type == NodeType::Master {
                "slave"
            } else {
                "master"
            };
            return Err(Error::Usage(format!(
                "`configure {node_type}` needs the {peer}'s address: xivo-ha configure {node_type} <{peer}_ip>"
            )));
        }
        (node_type, Some(address)) => {
            let peer = if node_type == NodeType::Master {
                "slave"
            } else {
                "master"
            };
            HaConfig {
                node_type,
                remote_address: ha::parse_peer(address, peer)?.to_string(),
            }
        }
    };
    let outcome = ha::configure(ctx, target).await?;
    if outcome.changes.is_empty() {
        println!(
            "HA already configured as {}: nothing changed",
            outcome.config.node_type
        );
        return Ok(ExitCode::SUCCESS);
    }
    for change in &outcome.changes {
        println!("{change}");
    }
    println!("Restart the services for the change to take effect: xivo-service restart");
    println!("Then resynchronise the devices so that they learn their new registrars.");
    Ok(ExitCode::SUCCESS)
}

fn install_links(args: &InstallLinksArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Usage(format!("cannot find this program's own path: {e}")))?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| crate::fsutil::FileError::new("create directory", &args.dir, e))?;
    for (name, _) in LINKS {
        let link = args.dir.join(name);
        match std::fs::read_link(&link) {
            Ok(target) if target == exe => {
                println!("{} already links to {}", link.display(), exe.display());
                continue;
            }
            Ok(_) | Err(_) if link.symlink_metadata().is_ok() => {
                if !args.force {
                    return Err(Error::Usage(format!(
                        "{} exists and is not a link to {}: remove it or pass --force",
                        link.display(),
                        exe.display()
                    )));
                }
                std::fs::remove_file(&link)
                    .map_err(|e| crate::fsutil::FileError::new("remove", &link, e))?;
            }
            _ => {}
        }
        std::os::unix::fs::symlink(&exe, &link)
            .map_err(|e| crate::fsutil::FileError::new("create link", &link, e))?;
        println!("{} -> {}", link.display(), exe.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn plain_invocations_are_left_alone() {
        assert_eq!(
            rewrite_args(args(&["xivo-ha", "status"])).unwrap(),
            args(&["xivo-ha", "status"])
        );
    }

    #[test]
    fn classic_names_map_to_their_subcommand_or_say_it_is_missing() {
        for (link, subcommand) in LINKS {
            let invoked = args(&[&format!("/usr/sbin/{link}"), "10.0.0.1"]);
            match rewrite_args(invoked) {
                Ok(rewritten) => assert_eq!(rewritten, args(&["xivo-ha", subcommand, "10.0.0.1"])),
                Err(message) => {
                    assert!(Cli::command().find_subcommand(subcommand).is_none());
                    assert!(
                        message.contains(link) && message.contains(subcommand),
                        "{message}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
