//! The doctor's checks, one function each, grouped by the role they apply to.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::Finding;
use crate::context::Context;
use crate::ha::sip_expiry::{self, HA_EXPIRY};
use crate::ha::{HaConfig, NodeType};
use crate::net::{self, InterfaceAddress};

/// How long a peer's port may take to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Every check for this node's role, in the order an administrator would fix them.
pub async fn all(ctx: &Context, ha: &HaConfig) -> Vec<Finding> {
    let mut findings = vec![ha_configured(ha)];
    if ctx.paths.xc_enabled().exists() {
        findings.extend(db_replic(ctx).await);
    }
    if ha.node_type == NodeType::Disabled {
        return findings;
    }
    // A peer `configure` refuses is the finding, and nothing is sent to it.
    let (finding, peer) = peer_address(ha);
    findings.push(finding);
    let Some(peer) = peer else {
        return findings;
    };
    findings.push(same_subnet(peer, &net::interface_addresses()));
    findings.extend(configuration_db(ctx).await);
    match ha.node_type {
        NodeType::Master => {
            let sync = crate::sync::SyncSettings::load(ctx);
            let ssh_port = sync.as_ref().map_or(22, |s| s.port);
            findings
                .push(peer_port("slave-ssh", peer, ssh_port, "the sync runs rsync over SSH").await);
            match crate::replication::target::SlaveDbSettings::load(ctx) {
                Ok(slave_db) => {
                    findings.push(
                        peer_port(
                            "slave-postgresql",
                            peer,
                            slave_db.port,
                            "the replication writes the slave's database",
                        )
                        .await,
                    );
                    findings.push(slave_database(ctx, peer, &slave_db).await);
                }
                Err(e) => findings.push(Finding::failed(
                    "slave-database",
                    e.to_string(),
                    "fix the XIVO_HA_SLAVE_DB_* variables in custom.env",
                )),
            }
            findings.push(sync_key(ctx, peer, sync).await);
        }
        NodeType::Slave => {
            match ctx.env().map_err(|e| e.to_string()).and_then(|env| {
                crate::monitor::settings::MonitorSettings::load(&env).map_err(|e| e.to_string())
            }) {
                Ok(settings) => {
                    findings.push(master_answers(peer, &settings).await);
                    findings.push(witnesses_answer(&settings).await);
                    findings.extend(telephony_containers(&settings.containers).await);
                }
                Err(e) => findings.push(Finding::failed(
                    "monitor-settings",
                    e,
                    "fix the XIVO_HA_MONITOR_* variables in custom.env",
                )),
            }
            findings.push(no_provisioning_plugins(ctx));
        }
        NodeType::Disabled => {}
    }
    findings
}

pub fn ha_configured(ha: &HaConfig) -> Finding {
    match ha.node_type {
        NodeType::Disabled => Finding::failed(
            "ha-configured",
            "HA is disabled on this node",
            "xivo-ha configure master <slave_ip> (or slave <master_ip>), then xivo-service restart",
        ),
        NodeType::Master => Finding::ok(
            "ha-configured",
            format!("master, slave at {}", ha.remote_address),
        ),
        NodeType::Slave => Finding::ok(
            "ha-configured",
            format!("slave, master at {}", ha.remote_address),
        ),
    }
}

/// The peer's address by the rules of `configure` ([`HaConfig::peer`]): another host, returned
/// with the finding when it is one.
pub fn peer_address(ha: &HaConfig) -> (Finding, Option<IpAddr>) {
    match ha.peer() {
        Ok(Some(peer)) => (
            Finding::ok("peer-address", format!("the peer {peer} is another host")),
            Some(peer),
        ),
        Ok(None) => (
            Finding::failed(
                "peer-address",
                "HA is disabled: no peer",
                "xivo-ha configure <role> <peer_ip>",
            ),
            None,
        ),
        Err(e) => (
            Finding::failed(
                "peer-address",
                e.to_string(),
                "configure the other node's address: xivo-ha configure <role> <peer_ip>",
            ),
            None,
        ),
    }
}

