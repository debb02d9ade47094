//! DB Replic's settings, read from XiVO CC's `custom.env` (environment variables win) with
//! envy, and checked before anything starts: the reporting database, Elasticsearch, the HA
//! mode, the origin name and the batching knobs. The variables, their defaults and help are
//! declared in the settings catalog (src/settings/catalog.rs, listed in docs/settings.md).
//! Secrets (the passwords, the Elasticsearch URL) live in [`Secret`], so they never reach a log
//! line or a state file.

use std::time::Duration;

use elasticsearch::http::Url;
use serde::Deserialize;

use crate::db::DbTarget;
pub use crate::secret::Secret;
use crate::settings::{ConfigError, EnvFile, from_env};

/// XiVO CC's reporting PostgreSQL (the `pgxivocc` container) is published on port 5443.
pub const DEFAULT_REPORTING_DB_PORT: u16 = 5443;
pub const DEFAULT_REPORTING_DB_NAME: &str = "xivo_stats";
/// XiVO CC's reporting database account, as its containers ship it.
pub const DEFAULT_REPORTING_DB_USER: &str = "asterisk";
pub const DEFAULT_REPORTING_DB_PASSWORD: &str = "asterisk";

/// The variables exactly as envy reads them (unprefixed, upper-case field names).
#[derive(Debug, Deserialize)]
struct Raw {
    reporting_db_host: String,
    #[serde(default = "default_port")]
    reporting_db_port: u16,
    #[serde(default = "default_db_name")]
    reporting_db_name: String,
    #[serde(default = "default_db_user")]
    reporting_db_user: String,
    #[serde(default = "default_db_password")]
    reporting_db_password: Secret,
    elasticsearch: Secret,
    elasticsearch_user: Option<String>,
    elasticsearch_password: Option<Secret>,
    #[serde(default)]
    is_ha_slave: bool,
    db_replic_origin: Option<String>,
    #[serde(default = "default_poll_ms")]
    db_replic_poll_ms: u64,
    #[serde(default = "default_batch_rows")]
    db_replic_batch_rows: usize,
    #[serde(default = "default_batch_bytes")]
    db_replic_batch_bytes: usize,
    #[serde(default = "default_cel_index")]
    db_replic_cel_index: String,
    #[serde(default = "default_queue_log_index")]
    db_replic_queue_log_index: String,
    #[serde(default = "default_config_interval_s")]
    db_replic_config_interval_s: u64,
    #[serde(default = "default_retry_initial_ms")]
    db_replic_retry_initial_ms: u64,
    #[serde(default = "default_gap_wait_ms")]
    db_replic_gap_wait_ms: u64,
    #[serde(default = "default_reconcile_ms")]
    db_replic_reconcile_ms: u64,
}

fn default_port() -> u16 {
    DEFAULT_REPORTING_DB_PORT
}
fn default_db_name() -> String {
    DEFAULT_REPORTING_DB_NAME.into()
}
fn default_db_user() -> String {
    DEFAULT_REPORTING_DB_USER.into()
}
fn default_db_password() -> Secret {
    Secret::new(DEFAULT_REPORTING_DB_PASSWORD)
}
fn default_poll_ms() -> u64 {
    100
}
fn default_batch_rows() -> usize {
    10_000
}
fn default_batch_bytes() -> usize {
    5_000_000
}
fn default_cel_index() -> String {
    "cel".into()
}
fn default_queue_log_index() -> String {
    "queue_log".into()
}
fn default_config_interval_s() -> u64 {
    300
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_gap_wait_ms() -> u64 {
    5000
}
fn default_reconcile_ms() -> u64 {
    300_000
}

/// The reporting PostgreSQL (XiVO CC's `xivo_stats`).
#[derive(Clone, Debug)]
pub struct ReportingDb {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Secret,
}

impl ReportingDb {
    /// A connection target; the password goes into the driver's config, never into a string
    /// that could be logged.
    pub fn target(&self) -> DbTarget {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(&self.user)
            .password(self.password.expose())
            .application_name("xivo-ha db-replic")
            .connect_timeout(Duration::from_secs(10));
        DbTarget {
            purpose: "reporting".into(),
            config,
        }
    }
}

/// Elasticsearch: base URL and optional basic-auth credentials.
#[derive(Clone, Debug)]
pub struct Elasticsearch {
    /// Without credentials (they are moved out of the URL into `user`/`password`).
    pub url: Url,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Clone, Debug)]
