//! `xivo-ha monitoring-update` (XiVO's `xivo-monitoring-update`): regenerates the monit check
//! files for what is enabled on this node, then has the host's monit reload through its HTTP
//! interface (see [`reload`]).
//!
//! What is enabled:
//! - the HA monitor when HA is on (`ha.conf` says master or slave);
//! - DB Replic when XiVO CC's flag `/var/lib/xivo/xc_enabled` exists;
//! - the slave's telephony containers on a slave, the checks themselves passing while XiVO's
//!   flag `/var/lib/xivo/disabled` ("services kept down") exists: monit follows failover and
//!   failback with no reload. On a master they are XiVO's own checks, left alone;
//! - always, `xivo-ha-reload`, the check through which monit reloads itself.
//!
//! It only ever writes, and removes, files that start with its marker line (see [`checks`]), so
//! XiVO's and the administrator's checks in the same directory are never touched. Writes are
//! atomic; a second run with nothing new changes nothing and does not reload monit.
//!
//! Whoever stops the slave's services (the slave going back to standby) sets the `disabled`
//! flag *before* stopping the containers, as the monitor does: from then on monit's checks pass.
//!
//! [`command`] is the command line's side (arguments, what it prints).

pub mod checks;
pub mod command;
pub mod reload;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::context::Context;
use crate::fsutil::{self, FileError};
use crate::ha::{HaConfig, HaError, NodeType};
use crate::secret::Secret;
use crate::settings::ConfigError;

pub use checks::CheckFile;
pub use reload::ReloadOutcome;

#[derive(Debug, thiserror::Error)]
pub enum MonitError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ha(#[from] HaError),
    #[error(transparent)]
    MonitorSettings(#[from] crate::monitor::settings::SettingsError),
    #[error(
        "{} exists and was not written by xivo-ha (its first line is not xivo-ha's marker): move it out of {} so that xivo-ha can write its check there",
        path.display(),
        dir.display()
    )]
    Foreign { path: PathBuf, dir: PathBuf },
    #[error(
        "`{0}` in XIVO_HA_MONITORING_TELEPHONY_CONTAINERS is not a container name: use letters, digits, `_`, `.` and `-`, separated by commas"
    )]
    BadContainer(String),
    #[error(
        "XIVO_HA_MONITORING_TELEPHONY_CONTAINERS is empty: name the slave's telephony containers (e.g. asterisk)"
    )]
    NoContainers,
    #[error(
        "XIVO_HA_MONITORING_DOCKER `{0}` is not an absolute path: monit runs programs by their full path (e.g. /usr/bin/docker)"
    )]
    RelativeDocker(PathBuf),
    #[error(
        "XIVO_HA_MONITORING_RELOAD_COMMAND `{0}` is not an absolute path and its arguments: monit runs it on the host without a shell, from a quoted string (default `/usr/bin/monit reload`)"
    )]
    BadReloadCommand(String),
    #[error(
        "XIVO_HA_MONITORING_URL `{0}` is not http://HOST:PORT: give monit's HTTP interface, e.g. http://127.0.0.1:2812 (monit's `set httpd port 2812 and use address localhost`)"
    )]
    BadUrl(String),
    #[error(
        "monit at {url} refuses xivo-ha's credentials (401): set XIVO_HA_MONITORING_USER and XIVO_HA_MONITORING_PASSWORD to one of monitrc's `allow user:password`"
    )]
    HttpAuth { url: String },
    #[error(
        "monit at {url} refuses the reload (403): give XIVO_HA_MONITORING_USER a user that is not read-only in monitrc"
    )]
    HttpForbidden { url: String },
    #[error("monit at {url} answered HTTP {status}: check XIVO_HA_MONITORING_URL")]
    HttpStatus { url: String, status: u16 },
}

