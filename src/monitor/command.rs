//! The monitor's commands: `xivo-ha monitor` (the sidecar, until SIGTERM/SIGINT, with the HTTP
//! endpoint), `check-master-status <master_ip>` (one probe round, XiVO's cron job) and
//! `manage-slave-services start|stop`.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::probe::{ProbeSettings, Prober};
use super::services::{self, Desired};
use super::settings::MonitorSettings;
use super::{Monitor, MonitorError, verdict};
use crate::context::Context;
use crate::ha::{HaConfig, NodeType};

/// `monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {}

/// `check-master-status <master_ip>`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The master's address (XiVO's cron passes it).
    pub master_ip: String,
}

/// `manage-slave-services start|stop`.
#[derive(Debug, Args)]
pub struct ManageArgs {
    /// start: the slave takes the calls; stop: the master does.
    #[arg(value_enum)]
    pub action: Desired,
}

/// `xivo-ha monitor`: runs until SIGTERM or SIGINT.
pub async fn run(ctx: &Context, _args: MonitorArgs) -> Result<ExitCode, MonitorError> {
    let env = ctx.env()?;
    let settings = MonitorSettings::load(&env)?;
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    // A round may take its interval plus the probes' timeouts; three missed rounds and ten
    // seconds more mean the loop is stuck.
    let heartbeat = crate::http::Heartbeat::new(settings.interval * 3 + Duration::from_secs(10));
    let monitor = Monitor::new(ctx.clone(), settings).with_heartbeat(heartbeat.clone());
    let checked = monitor.preflight().await?;
    let http = crate::http::start(&env, &ctx.paths, heartbeat).await?;
    let result = monitor.run_checked(checked, shutdown).await;
    if let Some(http) = http {
        http.stop().await;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// `check-master-status <master_ip>`: one round, XiVO's semantics (master answers: slave's
/// services stopped; it does not: started), only on a slave.
pub async fn check_master_status(ctx: &Context, args: CheckArgs) -> Result<ExitCode, MonitorError> {
    let master: IpAddr = args.master_ip.trim().parse().map_err(|_| {
        MonitorError::Usage(format!(
            "`{}` is not an IP address: give the master's address, e.g. xivo-check-master-status 10.0.0.1",
            args.master_ip
        ))
    })?;
    let ha = HaConfig::load(&ctx.paths)?;
    if ha.node_type != NodeType::Slave {
        println!(
            "this node is not a slave (ha.conf says {}): nothing to do",
            ha.node_type
        );
        return Ok(ExitCode::SUCCESS);
    }
    let env = ctx.env()?;
    let settings = MonitorSettings::load(&env)?;
    if ha.remote_ip() != Some(master) {
        println!(
            "note: ha.conf names the master {}, probing {master} as asked",
            ha.remote_address
        );
    }
    // The containers are checked before the probe: a typo in their list acts on nothing.
    services::containers_exist(&settings).await?;
    let mut prober = Prober::new(master, ProbeSettings::from(&settings));
    let report = prober.round().await;
    let (verdict, desired) = match report.observation().class() {
        verdict::RoundClass::Good => ("up", Desired::Stopped),
        verdict::RoundClass::SipDead => ("down (host answers, SIP does not)", Desired::Running),
        verdict::RoundClass::HostDown => ("down (no answer)", Desired::Running),
    };
    println!("master {master} {verdict}: {}", report.evidence());
    let applied = services::manage(&ctx.paths, &settings, desired).await?;
    print_applied(desired, &applied);
    Ok(ExitCode::SUCCESS)
}

/// `manage-slave-services start|stop`.
pub async fn manage_slave_services(
    ctx: &Context,
    args: ManageArgs,
) -> Result<ExitCode, MonitorError> {
    let env = ctx.env()?;
    let settings = MonitorSettings::load(&env)?;
    let applied = services::manage(&ctx.paths, &settings, args.action).await?;
    print_applied(args.action, &applied);
    Ok(ExitCode::SUCCESS)
}

fn print_applied(desired: Desired, applied: &services::Applied) {
    for action in &applied.actions {
        println!("{action}");
    }
    let names: Vec<&str> = applied.containers.iter().map(|c| c.name.as_str()).collect();
    if applied.actions.is_empty() {
        println!("slave services already {desired}: {}", names.join(", "));
    } else {
        println!("slave services {desired}: {}", names.join(", "));
    }
}