/// DHCP settings are replicated, so both nodes must serve the same VoIP network.
pub fn same_subnet(peer: IpAddr, interfaces: &[InterfaceAddress]) -> Finding {
    match interfaces
        .iter()
        .find(|a| !a.address.is_loopback() && a.contains(peer))
    {
        Some(interface) => Finding::ok("same-subnet", format!("the peer {peer} is on {interface}")),
        None => {
            let mine: Vec<String> = interfaces
                .iter()
                .filter(|a| !a.address.is_loopback())
                .map(|a| a.to_string())
                .collect();
            Finding::failed(
                "same-subnet",
                format!(
                    "the peer {peer} is in none of this node's subnets ({})",
                    mine.join(", ")
                ),
                "put both nodes on the same VoIP network: the DHCP settings are replicated",
            )
        }
    }
}

/// The SIP expiry values and the trunk registrations, from the configuration database.
pub async fn configuration_db(ctx: &Context) -> Vec<Finding> {
    let target = match ctx.config_db() {
        Ok(target) => target,
        Err(e) => {
            return vec![Finding::failed(
                "configuration-db",
                e.to_string(),
                "fix --db / XIVO_HA_DB",
            )];
        }
    };
    let client = match target.connect().await {
        Ok(client) => client,
        Err(e) => {
            return vec![Finding::failed(
                "configuration-db",
                e.to_string(),
                "start PostgreSQL or fix --db / XIVO_HA_DB",
            )];
        }
    };
    let values = match sip_expiry::read(&client).await {
        Ok(values) => values,
        Err(e) => {
            return vec![Finding::failed(
                "sip-expiry",
                target.query_error(crate::db::error_reason(&e)).to_string(),
                "point --db at XiVO's asterisk database",
            )];
        }
    };
    let mut findings = vec![sip_expiry_values(&values)];
    let default_expiry = values[2].1.as_deref().and_then(|v| v.parse().ok());
    findings.push(match sip_expiry::trunk_registrations(&client).await {
        Ok(trunks) => trunk_expiry(&trunks, default_expiry),
        Err(e) => Finding::failed(
            "trunk-expiry",
            target.query_error(crate::db::error_reason(&e)).to_string(),
            "point --db at XiVO's asterisk database",
        ),
    });
    findings
}

pub fn sip_expiry_values(values: &[(String, Option<String>); 3]) -> Finding {
    let wanted = [HA_EXPIRY.min, HA_EXPIRY.max, HA_EXPIRY.default];
    let wrong: Vec<String> = values
        .iter()
        .zip(wanted)
        .filter(|((_, value), wanted)| value.as_deref() != Some(wanted.to_string().as_str()))
        .map(|((name, value), wanted)| {
            format!(
                "{name} is {} (HA needs {wanted})",
                value.as_deref().unwrap_or("unset")
            )
        })
        .collect();
    if wrong.is_empty() {
        Finding::ok(
            "sip-expiry",
            format!(
                "min {} s, max {} s, default {} s",
                HA_EXPIRY.min, HA_EXPIRY.max, HA_EXPIRY.default
            ),
        )
    } else {
        Finding::failed(
            "sip-expiry",
            wrong.join(", "),
            "run xivo-ha configure again with this node's role to set the HA values",
        )
    }
}

/// XiVO's five-minute guarantee needs every trunk to re-register in less than 300 s.
pub fn trunk_expiry(
    trunks: &[sip_expiry::TrunkRegistration],
    default_expiry: Option<u32>,
) -> Finding {
    const LIMIT: u32 = 300;
    let slow: Vec<String> = trunks
        .iter()
        .filter_map(|t| {
            let expiry = t.expiry.or(default_expiry)?;
            (expiry >= LIMIT).then(|| format!("{} ({expiry} s)", t.trunk))
        })
        .collect();
    if slow.is_empty() {
        Finding::ok(
            "trunk-expiry",
            format!(
                "{} trunk registration(s), all under {LIMIT} s",
                trunks.len()
            ),
        )
    } else {
        Finding::failed(
            "trunk-expiry",
            format!(
                "trunk registrations of {LIMIT} s or more: {}",
                slow.join(", ")
            ),
            format!(
                "set each trunk's registration expiry (~seconds in the register line) under {LIMIT} s"
            ),
        )
    }
}

pub async fn peer_port(check: &'static str, peer: IpAddr, port: u16, why: &str) -> Finding {
    let address = SocketAddr::new(peer, port);
    match net::tcp_answers(address, CONNECT_TIMEOUT).await {
        Ok(took) => Finding::ok(
            check,
            format!("{address} answers ({} ms)", took.as_millis()),
        ),
        Err(e) => Finding::failed(
            check,
            format!("{address} does not answer: {e}"),
            format!("open TCP port {port} on the peer to this node ({why})"),
        ),
    }
}