/// The settings, from `XIVO_HA_MONITORING_*` in custom.env or the environment. `Debug` is
/// derived: the password is a [`Secret`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MonitSettings {
    /// monit's include directory, as a path on the node (under `--root`).
    #[serde(default = "default_conf_dir")]
    pub conf_dir: PathBuf,
    /// The command monit runs on the host to reload itself (`xivo-ha-reload`).
    #[serde(default = "default_reload_command")]
    pub reload_command: String,
    /// monit's HTTP interface.
    #[serde(default = "default_url")]
    pub url: String,
    /// The user and password of monitrc's `allow user:password`, if it asks for one.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// The docker CLI as monit on the host finds it.
    #[serde(default = "default_docker")]
    pub docker: PathBuf,
    /// The containers a slave starts when it takes over (comma-separated).
    #[serde(default = "default_telephony_containers")]
    pub telephony_containers: Vec<String>,
}

fn default_conf_dir() -> PathBuf {
    PathBuf::from("/etc/monit/conf.d")
}

fn default_reload_command() -> String {
    "/usr/bin/monit reload".to_owned()
}

fn default_url() -> String {
    "http://127.0.0.1:2812".to_owned()
}

fn default_docker() -> PathBuf {
    PathBuf::from("/usr/bin/docker")
}

/// Unset: the monitor's own list (`XIVO_HA_MONITOR_CONTAINERS`), filled in by `load`.
fn default_telephony_containers() -> Vec<String> {
    Vec::new()
}

impl Default for MonitSettings {
    fn default() -> Self {
        MonitSettings {
            conf_dir: default_conf_dir(),
            reload_command: default_reload_command(),
            url: default_url(),
            user: None,
            password: None,
            docker: default_docker(),
            telephony_containers: default_telephony_containers(),
        }
    }
}

impl MonitSettings {
    pub const PREFIX: &'static str = "XIVO_HA_MONITORING_";

    /// Reads the settings from the context's custom.env and the environment, and checks them.
    pub fn load(ctx: &Context) -> Result<MonitSettings, MonitError> {
        let env = ctx.env()?;
        let mut settings: MonitSettings = crate::settings::from_env(Self::PREFIX, &env)?;
        // envy splits on commas but keeps blanks: `asterisk, x` and a trailing comma are fine.
        settings.telephony_containers = settings
            .telephony_containers
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        // One list for the monitor that starts them and for monit that watches them.
        if settings.telephony_containers.is_empty() {
            settings.telephony_containers =
                crate::monitor::settings::MonitorSettings::load(&env)?.containers;
        }
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), MonitError> {
        if self.telephony_containers.is_empty() {
            return Err(MonitError::NoContainers);
        }
        for container in &self.telephony_containers {
            let valid = container.starts_with(|c: char| c.is_ascii_alphanumeric())
                && container
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(MonitError::BadContainer(container.clone()));
            }
        }
        if !self.docker.is_absolute() {
            return Err(MonitError::RelativeDocker(self.docker.clone()));
        }
        if !self.reload_command.trim_start().starts_with('/') || self.reload_command.contains('"') {
            return Err(MonitError::BadReloadCommand(self.reload_command.clone()));
        }
        self.interface().authority()?;
        Ok(())
    }

    /// monit's HTTP interface with these settings.
    pub fn interface(&self) -> reload::Interface {
        reload::Interface {
            url: self.url.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }
}

/// The check files this node should have, from its HA settings and XiVO's flag files.
pub fn desired_checks(
    ctx: &Context,
    settings: &MonitSettings,
) -> Result<Vec<CheckFile>, MonitError> {
    let paths = &ctx.paths;
    let ha = HaConfig::load(paths)?;
    let docker = settings.docker.as_path();
    let mut wanted = Vec::new();
    if ha.node_type != NodeType::Disabled {
        wanted.push(checks::monitor(docker, &ha.node_type.to_string()));
    }
    // Flags are named as XiVO knows them (without the --root prefix) in the generated text.
    if paths.xc_enabled().exists() {
        wanted.push(checks::db_replic(
            docker,
            Path::new("/var/lib/xivo/xc_enabled"),
        ));
    }
    // monit tests this file itself: its path as monit on the node sees it.
    if ha.node_type == NodeType::Slave {
        wanted.push(checks::telephony(
            docker,
            &settings.telephony_containers,
            &paths.services_disabled_flag(),
        ));
    }
    wanted.push(checks::reload(
        &reload_stamp(&ctx.paths),
        settings.reload_command.trim(),
    ));
    Ok(wanted)
}