pub struct DbReplicSettings {
    pub reporting: ReportingDb,
    pub elasticsearch: Elasticsearch,
    /// HA mode: forward only cel and queue_log, never the configuration tables.
    pub ha_slave: bool,
    /// This node's name in every forwarded row (the reporting key is (origin, id)).
    pub origin: String,
    pub poll: Duration,
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub cel_index: String,
    pub queue_log_index: String,
    pub config_interval: Duration,
    /// First retry delay; doubles up to 30 s.
    pub retry_initial: Duration,
    /// The least time a hole in the ids is waited for, even when no transaction that could
    /// fill it is open (see holes.rs).
    pub gap_wait: Duration,
    /// How often each (table, sink) runs the reconciliation pass (see reconcile.rs).
    pub reconcile: Duration,
}

impl DbReplicSettings {
    /// Reads and checks every variable; the first problem is one line naming the variable
    /// (and its line in the file).
    pub fn load(file: &EnvFile) -> Result<DbReplicSettings, ConfigError> {
        let raw: Raw = from_env("", file)?;
        let nonempty = |variable: &str, value: &str| {
            if value.trim().is_empty() {
                Err(file.variable_error(variable, "is empty: give it a value"))
            } else {
                Ok(())
            }
        };
        nonempty("REPORTING_DB_HOST", &raw.reporting_db_host)?;
        let mut url = Url::parse(raw.elasticsearch.expose().trim()).map_err(|e| {
            file.variable_error(
                "ELASTICSEARCH",
                format!(
                    "`{}` is not a URL ({e}): write e.g. ELASTICSEARCH=http://xivocc:9200",
                    raw.elasticsearch.masked_url()
                ),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(file.variable_error(
                "ELASTICSEARCH",
                format!(
                    "`{}` is not an http(s) URL with a host: write e.g. ELASTICSEARCH=http://xivocc:9200",
                    raw.elasticsearch.masked_url()
                ),
            ));
        }
        // Credentials in the URL are accepted and moved out, so that the URL can be logged.
        let mut user = raw.elasticsearch_user.filter(|u| !u.is_empty());
        let mut password = raw.elasticsearch_password;
        if !url.username().is_empty() {
            user.get_or_insert_with(|| url.username().to_owned());
            if let Some(p) = url.password() {
                password.get_or_insert_with(|| Secret::new(p));
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        if raw.db_replic_batch_rows == 0 {
            return Err(file.variable_error("DB_REPLIC_BATCH_ROWS", "must be at least 1"));
        }
        if raw.db_replic_poll_ms == 0 {
            return Err(file.variable_error("DB_REPLIC_POLL_MS", "must be at least 1"));
        }
        for (variable, index) in [
            ("DB_REPLIC_CEL_INDEX", &raw.db_replic_cel_index),
            ("DB_REPLIC_QUEUE_LOG_INDEX", &raw.db_replic_queue_log_index),
        ] {
            // Elasticsearch's own rules for index names, in short.
            let valid = !index.is_empty()
                && !index.starts_with(['-', '_', '+'])
                && index
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(file.variable_error(
                    variable,
                    format!("`{index}` is not an Elasticsearch index name (lower case letters, digits, - _ .)"),
                ));
            }
        }
        let origin = match raw.db_replic_origin.filter(|o| !o.trim().is_empty()) {
            Some(origin) => origin,
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        if origin.is_empty() {
            return Err(file.variable_error(
                "DB_REPLIC_ORIGIN",
                "not set and the host name is empty: set DB_REPLIC_ORIGIN to this node's name",
            ));
        }
        Ok(DbReplicSettings {
            reporting: ReportingDb {
                host: raw.reporting_db_host,
                port: raw.reporting_db_port,
                dbname: raw.reporting_db_name,
                user: raw.reporting_db_user,
                password: raw.reporting_db_password,
            },
            elasticsearch: Elasticsearch {
                url,
                user,
                password,
            },
            ha_slave: raw.is_ha_slave,
            origin,
            poll: Duration::from_millis(raw.db_replic_poll_ms),
            batch_rows: raw.db_replic_batch_rows,
            batch_bytes: raw.db_replic_batch_bytes.max(1),
            cel_index: raw.db_replic_cel_index,
            queue_log_index: raw.db_replic_queue_log_index,
            config_interval: Duration::from_secs(raw.db_replic_config_interval_s.max(1)),
            retry_initial: Duration::from_millis(raw.db_replic_retry_initial_ms.max(1)),
            gap_wait: Duration::from_millis(raw.db_replic_gap_wait_ms),
            reconcile: Duration::from_millis(raw.db_replic_reconcile_ms.max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::env_file::refusal;
    use std::path::Path;

    fn parse(text: &str) -> Result<DbReplicSettings, ConfigError> {
        let file = EnvFile::parse(Path::new("/etc/docker/xivo/custom.env"), text).unwrap();
        DbReplicSettings::load(&file)
    }

    #[test]
    fn the_variables_and_defaults_are_the_catalogs() {
        use crate::settings::catalog::{Component, check_struct};
        check_struct::<Raw>(
            Component::DbReplic,
            "",
            &[
                ("REPORTING_DB_HOST", "h"),
                ("ELASTICSEARCH", "http://es:9200"),
            ],
        );
    }

    #[test]
    fn defaults_are_xivo_ccs() {
        let s = parse("REPORTING_DB_HOST=10.0.0.5\nELASTICSEARCH=http://10.0.0.5:9200\n").unwrap();
        assert_eq!(s.reporting.port, 5443);
        assert_eq!(s.reporting.dbname, "xivo_stats");
        assert_eq!(s.reporting.user, "asterisk");
        assert!(!s.ha_slave);
        assert_eq!((s.batch_rows, s.batch_bytes), (10_000, 5_000_000));
        assert_eq!(s.poll, Duration::from_millis(100));
        assert_eq!(s.reconcile, Duration::from_secs(300));
        assert_eq!(
            (s.cel_index.as_str(), s.queue_log_index.as_str()),
            ("cel", "queue_log")
        );
        assert!(!s.origin.is_empty());
    }

    #[test]
    fn credentials_leave_the_url_and_never_print() {
        let s = parse(
            "REPORTING_DB_HOST=h\nREPORTING_DB_PASSWORD=pgs3cret\nELASTICSEARCH=https://elastic:ess3cret@es:9200/\n",
        )
        .unwrap();
        assert_eq!(s.elasticsearch.url.as_str(), "https://es:9200/");
        assert_eq!(s.elasticsearch.user.as_deref(), Some("elastic"));
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        let target = s.reporting.target().describe();
        assert!(!target.contains("s3cret"), "{target}");
    }

    #[test]
    fn bad_values_name_variable_and_line() {
        let e = refusal(parse(
            "REPORTING_DB_HOST=h\nELASTICSEARCH=http://es:9200\nIS_HA_SLAVE=maybe\n",
        ));
        assert!(
            e.starts_with("IS_HA_SLAVE (/etc/docker/xivo/custom.env line 3)"),
            "{e}"
        );
        let e = refusal(parse("REPORTING_DB_HOST=h\n\nELASTICSEARCH=es:9200 x\n"));
        assert!(
            e.starts_with("ELASTICSEARCH (/etc/docker/xivo/custom.env line 3)"),
            "{e}"
        );
        let e = refusal(parse("ELASTICSEARCH=http://es:9200\n"));
        assert!(e.starts_with("REPORTING_DB_HOST: not set"), "{e}");
        let e = refusal(parse("REPORTING_DB_HOST=h\nELASTICSEARCH=http://u:pw@\n"));
        assert!(!e.contains("pw"), "{e}");
    }
}