/// A slave must not provision devices: they would get the slave's configuration.
pub fn no_provisioning_plugins(ctx: &Context) -> Finding {
    let dir = ctx.paths.provd_plugins_dir();
    let plugins: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Finding::warning(
                "provd-plugins",
                format!("cannot list {}: {e}", dir.display()),
                "check the directory's permissions",
            );
        }
    };
    if plugins.is_empty() {
        Finding::ok(
            "provd-plugins",
            "no provisioning plugin installed on the slave",
        )
    } else {
        Finding::failed(
            "provd-plugins",
            format!(
                "provisioning plugins installed on the slave: {}",
                plugins.join(", ")
            ),
            "uninstall them (web interface, Configuration > Provisioning > Plugins): the slave must not provision devices",
        )
    }
}

/// The master's dedicated sync key: present, private (0600), and accepted by the slave.
pub async fn sync_key(
    ctx: &Context,
    peer: IpAddr,
    settings: Result<crate::sync::SyncSettings, crate::sync::SyncError>,
) -> Finding {
    use std::os::unix::fs::PermissionsExt;
    const CHECK: &str = "sync-key";
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => {
            return Finding::failed(CHECK, e.to_string(), "fix the sync settings in custom.env");
        }
    };
    let key = ctx.paths.under(crate::sync::KEY_PATH);
    let mode = match std::fs::metadata(&key) {
        Ok(metadata) => metadata.permissions().mode() & 0o777,
        Err(_) => {
            return Finding::failed(
                CHECK,
                format!("no sync key at {}", key.display()),
                "create it and install it on the slave: xivo-ha sync -i",
            );
        }
    };
    if mode & 0o077 != 0 {
        return Finding::failed(
            CHECK,
            format!(
                "{} has mode {mode:04o}: other users can read it",
                key.display()
            ),
            format!("chmod 600 {}", key.display()),
        );
    }
    let target = settings.target(ctx, peer);
    match crate::sync::keys::check(&target, &key, &settings.authorized_keys).await {
        Ok(()) => Finding::ok(
            CHECK,
            format!(
                "{} (mode 0600) logs in to {}",
                key.display(),
                target.destination()
            ),
        ),
        Err(e) => Finding::failed(
            CHECK,
            e.to_string(),
            "install the key again: remove it and its .pub, then xivo-ha sync -i",
        ),
    }
}

/// The slave's view of the master: one probe round, as the monitor makes them.
pub async fn master_answers(
    master: IpAddr,
    settings: &crate::monitor::settings::MonitorSettings,
) -> Finding {
    const CHECK: &str = "master-icmp";
    let mut prober = crate::monitor::probe::Prober::new(master, settings.into());
    let round = prober.round().await;
    if round.icmp.answered {
        Finding::ok(
            CHECK,
            format!("the master {master} answers: {}", round.evidence()),
        )
    } else {
        Finding::failed(
            CHECK,
            format!(
                "the master {master} does not answer ICMP echo: {}",
                round.evidence()
            ),
            "let ICMP echo through between the nodes (and give xivo-ha CAP_NET_RAW): it is the monitor's first path",
        )
    }
}

/// The witnesses the slave tries before a takeover answer (or the check is off, or there is
/// none to try: said, as a cut-off slave could then never be told apart from a dead master).
pub async fn witnesses_answer(settings: &crate::monitor::settings::MonitorSettings) -> Finding {
    use crate::monitor::witness;
    const CHECK: &str = "witnesses";
    let Some(witnesses) = witness::resolve(&settings.witnesses) else {
        return Finding::warning(
            CHECK,
            "the witness check is off (XIVO_HA_MONITOR_WITNESSES=none): a slave cut off from the network takes over while the master may still serve",
            "set XIVO_HA_MONITOR_WITNESSES to addresses this node reaches through the network the master uses (e.g. its gateway, another server's IP:port)",
        );
    };
    if witnesses.is_empty() {
        return Finding::failed(
            CHECK,
            "no witness configured and no default route: the slave can never confirm it is not the one cut off, so it never takes over",
            "set XIVO_HA_MONITOR_WITNESSES (IPs for ICMP, IP:port for TCP), or give this node a default route",
        );
    }
    let round = witness::round(&witnesses, settings.round_timeout()).await;
    if round.answered {
        Finding::ok(CHECK, format!("a witness answers: {}", round.detail))
    } else {
        Finding::failed(
            CHECK,
            format!("no witness answers: {}", round.detail),
            "check the witnesses in XIVO_HA_MONITOR_WITNESSES (or the default gateway): while none answers, the slave never takes over",
        )
    }
}

