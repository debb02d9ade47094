//! The program's error at the edge: the error of whichever command ran, wrapped by the
//! dispatch in [`crate::cli`] for its exit code (2 for a command line that cannot be acted on,
//! 1 for everything else) and its one-line message, which names the thing that is wrong and
//! the fix. Components return their own error types and never this one.

use std::process::ExitCode;

use crate::dbreplic::DbReplicError;
use crate::fsutil::FileError;
use crate::ha::HaError;
use crate::links::LinksError;
use crate::monit::MonitError;
use crate::monitor::MonitorError;
use crate::replication::ReplicationError;
use crate::settings::ConfigError;
use crate::sync::SyncError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    DbReplic(#[from] DbReplicError),
    #[error(transparent)]
    Ha(#[from] HaError),
    /// A command whose only failure is a file (`maintenance`).
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Links(#[from] LinksError),
    #[error(transparent)]
    Monit(#[from] MonitError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// The site file or a global setting (read before any command runs).
    #[error(transparent)]
    Settings(#[from] ConfigError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// 2 for a command line that cannot be acted on, 1 for everything else.
    pub fn exit_code(&self) -> ExitCode {
        let usage = match self {
            Error::Ha(e) => matches!(e, HaError::Usage(_)),
            Error::Links(e) => e.is_usage(),
            Error::Monitor(e) => matches!(e, MonitorError::Usage(_)),
            Error::Replication(e) => matches!(e, ReplicationError::BadSlaveIp(_)),
            Error::DbReplic(_)
            | Error::File(_)
            | Error::Monit(_)
            | Error::Settings(_)
            | Error::Sync(_) => false,
        };
        if usage {
            ExitCode::from(2)
        } else {
            ExitCode::FAILURE
        }
    }
}
