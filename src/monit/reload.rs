//! Asks a running monit to read its check files again (`monit reload`, configurable). When no
//! monit runs here (not installed, stopped, or this is a container that cannot see the host's
//! processes) there is nothing to reload: monit reads the files when it starts, so the reload is
//! skipped with a note rather than failing the command.

use std::path::Path;
use std::process::Command;

use super::MonitError;

/// What happened to monit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The reload command succeeded.
    Reloaded { command: String },
    /// No monit process is visible: nothing to reload.
    NotRunning,
    /// monit runs, but its program is not found here (e.g. inside the container).
    NotInstalled { command: String, pids: Vec<u32> },
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadOutcome::Reloaded { command } => write!(f, "monit reloaded (`{command}`)"),
            ReloadOutcome::NotRunning => f.write_str(
                "monit is not running here: reload skipped (monit reads the checks when it starts)",
            ),
            ReloadOutcome::NotInstalled { command, pids } => write!(
                f,
                "monit runs (pid {}) but `{command}` is not found here: reload skipped; run `monit reload` where monit is installed",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The pids of the processes named `monit` under `proc` (normally `/proc`).
pub fn monit_pids(proc: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(proc.join(pid.to_string()).join("comm"))
                .map(|comm| comm.trim_end() == "monit")
                .unwrap_or(false)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Runs `command` (split on whitespace, no shell) when a monit process is running.
pub fn reload_monit(command: &str) -> Result<ReloadOutcome, MonitError> {
    let pids = monit_pids(Path::new("/proc"));
    if pids.is_empty() {
        return Ok(ReloadOutcome::NotRunning);
    }
    let mut words = command.split_whitespace();
    let program = words.next().ok_or(MonitError::EmptyReloadCommand)?;
    let output = match Command::new(program).args(words).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ReloadOutcome::NotInstalled {
                command: command.to_owned(),
                pids,
            });
        }
        Err(source) => {
            return Err(MonitError::ReloadSpawn {
                command: command.to_owned(),
                source,
            });
        }
    };
    if output.status.success() {
        return Ok(ReloadOutcome::Reloaded {
            command: command.to_owned(),
        });
    }
    // monit prints its reason on stderr (sometimes stdout): keep its first line.
    let said = [&output.stderr, &output.stdout]
        .iter()
        .filter_map(|bytes| {
            String::from_utf8_lossy(bytes)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_owned)
        })
        .next();
    Err(MonitError::ReloadFailed {
        command: command.to_owned(),
        status: match output.status.code() {
            Some(code) => format!("exit {code}"),
            None => "killed by a signal".to_owned(),
        },
        detail: said.map(|s| format!(": {s}")).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_monit_by_process_name() {
        let proc = tempfile::tempdir().unwrap();
        for (pid, comm) in [("12", "monit\n"), ("7", "bash\n"), ("30", "monit\n")] {
            std::fs::create_dir(proc.path().join(pid)).unwrap();
            std::fs::write(proc.path().join(pid).join("comm"), comm).unwrap();
        }
        std::fs::create_dir(proc.path().join("self")).unwrap();
        assert_eq!(monit_pids(proc.path()), vec![12, 30]);
        assert!(monit_pids(Path::new("/nonexistent")).is_empty());
    }
}
