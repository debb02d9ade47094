//! DB Replic's own log, `/var/log/xivo-db-replication/db-replic.log` (XiVO CC's place for it):
//! start, stop, sink failures and recoveries, configuration refreshes, one line each. The same
//! events also go to stderr through `tracing`. The directory is created when missing (owned by
//! daemon:daemon, as XiVO CC's DB Replic expects, when running as root).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write DB Replic's log directory {}: {reason}: make it a writable directory owned by daemon:daemon (mkdir -p {}; chown daemon:daemon {})",
    .path.display(), .path.display(), .path.display()
)]
pub struct LogDirError {
    pub path: PathBuf,
    pub reason: String,
}

pub struct LogFile {
    file: Mutex<File>,
}

pub const LOG_FILE_NAME: &str = "db-replic.log";

impl LogFile {
    /// Creates the directory when missing and opens the log for appending.
    pub fn open(dir: &Path) -> Result<LogFile, LogDirError> {
        let error = |e: std::io::Error| LogDirError {
            path: dir.to_owned(),
            reason: e.to_string(),
        };
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(error)?;
            give_to_daemon(dir);
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE_NAME))
            .map_err(error)?;
        Ok(LogFile {
            file: Mutex::new(file),
        })
    }

    /// One line: time, level, message. A failing write is reported on stderr only: the log is
    /// not worth stopping the delivery for.
    pub fn line(&self, level: &str, message: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(file, "{now} {level} {message}") {
            tracing::warn!("cannot append to DB Replic's log: {e}");
        }
    }
}

/// XiVO CC's DB Replic runs as daemon: hand it the directory we created, when we can.
fn give_to_daemon(dir: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let user = nix::unistd::User::from_name("daemon").ok().flatten();
    let group = nix::unistd::Group::from_name("daemon").ok().flatten();
    if let (Some(user), Some(group)) = (user, group)
        && let Err(e) = nix::unistd::chown(dir, Some(user.uid), Some(group.gid))
    {
        tracing::warn!("cannot give {} to daemon:daemon: {e}", dir.display());
    }
}
