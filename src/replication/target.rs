//! Where the replication reads and writes: the master (source) database and the slave (target)
//! database, from the command line or from the `XIVO_HA_SLAVE_DB_*` settings of custom.env,
//! and how each end notices the other vanished (TCP keepalives on both sides).

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, SimpleQueryMessage};

use crate::context::Context;
use crate::db::{DbError, DbTarget};
use crate::secret::Secret;
use crate::settings::{ConfigError, from_env};

/// Prefix of the slave connection settings in custom.env or the environment.
pub const ENV_PREFIX: &str = "XIVO_HA_SLAVE_DB_";

/// How soon a vanished peer is noticed, on both ends of a replication connection: the first
/// keepalive after [`KEEPALIVE_IDLE`] without traffic, then every [`KEEPALIVE_INTERVAL`], the
/// connection dropped after [`KEEPALIVE_COUNT`] unanswered ones or when sent data stays
/// unacknowledged for [`USER_TIMEOUT`]: about 20 s instead of the OS's 2 hours and more. It
/// matters most on the slave's server: a master that vanishes mid-copy leaves the slave's
/// session waiting for COPY data with the TRUNCATE's exclusive locks held until it notices.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_COUNT: u32 = 3;
pub const USER_TIMEOUT: Duration = Duration::from_secs(20);
/// `client_connection_check_interval` (PostgreSQL 14+): a statement the slave's server runs
/// for a master that is gone is cancelled at the next check instead of running to its end.
pub const CONNECTION_CHECK: Duration = Duration::from_secs(5);

/// The client side: keepalives and `tcp_user_timeout` on this end's socket.
fn detect_vanished_peer(config: &mut Config) {
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_COUNT)
        .tcp_user_timeout(USER_TIMEOUT);
}

