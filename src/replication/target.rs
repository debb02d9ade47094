//! Where the replication reads and writes: the master (source) database and the slave (target)
//! database, from the command line or from the `XIVO_HA_SLAVE_DB_*` settings of custom.env.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::SslMode;

use crate::context::Context;
use crate::db::{DbError, DbTarget};
use crate::secret::Secret;
use crate::settings::{ConfigError, from_env};

/// Prefix of the slave connection settings in custom.env or the environment.
pub const ENV_PREFIX: &str = "XIVO_HA_SLAVE_DB_";

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
/// that an unreachable host fails instead of hanging the hourly run.
pub fn explicit(purpose: &str, url: &str) -> Result<DbTarget, DbError> {
    let mut target = DbTarget::parse(purpose, url)?;
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

        std::fs::write(&env, "XIVO_HA_SLAVE_DB_SSLMODE=verify-all\n").unwrap();
        let error = SlaveDbSettings::load(&ctx).unwrap_err().to_string();
        assert!(error.starts_with("XIVO_HA_SLAVE_DB_SSLMODE"), "{error}");
    }
}
