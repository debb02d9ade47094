//! What every command receives from the global options: where the filesystem is (`--root`),
//! which database holds this node's configuration (`--db`), and the `custom.env` file.

use std::path::PathBuf;

use crate::config::{ConfigError, EnvFile};
use crate::db::{DbError, DbTarget};
use crate::paths::Paths;
use crate::secret::Secret;

#[derive(Clone, Debug)]
pub struct Context {
    pub paths: Paths,
    /// The local XiVO configuration database (`--db`); may hold a password.
    pub db_url: Secret,
    /// `--env-file`, or XiVO CC's custom.env under the root.
    pub env_file: PathBuf,
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

    /// The local configuration database.
    pub fn config_db(&self) -> Result<DbTarget, DbError> {
        DbTarget::parse("configuration", self.db_url.expose())
    }

    /// The `custom.env` file (empty when missing).
    pub fn env(&self) -> Result<EnvFile, ConfigError> {
        EnvFile::load(&self.env_file)
    }
}