/// The file whose change has monit reload (see [`checks::reload`]).
pub fn reload_stamp(paths: &crate::paths::Paths) -> PathBuf {
    paths.state_dir().join("monit-reload")
}

/// One change made to the conf.d directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Written { path: PathBuf, reason: String },
    Removed { path: PathBuf },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Written { path, reason } => write!(f, "wrote {} ({reason})", path.display()),
            Change::Removed { path } => {
                write!(f, "removed {} (no longer applies)", path.display())
            }
        }
    }
}

/// Brings `dir` in line with `wanted`: writes what differs, removes xivo-ha's files that are no
/// longer wanted. Checks every name first, so that a foreign file stops the run before any
/// change.
pub fn apply(dir: &Path, wanted: &[CheckFile]) -> Result<Vec<Change>, MonitError> {
    let mut writes = Vec::new();
    for check in wanted {
        let path = dir.join(check.name);
        let is_file = path.symlink_metadata().map(|m| m.is_file());
        let current = match is_file {
            Ok(true) => fsutil::read_optional(&path)?,
            Ok(false) => {
                return Err(MonitError::Foreign {
                    path,
                    dir: dir.to_owned(),
                });
            }
            Err(_) => None,
        };
        match current {
            Some(text) if text == check.contents.as_bytes() => {}
            Some(text) if !checks::is_ours(&text) => {
                return Err(MonitError::Foreign {
                    path,
                    dir: dir.to_owned(),
                });
            }
            _ => writes.push((path, check)),
        }
    }
    let mut changes = Vec::new();
    for (path, check) in writes {
        fsutil::write_atomic(&path, check.contents.as_bytes(), Some(0o644))?;
        changes.push(Change::Written {
            path,
            reason: check.reason.clone(),
        });
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(changes),
        Err(e) => return Err(FileError::new("list", dir, e).into()),
    };
    let mut stale = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FileError::new("list", dir, e))?;
        let name = entry.file_name();
        if wanted.iter().any(|c| name == c.name) {
            continue;
        }
        // Regular files only: links and directories are never xivo-ha's.
        if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        let path = entry.path();
        if let Some(text) = fsutil::read_optional(&path)?
            && checks::is_ours(&text)
        {
            stale.push(path);
        }
    }
    stale.sort();
    for path in stale {
        match std::fs::remove_file(&path) {
            Ok(()) => changes.push(Change::Removed { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(FileError::new("remove", &path, e).into()),
        }
    }
    if changes.iter().any(|c| matches!(c, Change::Removed { .. })) {
        fsutil::sync_dir(dir)?;
    }
    Ok(changes)
}

/// A new content for the stamp file: monit reloads when it sees it change.
fn write_stamp(stamp: &Path) -> Result<(), MonitError> {
    if let Some(dir) = stamp.parent() {
        std::fs::create_dir_all(dir).map_err(|e| FileError::new("create", dir, e))?;
    }
    let text = format!(
        "{} {:016x}\n",
        chrono::Utc::now().to_rfc3339(),
        rand::random::<u64>()
    );
    fsutil::write_atomic(stamp, text.as_bytes(), Some(0o644))?;
    Ok(())
}

/// The monitor's call when what runs on this node changes (its role at start-up, a new
/// ha.conf): `monitoring-update` with its reload, logged; it never stops the monitor. Failover
/// and failback need no call: the slave's checks read XiVO's flag themselves.
pub fn follow(ctx: &Context) {
    match update(ctx, None, true) {
        Ok(outcome) => {
            for change in &outcome.changes {
                tracing::info!("monit: {change}");
            }
            match &outcome.reload {
                Some(reload @ ReloadOutcome::Reloaded { .. }) => tracing::info!("{reload}"),
                Some(other) => tracing::warn!("{other}"),
                None => {}
            }
        }
        Err(e) => tracing::warn!("monit's checks not updated: {e}"),
    }
}

/// What `monitoring-update` did.
#[derive(Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    pub changes: Vec<Change>,
    /// `None` when nothing changed or the reload was not asked for.
    pub reload: Option<ReloadOutcome>,
}

