//! The monitor's commands: `xivo-ha monitor` (the sidecar, until SIGTERM/SIGINT, with the HTTP
//! endpoint), `check-master-status <master_ip>` (one probe round, XiVO's cron job) and
//! `manage-slave-services start|stop`; and the settings this node has that differ from the
//! defaults, for their help.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::time::Instant;

use super::isolation::{Decision, Guard, Witnessed};
use super::probe::{ProbeSettings, Prober};
use super::services::{self, Desired};
use super::settings::{MasterSettings, MonitorSettings, PREFIX};
use super::verdict::Verdict;
use super::{Monitor, MonitorError, rounds, verdict};
use crate::context::Context;
use crate::ha::{HaConfig, NodeType};
use crate::settings::differing;

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
    let master = MasterSettings::load(&env)?;
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
    // Rounds further apart than two periods (the interval, or a round's timeout when longer)
    // are a gap in the dashboard's timeline.
    let rounds = rounds::RoundLog::new(
        settings.interval.max(settings.round_timeout()) * 2 + Duration::from_millis(500),
    );
    let monitor = Monitor::new(ctx.clone(), settings)
        .with_master_settings(master)
        .with_heartbeat(heartbeat.clone())
        .with_rounds(rounds.clone());
    let checked = monitor.preflight().await?;
    let http = crate::http::start(&env, &ctx.paths, heartbeat, rounds).await?;
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
    // The rules of ha.conf: probing this node itself would stop its own services.
    crate::ha::check_peer(master, "master")?;
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
    // ha.conf by the same rules: a node whose own settings are refused acts on nothing.
    if ha.peer_in(&ctx.paths)? != Some(master) {
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
    if desired == Desired::Running
        && let Some(witnesses) = super::witness::resolve(&settings.witnesses)
    {
        // The same guard as the monitor's, for one round.
        let round = super::witness::round(&witnesses, settings.round_timeout()).await;
        let witnessed = if round.answered {
            Witnessed::Answered
        } else {
            Witnessed::Silent
        };
        // The round counts as a whole window of silence: the decision is the guard's alone.
        let now = Instant::now();
        let window = settings.down_after;
        let silent_since = now.checked_sub(window).unwrap_or(now);
        let decision = Guard::new(true, window).step(now, Verdict::Down, silent_since, witnessed);
        if matches!(decision, Decision::Isolated { .. }) {
            println!(
                "isolated: no witness answers, not taking over [{}]",
                round.detail
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
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

/// The monitor settings of this node that differ from the defaults, one line each
/// (`containers asterisk,monit,nginx (XIVO_HA_MONITOR_CONTAINERS)`).
pub fn configured(ctx: &Context) -> Result<Vec<String>, MonitorError> {
    let settings = MonitorSettings::load(&ctx.env()?)?;
    let defaults = MonitorSettings::default();
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    let mut lines = differing(
        PREFIX,
        vec![
            (
                "containers",
                "CONTAINERS",
                settings.containers.join(","),
                defaults.containers.join(","),
            ),
            (
                "round",
                "INTERVAL_MS",
                ms(settings.interval),
                ms(defaults.interval),
            ),
            (
                "SIP probe interval",
                "SIP_INTERVAL_MS",
                ms(settings.sip_interval),
                ms(defaults.sip_interval),
            ),
            (
                "down after SIP silent for",
                "DOWN_AFTER_MS",
                ms(settings.down_after),
                ms(defaults.down_after),
            ),
            (
                "up after SIP answering for",
                "UP_AFTER_MS",
                ms(settings.up_after),
                ms(defaults.up_after),
            ),
            (
                "master's SIP port",
                "SIP_PORT",
                settings.sip_port.to_string(),
                defaults.sip_port.to_string(),
            ),
            (
                "master's PostgreSQL port",
                "PG_PORT",
                settings.pg_port.to_string(),
                defaults.pg_port.to_string(),
            ),
        ],
    );
    let hooks = &settings.hooks;
    for (hook, set) in [
        ("HOOK_PRE_START", &hooks.pre_start),
        ("HOOK_POST_START", &hooks.post_start),
        ("HOOK_PRE_STOP", &hooks.pre_stop),
        ("HOOK_POST_STOP", &hooks.post_stop),
    ] {
        if set.is_some() {
            lines.push(format!("hook set ({PREFIX}{hook})"));
        }
    }
    Ok(lines)
}