/// The containers the monitor starts on failover exist, and will not start by themselves.
pub async fn telephony_containers(names: &[String]) -> Vec<Finding> {
    const CHECK: &str = "telephony-containers";
    let engine = match crate::monitor::docker::Engine::connect().await {
        Ok(engine) => engine,
        Err(e) => {
            return vec![Finding::failed(
                CHECK,
                e.to_string(),
                "start the Docker engine and give xivo-ha its socket (/var/run/docker.sock)",
            )];
        }
    };
    let mut findings = Vec::new();
    for name in names {
        findings.push(match engine.inspect(name).await {
            Ok(status) => match status.restart_policy.as_str() {
                "always" | "unless-stopped" => Finding::failed(
                    CHECK,
                    format!("container {name} has restart policy `{}`: it would start by itself after a reboot", status.restart_policy),
                    format!("docker update --restart no {name} (the monitor also does it when it runs)"),
                ),
                "on-failure" => Finding::warning(
                    CHECK,
                    format!("container {name} has restart policy `on-failure`"),
                    format!("docker update --restart no {name}"),
                ),
                policy => Finding::ok(CHECK, format!("container {name} exists ({}, restart policy `{policy}`)", status.state)),
            },
            Err(e) => Finding::failed(
                CHECK,
                e.to_string(),
                "create the container or fix XIVO_HA_MONITOR_CONTAINERS",
            ),
        });
    }
    findings
}