/// The server side: the session settings that make the slave's PostgreSQL drop this session
/// (rolling it back and releasing its locks) soon after the master vanished. Every one is a
/// user setting (no privilege needed); a server without one (`tcp_user_timeout` is
/// PostgreSQL 12+, `client_connection_check_interval` 14+) simply does not get it, and a
/// server that refuses them anyway gets a warning, not a failed run. One round trip. Returns
/// the settings applied.
pub async fn detect_vanished_master(slave: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let wanted = [
        ("tcp_keepalives_idle", KEEPALIVE_IDLE.as_secs().to_string()),
        (
            "tcp_keepalives_interval",
            KEEPALIVE_INTERVAL.as_secs().to_string(),
        ),
        ("tcp_keepalives_count", KEEPALIVE_COUNT.to_string()),
        ("tcp_user_timeout", USER_TIMEOUT.as_millis().to_string()),
        (
            "client_connection_check_interval",
            CONNECTION_CHECK.as_millis().to_string(),
        ),
    ];
    // Constants only in the text: nothing to quote but what is written here.
    let values = wanted
        .iter()
        .map(|(name, value)| format!("('{name}', '{value}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT w.name, set_config(w.name, w.value, false) FROM (VALUES {values}) AS w(name, value) \
         WHERE w.name IN (SELECT name FROM pg_settings)"
    );
    let messages = match slave.simple_query(&sql).await {
        Ok(messages) => messages,
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            tracing::warn!(
                "the slave refuses the keepalive settings ({}): a master vanishing mid-copy may leave the slave's tables locked until its OS drops the connection",
                crate::db::error_reason(&e)
            );
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let applied: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    for (name, _) in &wanted {
        if !applied.iter().any(|a| a == name) {
            tracing::debug!("the slave's PostgreSQL has no {name}: not set");
        }
    }
    Ok(applied)
}

/// How the master reaches the slave's PostgreSQL (`XIVO_HA_SLAVE_DB_*`).
/// `Debug` is derived: the password is a [`Secret`].
#[derive(Clone, Debug, Deserialize)]
pub struct SlaveDbSettings {
    /// `XIVO_HA_SLAVE_DB_USER`: XiVO connects as `postgres`; a dedicated role is better.
    #[serde(default = "default_user")]
    pub user: String,
    /// `XIVO_HA_SLAVE_DB_PASSWORD`: none means the slave's pg_hba must not ask for one.
    #[serde(default)]
    pub password: Option<Secret>,
    /// `XIVO_HA_SLAVE_DB_SSLMODE`: `disable` or `require` (TLS, certificate verified against the
    /// web PKI roots and `XIVO_HA_PG_CA_FILE`).
    #[serde(default = "default_sslmode")]
    pub sslmode: String,
    /// `XIVO_HA_SLAVE_DB_PORT`.
    #[serde(default = "default_port")]
    pub port: u16,
    /// `XIVO_HA_SLAVE_DB_NAME`.
    #[serde(default = "default_name")]
    pub name: String,
    /// `XIVO_HA_SLAVE_DB_CONNECT_TIMEOUT_S`: an unreachable slave fails after this long.
    #[serde(default = "default_timeout")]
    pub connect_timeout_s: u64,
}

fn default_user() -> String {
    "postgres".into()
}
fn default_sslmode() -> String {
    "disable".into()
}
fn default_port() -> u16 {
    5432
}
fn default_name() -> String {
    "asterisk".into()
}
fn default_timeout() -> u64 {
    10
}

impl SlaveDbSettings {
    pub fn load(ctx: &Context) -> Result<SlaveDbSettings, ConfigError> {
        let env = ctx.env()?;
        let settings: SlaveDbSettings = from_env(ENV_PREFIX, &env)?;
        if !["disable", "require"].contains(&settings.sslmode.as_str()) {
            return Err(ConfigError::Variable {
                variable: format!("{ENV_PREFIX}SSLMODE"),
                origin: String::new(),
                reason: format!("`{}` is neither disable nor require", settings.sslmode),
            });
        }
        Ok(settings)
    }

    /// The slave database on `address` with these settings.
    pub fn target(&self, address: IpAddr) -> DbTarget {
        let mut config = tokio_postgres::Config::new();
        config
            .host(address.to_string())
            .port(self.port)
            .dbname(&self.name)
            .user(&self.user)
            .application_name("xivo-ha db-replication")
            .connect_timeout(Duration::from_secs(self.connect_timeout_s))
            .ssl_mode(match self.sslmode.as_str() {
                "require" => SslMode::Require,
                _ => SslMode::Disable,
            });
        detect_vanished_peer(&mut config);
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        DbTarget {
            purpose: "slave".into(),
            config,
        }
    }
}

/// Parses an explicit `--source-db`/`--target-db`, with a connect timeout when none is given so
/// that an unreachable host fails instead of hanging the hourly run, and the keepalives of
/// [`detect_vanished_peer`] unless the URL sets its own.
pub fn explicit(purpose: &str, url: &str) -> Result<DbTarget, DbError> {
    let mut target = DbTarget::parse(purpose, url)?;
    // tokio-postgres's defaults: keepalives on, first one after 2 hours, no user timeout.
    let config = &target.config;
    if config.get_keepalives()
        && config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60)
        && config.get_tcp_user_timeout().is_none()
    {
        detect_vanished_peer(&mut target.config);
    }
    if target.config.get_connect_timeout().is_none() {
        target
            .config
            .connect_timeout(Duration::from_secs(default_timeout()));
    }
    if target.config.get_application_name().is_none() {
        target.config.application_name("xivo-ha db-replication");
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_build_a_target_without_leaking_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("custom.env");
        std::fs::write(
            &env,
            "XIVO_HA_SLAVE_DB_USER=replicator\nXIVO_HA_SLAVE_DB_PASSWORD='s3cret'\nXIVO_HA_SLAVE_DB_SSLMODE=require\n",
        )
        .unwrap();
        let ctx = Context::new(dir.path(), "host=/tmp", Some(env.clone()));
        let settings = SlaveDbSettings::load(&ctx).unwrap();
        assert!(!format!("{settings:?}").contains("s3cret"));
        let target = settings.target("192.0.2.10".parse().unwrap());
        assert_eq!(target.describe(), "replicator@192.0.2.10:5432/asterisk");
        assert_eq!(target.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(target.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(target.config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(target.config.get_tcp_user_timeout(), Some(&USER_TIMEOUT));

        // An explicit URL gets them too, unless it chose its own.
        let explicit_target = explicit("slave", "host=192.0.2.10 dbname=asterisk").unwrap();
        assert_eq!(explicit_target.config.get_keepalives_idle(), KEEPALIVE_IDLE);
        let own = explicit("slave", "host=192.0.2.10 keepalives_idle=60").unwrap();
        assert_eq!(own.config.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(own.config.get_tcp_user_timeout(), None);

        std::fs::write(&env, "XIVO_HA_SLAVE_DB_SSLMODE=verify-all\n").unwrap();
        let error = SlaveDbSettings::load(&ctx).unwrap_err().to_string();
        assert!(error.starts_with("XIVO_HA_SLAVE_DB_SSLMODE"), "{error}");
    }
}