/// The whole command. `conf_dir` overrides the setting (a path on the node, under `--root`).
pub fn update(ctx: &Context, conf_dir: Option<&Path>, reload: bool) -> Result<Outcome, MonitError> {
    let settings = MonitSettings::load(ctx)?;
    let dir = ctx
        .paths
        .under(conf_dir.unwrap_or(settings.conf_dir.as_path()));
    let wanted = desired_checks(ctx, &settings)?;
    let stamp = reload_stamp(&ctx.paths);
    // The reload check's file must exist before monit loads the check.
    if !stamp.exists() {
        write_stamp(&stamp)?;
    }
    let changes = apply(&dir, &wanted)?;
    let reload = if reload && !changes.is_empty() {
        write_stamp(&stamp)?;
        let services: Vec<String> = wanted.iter().flat_map(|c| c.services.clone()).collect();
        Some(reload::reload_monit(
            &settings.interface(),
            checks::NAME_PREFIX,
            checks::RELOAD_FILE,
            &services,
        )?)
    } else {
        None
    };
    Ok(Outcome {
        dir,
        changes,
        reload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, body: &str) -> CheckFile {
        CheckFile {
            name,
            reason: "test".into(),
            contents: format!("{}\n{body}\n", checks::MARKER),
            services: vec![name.to_owned()],
        }
    }

    #[test]
    fn apply_writes_removes_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("asterisk"), "check process asterisk\n").unwrap();
        let changes = apply(d, &[check("a", "one"), check("b", "two")]).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(
            apply(d, &[check("a", "one"), check("b", "two")])
                .unwrap()
                .is_empty()
        );
        let changes = apply(d, &[check("a", "uno")]).unwrap();
        assert_eq!(
            changes,
            vec![
                Change::Written {
                    path: d.join("a"),
                    reason: "test".into()
                },
                Change::Removed { path: d.join("b") }
            ]
        );
        assert_eq!(
            std::fs::read_to_string(d.join("asterisk")).unwrap(),
            "check process asterisk\n"
        );
    }

    #[test]
    fn a_foreign_file_of_the_same_name_stops_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("b"), "# mine\n").unwrap();
        let error = apply(d, &[check("a", "one"), check("b", "two")]).unwrap_err();
        assert!(matches!(error, MonitError::Foreign { .. }), "{error}");
        assert!(error.to_string().contains("move it out"), "{error}");
        assert!(!d.join("a").exists(), "nothing written before the check");
        assert_eq!(std::fs::read_to_string(d.join("b")).unwrap(), "# mine\n");
    }

    #[test]
    fn settings_are_checked() {
        let mut settings = MonitSettings::default();
        // Unset, the list comes from the monitor's settings (in `load`); never empty.
        assert!(matches!(settings.check(), Err(MonitError::NoContainers)));
        settings.telephony_containers = vec!["asterisk".into(), "monit".into()];
        assert!(settings.check().is_ok());
        settings.telephony_containers = vec!["asterisk; rm -rf /".into()];
        assert!(matches!(settings.check(), Err(MonitError::BadContainer(_))));
        settings.telephony_containers = vec!["asterisk".into()];
        settings.docker = PathBuf::from("docker");
        assert!(matches!(
            settings.check(),
            Err(MonitError::RelativeDocker(_))
        ));
        settings.docker = default_docker();
        settings.reload_command = "monit reload".into();
        assert!(matches!(
            settings.check(),
            Err(MonitError::BadReloadCommand(_))
        ));
        settings.reload_command = default_reload_command();
        settings.url = "https://127.0.0.1:2812".into();
        assert!(matches!(settings.check(), Err(MonitError::BadUrl(_))));
        settings.url = default_url();
        settings.password = Some(Secret::new("s3cret"));
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