/// The slave's configuration database: reachable with the replication's settings, UTF-8, and
/// at this node's schema version (XiVO replicates only between nodes of the same version).
pub async fn slave_database(
    ctx: &Context,
    peer: IpAddr,
    settings: &crate::replication::target::SlaveDbSettings,
) -> Finding {
    use crate::replication::guards::Identity;
    const CHECK: &str = "slave-database";
    let slave_target = settings.target(peer);
    let slave = match slave_target.connect().await {
        Ok(client) => client,
        Err(e) => {
            return Finding::failed(
                CHECK,
                e.to_string(),
                "allow the master in the slave's pg_hba.conf (docs/operations.md, 'The slave's PostgreSQL: password and TLS') and check XIVO_HA_SLAVE_DB_USER / _PASSWORD",
            );
        }
    };
    let slave_id = match Identity::read(&slave).await {
        Ok(id) => id,
        Err(e) => {
            return Finding::failed(
                CHECK,
                slave_target
                    .query_error(crate::db::error_reason(&e))
                    .to_string(),
                "check the slave's database",
            );
        }
    };
    if slave_id.encoding != "UTF8" {
        return Finding::failed(
            CHECK,
            format!(
                "the slave's database {} is in {}, not UTF-8",
                slave_target.describe(),
                slave_id.encoding
            ),
            "recreate it in UTF-8 (createdb -E UTF8 -T template0 asterisk), then replicate again",
        );
    }
    let local_version = match ctx.config_db() {
        Ok(local) => match local.connect().await {
            Ok(client) => Identity::read(&client)
                .await
                .ok()
                .map(|id| id.schema_version),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
    match local_version {
        Some(version) if version == slave_id.schema_version => Finding::ok(
            CHECK,
            format!(
                "{}: UTF-8, schema version {} as on this node",
                slave_target.describe(),
                show(&version)
            ),
        ),
        Some(version) => Finding::failed(
            CHECK,
            format!(
                "schema version {} on this node, {} on the slave {}",
                show(&version),
                show(&slave_id.schema_version),
                slave_target.describe()
            ),
            "upgrade both nodes to the same XiVO version before replicating",
        ),
        None => Finding::warning(
            CHECK,
            format!(
                "{}: UTF-8, schema version {}; this node's own version could not be read",
                slave_target.describe(),
                show(&slave_id.schema_version)
            ),
            "fix --db / XIVO_HA_DB so that both versions can be compared",
        ),
    }
}

/// DB Replic, where XiVO CC enabled it: its settings parse, both sinks answer, the origin is
/// not another node's, its log directory is writable.
pub async fn db_replic(ctx: &Context) -> Vec<Finding> {
    use crate::dbreplic::settings::DbReplicSettings;
    let settings = match ctx.env().and_then(|env| DbReplicSettings::load(&env)) {
        Ok(settings) => settings,
        Err(e) => {
            return vec![Finding::failed(
                "db-replic-settings",
                e.to_string(),
                format!("fix the variable in {}", ctx.env_file.display()),
            )];
        }
    };
    let mut findings = vec![Finding::ok(
        "db-replic-settings",
        format!(
            "{} parses ({} mode, origin {})",
            ctx.env_file.display(),
            if settings.ha_slave { "HA" } else { "normal" },
            settings.origin
        ),
    )];
    let reporting = settings.reporting.target();
    findings.push(match reporting.connect().await {
        Ok(_) => Finding::ok("reporting-db", format!("{} answers", reporting.describe())),
        Err(e) => Finding::failed(
            "reporting-db",
            e.to_string(),
            "start XiVO CC's reporting database or fix REPORTING_DB_* in custom.env",
        ),
    });
    findings.push(
        match crate::dbreplic::es::service::EsService::new(&settings.elasticsearch) {
            Ok(es) => match es.info().await {
                Ok(version) => Finding::ok(
                    "elasticsearch",
                    format!("{} answers (version {version})", es.describe()),
                ),
                Err(e) => Finding::failed(
                    "elasticsearch",
                    e.to_string(),
                    "start XiVO CC's Elasticsearch or fix ELASTICSEARCH in custom.env",
                ),
            },
            Err(e) => Finding::failed(
                "elasticsearch",
                e.to_string(),
                "fix ELASTICSEARCH in custom.env",
            ),
        },
    );
    findings.push(origin_claim(ctx, &settings).await);
    let dir = ctx.paths.under(crate::dbreplic::LOG_DIR);
    findings.push(match crate::dbreplic::logfile::LogFile::open(&dir) {
        Ok(_) => Finding::ok("db-replic-log", format!("{} is writable", dir.display())),
        Err(e) => Finding::failed(
            "db-replic-log",
            e.to_string(),
            format!("chown daemon:daemon {} and make it writable", dir.display()),
        ),
    });
    findings
}

/// Whether DB_REPLIC_ORIGIN is this node's in the sinks that answer (read only: the node's
/// identity is not made here).
async fn origin_claim(
    ctx: &Context,
    settings: &crate::dbreplic::settings::DbReplicSettings,
) -> Finding {
    use crate::dbreplic::claim;
    const CHECK: &str = "db-replic-origin";
    let me = match crate::node_id::NodeId::read(&ctx.paths) {
        Ok(id) => id,
        Err(e) => {
            return Finding::failed(CHECK, e.to_string(), "restore or remove the node-id file");
        }
    };
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let mut mine = Vec::new();
    for (store, found) in claim::read_all(settings).await {
        let Ok(Some(found)) = found else { continue };
        let conflict = match &me {
            Some(id) => claim::judge(
                &settings.origin,
                &store,
                &claim::Claimant::new(id.clone()),
                &found,
            )
            .err()
            .map(|e| e.message),
            // DB Replic never ran here: any claim is another node's.
            None => Some(claim::conflict(
                &settings.origin,
                &store,
                &found,
                &format!("a node without an identity yet (host {hostname})"),
            )),
        };
        if let Some(message) = conflict {
            return Finding::failed(
                CHECK,
                message,
                "give this node its own DB_REPLIC_ORIGIN, or run `xivo-ha db-replic --take-over-origin` if it replaces that node",
            );
        }
        mine.push(store);
    }
    Finding::ok(
        CHECK,
        if mine.is_empty() {
            format!(
                "origin `{}` is not claimed yet (DB Replic claims it at its first start)",
                settings.origin
            )
        } else {
            format!(
                "origin `{}` is this node's in {}",
                settings.origin,
                mine.join(" and ")
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Level;

    #[test]
    fn the_peer_is_checked_by_the_rules_of_configure() {
        let finding = |address: &str| {
            let ha = HaConfig {
                node_type: NodeType::Master,
                remote_address: address.into(),
            };
            peer_address(&ha).0
        };
        assert_eq!(finding("192.0.2.20").level, Level::Ok);
        for (address, reason) in [
            ("127.0.0.1", "this node's own address"),
            ("255.255.255.255", "a broadcast address"),
            ("224.0.0.1", "not a host address"),
        ] {
            let found = finding(address);
            assert_eq!(found.level, Level::Failed, "{address}");
            assert!(
                found
                    .found
                    .contains(&format!("{address} is not usable as the slave's address"))
                    && found.found.contains(reason),
                "{}",
                found.found
            );
        }
    }
}
