//! What every command receives from the global options: where the filesystem is (`--root`),
//! which database holds this node's configuration (`--db`), and the `custom.env` file; and the
//! one place where the global settings are resolved: command line, then environment, then the
//! site file, then the default of `crate::settings::catalog`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::cli::LogFormat;
use crate::db::{DbError, DbTarget};
use crate::paths::Paths;
use crate::secret::Secret;
use crate::settings::{ConfigError, EnvFile};

#[derive(Clone, Debug)]
pub struct Context {
    pub paths: Paths,
    /// The local XiVO configuration database (`--db`); may hold a password.
    pub db_url: Secret,
    /// `--env-file`, or XiVO CC's custom.env under the root.
    pub env_file: PathBuf,
}

/// The global settings (`XIVO_HA_*` of the catalog's Global component that the site file may
/// give), read like every other settings struct: environment over site file over default.
#[derive(Clone, Debug)]
pub struct GlobalSettings {
    /// May hold a password.
    pub db: Secret,
    pub log_format: LogFormat,
    pub log: String,
    pub pg_ca_file: Option<PathBuf>,
}

/// The variables as envy reads them; see [`GlobalSettings`] for the checked form.
#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default = "default_db")]
    db: Secret,
    #[serde(default = "default_log_format")]
    log_format: String,
    #[serde(default = "default_log")]
    log: String,
    #[serde(default)]
    pg_ca_file: Option<PathBuf>,
}

fn default_db() -> Secret {
    Secret::new(crate::db::DEFAULT_CONFIG_DB)
}
fn default_log_format() -> String {
    "human".to_owned()
}
fn default_log() -> String {
    "info".to_owned()
}

impl GlobalSettings {
    pub const PREFIX: &'static str = "XIVO_HA_";

    pub fn load(file: &EnvFile) -> Result<GlobalSettings, ConfigError> {
        let raw: Raw = crate::settings::from_env(Self::PREFIX, file)?;
        let log_format = <LogFormat as clap::ValueEnum>::from_str(raw.log_format.trim(), true)
            .map_err(|_| {
                file.variable_error(
                    "XIVO_HA_LOG_FORMAT",
                    format!("`{}` is neither human nor json", raw.log_format),
                )
            })?;
        Ok(GlobalSettings {
            db: raw.db,
            log_format,
            log: raw.log,
            pg_ca_file: raw.pg_ca_file,
        })
    }
}

/// A command's start: the context, the global settings and the site file's warnings.
#[derive(Debug)]
pub struct Start {
    pub ctx: Context,
    pub global: GlobalSettings,
    /// For `tracing::warn!` once logging is set up (see `crate::settings::site_file_warnings`).
    pub warnings: Vec<String>,
}

impl Context {
    pub fn new(
        root: impl Into<PathBuf>,
        db_url: impl Into<String>,
        env_file: Option<PathBuf>,
    ) -> Self {
        let paths = Paths::new(root);
        let env_file = env_file.unwrap_or_else(|| paths.custom_env());
        Context {
            paths,
            db_url: Secret::new(db_url),
            env_file,
        }
    }

    /// The context of a command line: reads the site file once, resolves the global settings
    /// (`--db` over `XIVO_HA_DB` in the environment over the site file over the default) and
    /// says what looks wrong in the file.
    pub fn start(
        root: impl Into<PathBuf>,
        db: Option<String>,
        env_file: Option<PathBuf>,
    ) -> Result<Start, ConfigError> {
        let mut ctx = Context::new(root, "", env_file);
        let file = ctx.env()?;
        let global = GlobalSettings::load(&file)?;
        ctx.db_url = db.map_or_else(|| global.db.clone(), Secret::new);
        Ok(Start {
            ctx,
            global,
            warnings: crate::settings::site_file_warnings(&file),
        })
    }

    /// The local configuration database.
    pub fn config_db(&self) -> Result<DbTarget, DbError> {
        DbTarget::parse("configuration", self.db_url.expose())
    }

    /// The `custom.env` file (empty when missing).
    pub fn env(&self) -> Result<EnvFile, ConfigError> {
        EnvFile::load(&self.env_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::catalog::{Component, check_struct};

    #[test]
    fn global_settings_match_the_catalog() {
        check_struct::<Raw>(Component::Global, GlobalSettings::PREFIX, &[]);
    }

    #[test]
    fn a_bad_log_format_names_the_variable_and_line() {
        let file = EnvFile::parse(
            std::path::Path::new("/x/custom.env"),
            "XIVO_HA_LOG_FORMAT=jsn\n",
        )
        .unwrap();
        let error = GlobalSettings::load(&file).unwrap_err().to_string();
        assert_eq!(
            error,
            "XIVO_HA_LOG_FORMAT (/x/custom.env line 1): `jsn` is neither human nor json"
        );
    }
}
