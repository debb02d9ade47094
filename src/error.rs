//! The crate's error type: one variant per component, each a one-line message that names the
//! thing that is wrong and the fix. `main` prints it and exits non-zero.

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    DbReplic(#[from] crate::dbreplic::DbReplicError),
    #[error(transparent)]
    File(#[from] crate::fsutil::FileError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Monit(#[from] crate::monit::MonitError),
    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplicationError),
    #[error(transparent)]
    Ha(#[from] crate::ha::HaError),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// The command line asks for something this node cannot do.
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// 2 for a command line that cannot be acted on, 1 for everything else.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}
