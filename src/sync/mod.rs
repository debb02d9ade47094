//! File sync from the master to the slave over SSH (XiVO's `xivo-sync`): the settings, the
//! commands `sync`, `sync -i` and `sync --back`, the runs the monitor calls (the hourly sync,
//! and the copy-back, `sync --back` without a human, at the failback and every hour), the lock
//! that keeps two runs from overlapping, and the state each run leaves for `status`.
//!
//! - [`dirs`]: the directory lists and their checks.
//! - [`ssh`]: ssh options, host key policy, error explanations.
//! - [`rsync`]: running rsync and parsing what it did.
//! - [`listing`]: which of the slave's files a copy-back brings home (what changed there since
//!   the last copy-back), listed on the slave.
//! - [`keys`]: `sync -i`, the dedicated key.
//! - [`command`]: `xivo-ha sync`'s arguments and output.

pub mod command;
pub mod dirs;
pub mod keys;
pub mod listing;
pub mod rsync;
pub mod ssh;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::alert::{Event, Kind};
use crate::context::Context;
use crate::fsutil::FileError;
use crate::ha::{HaConfig, NodeType};
use crate::settings::ConfigError;
use crate::status::documents::{Component, SlaveListing, SyncDetails, SyncDoc};
use crate::status::store;
use ssh::SshTarget;

/// The master's dedicated key, XiVO's path (the name says RSA; xivo-ha makes an ed25519 key).
pub const KEY_PATH: &str = "/root/.ssh/xivo_id_rsa";
/// Where the slave's host key is recorded on first contact.
pub const KNOWN_HOSTS_PATH: &str = "/root/.ssh/known_hosts";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{variable}: {reason}")]
    BadSetting {
        variable: &'static str,
        reason: String,
    },
    #[error(
        "this node is {node_type}, not a master: the master creates the sync key and pushes its files (`xivo-ha configure master <slave_ip>` first)"
    )]
    NotMaster { node_type: NodeType },
    #[error("no sync key at {}: create it and install it on the slave with `xivo-ha sync -i`", path.display())]
    NoKey { path: PathBuf },
    #[error(
        "the sync key {} already exists: test it with `{test}`; to make a new one, remove it and its .pub first",
        path.display()
    )]
    KeyExists { path: PathBuf, test: String },
    #[error("cannot run {program}: {source} (install the openssh-client and rsync packages)")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("ssh-keygen failed: {0}")]
    Keygen(String),
    #[error(
        "the slave {host}'s SSH host key is not the one recorded in {}: if the slave was reinstalled, forget the old key with `ssh-keygen -R '{entry}' -f {}` and run again; otherwise someone may be answering in its place",
        known_hosts.display(), known_hosts.display()
    )]
    HostKeyChanged {
        host: String,
        entry: String,
        known_hosts: PathBuf,
    },
    #[error("{what} {target} failed: {reason}: {hint}")]
    Remote {
        what: String,
        target: String,
        reason: String,
        hint: String,
    },
    #[error("cannot install the sync key on {target}: {reason}: {hint} (the new key was removed)")]
    Install {
        target: String,
        reason: String,
        hint: &'static str,
    },
    #[error(
        "the key was appended to {authorized_keys} on {target} but the slave does not accept it ({reason}): check sshd's AuthorizedKeysFile there and XIVO_HA_SSH_AUTHORIZED_KEYS (the new key was removed)"
    )]
    NotAccepted {
        target: String,
        authorized_keys: String,
        reason: String,
    },
    #[error(
        "`{0}` holds both kinds of quotes: rsync cannot pass it to ssh; use a path without quotes"
    )]
    UnquotablePath(String),
    #[error("another sync is running (lock {} held): wait for it, the next run tries again", path.display())]
    Busy { path: PathBuf },
    #[error(
        "the sync to {remote} is held: the last copy-back failed ({copy_back_error}) and XIVO_HA_SYNC_DIRS includes {dir}, {}: its --delete-after would remove on the slave what the slave made while it served; run `xivo-ha sync --back` until it succeeds, then sync again",
        brought_home(dir, back_dir)
    )]
    HeldForCopyBack {
        remote: String,
        copy_back_error: String,
        dir: String,
        back_dir: String,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Ha(#[from] crate::ha::HaError),
}

/// The settings, from custom.env and the environment (prefix `XIVO_HA_`).
#[derive(Debug, Deserialize)]
struct RawSettings {
    sync_dirs: Option<String>,
    sync_back_dirs: Option<String>,
    #[serde(default = "default_port")]
    ssh_port: u16,
    #[serde(default = "default_user")]
    ssh_user: String,
    #[serde(default = "default_remote_root")]
    sync_remote_root: String,
    #[serde(default = "default_authorized_keys")]
    ssh_authorized_keys: String,
    #[serde(default = "default_ssh_config")]
    ssh_config: String,
    #[serde(default = "default_connect_timeout")]
    ssh_connect_timeout: u32,
    #[serde(default = "default_io_timeout")]
    sync_io_timeout: u32,
}

fn default_port() -> u16 {
    22
}
fn default_user() -> String {
    "root".into()
}
fn default_remote_root() -> String {
    "/".into()
}
fn default_authorized_keys() -> String {
    ".ssh/authorized_keys".into()
}
fn default_ssh_config() -> String {
    "none".into()
}
fn default_connect_timeout() -> u32 {
    10
}
fn default_io_timeout() -> u32 {
    300
}

/// The checked settings of the file sync.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// `XIVO_HA_SYNC_DIRS`: what the master mirrors to the slave.
    pub dirs: Vec<String>,
    /// `XIVO_HA_SYNC_BACK_DIRS`: what `--back` brings back.
    pub back_dirs: Vec<String>,
    /// `XIVO_HA_SSH_PORT` (22).
    pub port: u16,
    /// `XIVO_HA_SSH_USER` (root).
    pub user: String,
    /// `XIVO_HA_SYNC_REMOTE_ROOT` (/): the slave's tree the directories are copied into.
    pub remote_root: String,
    /// `XIVO_HA_SSH_AUTHORIZED_KEYS` (.ssh/authorized_keys, under the remote user's home).
    pub authorized_keys: String,
    /// `XIVO_HA_SSH_CONFIG` (none): ssh's `-F`.
    pub ssh_config: String,
    /// `XIVO_HA_SSH_CONNECT_TIMEOUT` (10 s).
    pub connect_timeout: u32,
    /// `XIVO_HA_SYNC_IO_TIMEOUT` (300 s): rsync gives up when no data moves for that long.
    pub io_timeout: u32,
}

impl SyncSettings {
    pub fn load(ctx: &Context) -> Result<SyncSettings, SyncError> {
        let raw: RawSettings = crate::settings::from_env("XIVO_HA_", &ctx.env()?)?;
        let list = |variable: &'static str, value: Option<String>, default: &[&str]| match value {
            None => Ok(dirs::defaults(default)),
            Some(text) => {
                dirs::parse_list(&text).map_err(|reason| SyncError::BadSetting { variable, reason })
            }
        };
        let bad = |variable, reason: &str| SyncError::BadSetting {
            variable,
            reason: reason.to_owned(),
        };
        if !raw.sync_remote_root.starts_with('/') {
            return Err(bad(
                "XIVO_HA_SYNC_REMOTE_ROOT",
                "must be an absolute path on the slave (default /)",
            ));
        }
        let user_ok = !raw.ssh_user.is_empty()
            && !raw.ssh_user.starts_with('-')
            && !raw
                .ssh_user
                .contains(|c: char| c == '@' || c == ':' || c.is_whitespace());
        if !user_ok {
            return Err(bad(
                "XIVO_HA_SSH_USER",
                "must be a plain user name (default root)",
            ));
        }
        if raw.ssh_port == 0 {
            return Err(bad(
                "XIVO_HA_SSH_PORT",
                "must be a TCP port, 1-65535 (default 22)",
            ));
        }
        if raw.ssh_authorized_keys.trim().is_empty() {
            return Err(bad(
                "XIVO_HA_SSH_AUTHORIZED_KEYS",
                "must name a file (default .ssh/authorized_keys)",
            ));
        }
        Ok(SyncSettings {
            dirs: list("XIVO_HA_SYNC_DIRS", raw.sync_dirs, dirs::SYNC_DIRS)?,
            back_dirs: list(
                "XIVO_HA_SYNC_BACK_DIRS",
                raw.sync_back_dirs,
                dirs::BACK_DIRS,
            )?,
            port: raw.ssh_port,
            user: raw.ssh_user,
            remote_root: raw.sync_remote_root,
            authorized_keys: raw.ssh_authorized_keys,
            ssh_config: raw.ssh_config,
            connect_timeout: raw.ssh_connect_timeout.max(1),
            io_timeout: raw.sync_io_timeout,
        })
    }

    pub fn target(&self, ctx: &Context, host: std::net::IpAddr) -> SshTarget {
        SshTarget {
            host,
            port: self.port,
            user: self.user.clone(),
            config: self.ssh_config.clone(),
            known_hosts: ctx.paths.under(KNOWN_HOSTS_PATH),
            connect_timeout: self.connect_timeout,
        }
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    /// `user@host`.
    pub remote: String,
    /// Files whose data was copied, as XiVO paths (`/etc/asterisk/...`).
    pub transferred: Vec<String>,
    /// Files and directories deleted on the slave (always empty for `--back`).
    pub deleted: Vec<String>,
    pub files_transferred: u64,
    pub bytes_transferred: u64,
    pub bytes_on_wire: u64,
    /// Listed directories missing on the master, skipped.
    pub skipped: Vec<String>,
    /// `--back`: files of the master that an newer copy from the slave replaced, each kept
    /// under `backup_dir` (e.g. a voicemail `msg0000` recorded on both nodes).
    pub replaced: Vec<String>,
    pub backup_dir: Option<PathBuf>,
    /// `--back`: the slave's clock when this run listed its files.
    pub listed: Option<SlaveListing>,
    /// `--back`: only files the slave changed after this (its clock); `None`: every file.
    pub since: Option<chrono::DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    ToSlave,
    /// `all`: every file of the slave's directories, not only what changed since the last
    /// copy-back (`sync --back --all`).
    Back {
        all: bool,
    },
}

impl Direction {
    fn component(self) -> Component {
        match self {
            Direction::ToSlave => Component::Sync,
            Direction::Back { .. } => Component::SyncBack,
        }
    }
}

/// Runs `program args` to completion, its stdin closed, killed if the caller gives up (a
/// dropped hourly run must not leave an ssh behind).
async fn run_tool<I, S>(program: &'static str, args: I) -> Result<std::process::Output, SyncError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| SyncError::Spawn { program, source })
}

/// The hourly run of the monitor (at :00, right after the database replication): on a master,
/// mirrors the directories to the slave and records the outcome for `status`; on any other
/// node does nothing and returns `Ok(None)`. A failure is recorded and returned; the next hour
/// tries again.
pub async fn run_hourly(ctx: &Context) -> Result<Option<SyncReport>, SyncError> {
    let ha = HaConfig::load(&ctx.paths)?;
    if ha.node_type != NodeType::Master {
        return Ok(None);
    }
    Ok(Some(run_recorded(ctx, &ha, Direction::ToSlave).await?))
}

/// The monitor's copy-back (at the failback, at its start and every :00, before the
/// replication and the sync): on a master, what `sync --back` does (bring home what the slave
/// changed since the last copy-back, [`listing`]), recorded for `status`
/// (`sync-back`); when something came back, a mail lists it (alert kind `copy-back`). On any
/// other node does nothing and returns `Ok(None)`.
pub async fn copy_back(ctx: &Context) -> Result<Option<SyncReport>, SyncError> {
    let ha = HaConfig::load(&ctx.paths)?;
    if ha.node_type != NodeType::Master {
        return Ok(None);
    }
    let report = run_recorded(ctx, &ha, Direction::Back { all: false }).await?;
    if report.files_transferred > 0 {
        tracing::info!("copy-back: {}", brought_back(&report));
        let slave = report.remote.rsplit('@').next().unwrap_or_default();
        crate::alert::raise(Event::happened(
            Kind::CopyBack,
            slave,
            brought_back_mail(&report),
        ));
    }
    Ok(Some(report))
}

/// How many files a summary or a mail names; the count says how many more.
pub const LISTED_FILES: usize = 20;

/// `a, b, c` or `a, …, t and 5 more`: at most [`LISTED_FILES`] of `files`, out of `total`.
fn file_list(files: &[String], total: u64) -> String {
    let shown = &files[..files.len().min(LISTED_FILES)];
    let more = total.saturating_sub(shown.len() as u64);
    let mut out = shown.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// `N files (B bytes) brought back from root@slave`.
fn brought_back_count(report: &SyncReport) -> String {
    format!(
        "{} files ({} bytes) brought back from {}",
        report.files_transferred, report.bytes_transferred, report.remote
    )
}

/// One line: what a copy-back brought home.
fn brought_back(report: &SyncReport) -> String {
    let mut out = brought_back_count(report);
    if !report.transferred.is_empty() {
        out.push_str(&format!(
            ": {}",
            file_list(&report.transferred, report.files_transferred)
        ));
    }
    out
}

/// The copy-back mail's text: the count first (the subject), then each file (the first
/// [`LISTED_FILES`]), the older ones replaced and where they are kept.
fn brought_back_mail(report: &SyncReport) -> String {
    let mut out = brought_back_count(report);
    out.push_str("\n\nbrought back (newer files on this master were kept, nothing was deleted):\n");
    for file in report.transferred.iter().take(LISTED_FILES) {
        out.push_str(&format!("  {file}\n"));
    }
    let more = report.transferred.len().saturating_sub(LISTED_FILES);
    if more > 0 {
        out.push_str(&format!("  and {more} more\n"));
    }
    if let Some(dir) = &report.backup_dir {
        out.push_str(&format!(
            "older copies on this master replaced by the slave's (kept in {}):\n",
            dir.display()
        ));
        for file in &report.replaced {
            out.push_str(&format!("  {file}\n"));
        }
    }
    out
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(", skipped (missing here): {}", skipped.join(", "))
    }
}

/// The slave's address from a master's ha.conf, by the rules of `configure`: a refused one is
/// the error naming ha.conf, before anything is written or contacted.
fn master_remote(ctx: &Context, ha: &HaConfig) -> Result<std::net::IpAddr, SyncError> {
    ha.peer_in(&ctx.paths)?.ok_or(SyncError::NotMaster {
        node_type: ha.node_type,
    })
}

/// One run under the lock, its outcome saved as the component's state.
async fn run_recorded(
    ctx: &Context,
    ha: &HaConfig,
    direction: Direction,
) -> Result<SyncReport, SyncError> {
    // A refused peer changes nothing, not even the recorded state.
    let slave = master_remote(ctx, ha)?;
    let started = Instant::now();
    let at = Utc::now();
    let remote = slave.to_string();
    let result = match lock(ctx) {
        Ok(_guard) => run_locked(ctx, slave, direction).await,
        // Another run holds the lock: its own outcome will be recorded, not this refusal.
        Err(busy) => return Err(busy),
    };
    let when = at.format("%Y-%m-%d %H:%M:%S UTC");
    let verb = match direction {
        Direction::ToSlave => "to",
        Direction::Back { .. } => "back from",
    };
    let seconds = started.elapsed().as_secs_f64();
    let state = match &result {
        Ok(report) => SyncDoc {
            summary: format!(
                "{when} {verb} {remote}: ok, {} files ({} bytes) transferred, {} deleted{}{}{}{}",
                report.files_transferred,
                report.bytes_transferred,
                report.deleted.len(),
                skipped_note(&report.skipped),
                match direction {
                    Direction::Back { .. } if !report.transferred.is_empty() => format!(
                        ", brought back: {}",
                        file_list(&report.transferred, report.files_transferred)
                    ),
                    _ => String::new(),
                },
                match direction {
                    Direction::ToSlave => String::new(),
                    Direction::Back { .. } => considered(report.since),
                },
                match &report.backup_dir {
                    Some(dir) => format!(
                        ", {} older files replaced (kept in {})",
                        report.replaced.len(),
                        dir.display()
                    ),
                    None => String::new(),
                }
            ),
            started_at: at,
            seconds,
            ok: true,
            error: None,
            last_success_at: Some(at),
            details: SyncDetails {
                remote: report.remote.clone(),
                files_transferred: report.files_transferred,
                bytes_transferred: report.bytes_transferred,
                files_deleted: report.deleted.len() as u64,
                skipped: report.skipped.clone(),
                files: report
                    .transferred
                    .iter()
                    .take(LISTED_FILES)
                    .cloned()
                    .collect(),
                listed: report.listed.clone(),
            },
        },
        Err(error) => SyncDoc {
            summary: format!("{when} {verb} {remote}: failed: {error}"),
            started_at: at,
            seconds,
            ok: false,
            error: Some(error.to_string()),
            last_success_at: store::last_success(&ctx.paths, direction.component(), None),
            details: SyncDetails {
                remote,
                // What the last successful copy-back brought home stays home.
                listed: last_listing(ctx, direction),
                ..SyncDetails::default()
            },
        },
    };
    if let Err(e) = store::save(&ctx.paths, direction.component(), &state) {
        // The sync's own outcome matters more than its record: report both.
        tracing::warn!("cannot record the sync's state: {e}");
    }
    if direction == Direction::ToSlave {
        crate::alert::raise(match &result {
            Ok(_) => Event::recovered(Kind::Sync, "", ""),
            Err(e) => Event::failing(Kind::Sync, "", crate::replication::one_line(&e.to_string())),
        });
    }
    result
}

/// The last successful copy-back's listing on record (`None` for the sync to the slave).
fn last_listing(ctx: &Context, direction: Direction) -> Option<SlaveListing> {
    match direction {
        Direction::ToSlave => None,
        Direction::Back { .. } => {
            store::load::<SyncDoc>(&ctx.paths, Component::SyncBack)?
                .details
                .listed
        }
    }
}

/// `, what the slave changed after <time>` or `, every file of the slave's`: which files a
/// copy-back considered.
fn considered(since: Option<chrono::DateTime<Utc>>) -> String {
    match since {
        Some(at) => format!(
            ", considered what the slave changed after {} (its clock)",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => ", considered every file of the slave's".to_owned(),
    }
}

/// `which the copy-back brings home`, or, for a parent or a child of a back directory, which
/// one it overlaps.
fn brought_home(dir: &str, back_dir: &str) -> String {
    if dir == back_dir {
        "which the copy-back brings home".to_owned()
    } else {
        format!("which overlaps {back_dir} that the copy-back brings home")
    }
}

/// Whether the sync to `remote` must wait for a copy-back: when the last copy-back on record
/// failed (each run replaces the record, so none succeeded since) and a directory it brings
/// home is also mirrored to the slave, the sync's `--delete-after` would delete there what
/// the slave made while it served before it is home. With no copy-back on record, or lists
/// that do not overlap (the defaults), nothing is held.
fn copy_back_hold(
    last_copy_back: Option<&SyncDoc>,
    settings: &SyncSettings,
    remote: &str,
) -> Result<(), SyncError> {
    let Some(failed) = last_copy_back.filter(|doc| !doc.ok) else {
        return Ok(());
    };
    let Some((dir, back_dir)) = dirs::overlap(&settings.dirs, &settings.back_dirs) else {
        return Ok(());
    };
    Err(SyncError::HeldForCopyBack {
        remote: remote.to_owned(),
        copy_back_error: crate::replication::one_line(
            failed.error.as_deref().unwrap_or("no reason recorded"),
        ),
        dir: dir.to_owned(),
        back_dir: back_dir.to_owned(),
    })
}

/// Takes the sync lock (flock, released when the guard drops or the process dies).
fn lock(ctx: &Context) -> Result<nix::fcntl::Flock<std::fs::File>, SyncError> {
    let path = ctx.paths.state_dir().join("sync.lock");
    let file = crate::fsutil::open_lock_file(&path)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => SyncError::Busy { path: path.clone() },
            other => FileError::new("lock", &path, other.into()).into(),
        },
    )
}

/// `--root` without its trailing slashes (`/` gives ``), to append `/./etc/...` or `/`.
fn root_prefix(ctx: &Context) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut bytes = ctx.paths.root().as_os_str().as_bytes().to_vec();
    while bytes.last() == Some(&b'/') {
        bytes.pop();
    }
    OsString::from_vec(bytes)
}

async fn run_locked(
    ctx: &Context,
    slave: std::net::IpAddr,
    direction: Direction,
) -> Result<SyncReport, SyncError> {
    let settings = SyncSettings::load(ctx)?;
    let target = settings.target(ctx, slave);
    if direction == Direction::ToSlave {
        // Read under the lock that the copy-back also takes: its record is final.
        let last_copy_back = store::load::<SyncDoc>(&ctx.paths, Component::SyncBack);
        copy_back_hold(last_copy_back.as_ref(), &settings, &target.destination())?;
    }
    let key = ctx.paths.under(KEY_PATH);
    if !key.exists() {
        return Err(SyncError::NoKey { path: key });
    }
    let mut args = rsync::common_args(settings.io_timeout);
    args.push("-e".into());
    args.push(target.rsync_shell(&key)?.into());
    let mut report = SyncReport {
        remote: target.destination(),
        ..SyncReport::default()
    };
    // The copy-back's list of files, removed when the run ends.
    let mut files_list = None;
    let what = match direction {
        Direction::ToSlave => {
            args.push("--delete-after".into());
            let root = root_prefix(ctx);
            let mut sources = Vec::new();
            for dir in &settings.dirs {
                let local = ctx.paths.under(dir);
                if local.is_dir() {
                    // `<root>/./etc/...`: -R recreates the path from the `/./` on.
                    let mut source = root.clone();
                    source.push(format!("/.{dir}"));
                    sources.push(source);
                } else {
                    tracing::warn!(
                        "{} is missing on this master: skipped (the slave's copy is left as is)",
                        local.display()
                    );
                    report.skipped.push(dir.clone());
                }
            }
            if sources.is_empty() {
                tracing::warn!("none of the directories to sync exists here: nothing to do");
                return Ok(report);
            }
            args.extend(sources);
            args.push(target.rsync_spec(&settings.remote_root).into());
            "sync to"
        }
        Direction::Back { all } => {
            // Never delete, never replace a file that is newer here; a directory the slave
            // does not have is simply nothing to bring back. An older file that the slave's copy
            // replaces may be another message of the same name (Asterisk numbers voicemail per
            // folder on each node), so it is moved aside, out of Asterisk's spool.
            let backup_dir = ctx
                .paths
                .state_dir()
                .join(format!("sync-back-{}", Utc::now().format("%Y%m%dT%H%M%SZ")));
            args.extend(["--update", "--ignore-missing-args", "--backup"].map(OsString::from));
            let mut backup_arg = OsString::from("--backup-dir=");
            backup_arg.push(&backup_dir);
            args.push(backup_arg);
            report.backup_dir = Some(backup_dir);
            let files = list_to_bring_back(ctx, &settings, &target, &key, all, &mut report).await?;
            if files.is_empty() {
                report.backup_dir = None;
                return Ok(report);
            }
            // Only the files listed: rsync reads their names (relative to the slave's tree)
            // from a file of its own, NUL-separated.
            let mut list = tempfile::Builder::new()
                .prefix("copy-back-files.")
                .tempfile_in(ctx.paths.state_dir())
                .map_err(|e| FileError::new("create", ctx.paths.state_dir(), e))?;
            std::io::Write::write_all(&mut list, &files.join(&0u8))
                .map_err(|e| FileError::new("write", list.path(), e))?;
            let mut files_from = OsString::from("--files-from=");
            files_from.push(list.path());
            args.extend([files_from, "--from0".into()]);
            args.push(
                target
                    .rsync_spec(&format!("{}/", settings.remote_root.trim_end_matches('/')))
                    .into(),
            );
            let mut destination = root_prefix(ctx);
            destination.push("/");
            args.push(destination);
            files_list = Some(list);
            "copy back from"
        }
    };
    let transfer = match rsync::run(args).await? {
        Ok(transfer) => transfer,
        Err(failure) => {
            return Err(target.explain(what, failure.code, &failure.stderr));
        }
    };
    let as_xivo_path = |name: &String| format!("/{}", name.trim_start_matches('/'));
    report.transferred = transfer.transferred.iter().map(as_xivo_path).collect();
    report.deleted = transfer.deleted.iter().map(as_xivo_path).collect();
    report.replaced = transfer.replaced.iter().map(as_xivo_path).collect();
    if report.replaced.is_empty() || direction == Direction::ToSlave {
        report.backup_dir = None;
    }
    report.files_transferred = transfer.files_transferred;
    report.bytes_transferred = transfer.bytes_transferred;
    report.bytes_on_wire = transfer.bytes_on_wire;
    drop(files_list);
    Ok(report)
}

/// The copy-back's listing on the slave: the files changed there since the last successful
/// copy-back from it ([`listing::since`]), or every file (said once in the log, with why).
/// Records in `report` this listing and the rule used.
async fn list_to_bring_back(
    ctx: &Context,
    settings: &SyncSettings,
    target: &SshTarget,
    key: &std::path::Path,
    all: bool,
    report: &mut SyncReport,
) -> Result<Vec<Vec<u8>>, SyncError> {
    let previous = last_listing(ctx, Direction::Back { all });
    let mut rule = listing::since(previous.as_ref(), &report.remote, all);
    let list = |after| {
        listing::list(
            target,
            key,
            &settings.remote_root,
            &settings.back_dirs,
            after,
        )
    };
    let mut listed = list(rule.after()).await?;
    if let (Some(previous), Some(_)) = (&previous, rule.after())
        && listing::clock_went_back(previous, listed.at)
    {
        rule = listing::Since::Everything(format!(
            "the slave's clock ({}) is before the last copy-back's listing ({}): it was set back",
            listed.at.format("%Y-%m-%d %H:%M:%S UTC"),
            previous.at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        listed = list(None).await?;
    }
    if let listing::Since::Everything(why) = &rule {
        tracing::warn!(
            "copy-back: {why}: considering every file of the slave's {} (a file newer here is still kept; from now on, only what the slave changes after this listing)",
            settings.back_dirs.join(", ")
        );
    }
    report.since = rule.after();
    report.listed = Some(SlaveListing {
        remote: report.remote.clone(),
        at: listed.at,
    });
    Ok(listed.files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::env_file::refusal;

    #[test]
    fn the_variables_and_defaults_are_the_catalogs() {
        use crate::settings::catalog::{Component, check_struct};
        check_struct::<RawSettings>(Component::Sync, "XIVO_HA_", &[]);
    }

    fn settings_from(text: &str) -> Result<SyncSettings, SyncError> {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("custom.env");
        std::fs::write(&env, text).unwrap();
        let ctx = Context::new(dir.path(), "", Some(env));
        SyncSettings::load(&ctx)
    }

    #[test]
    fn defaults_are_xivos() {
        let settings = settings_from("").unwrap();
        assert_eq!(settings.dirs, dirs::defaults(dirs::SYNC_DIRS));
        assert_eq!(settings.port, 22);
        assert_eq!(settings.user, "root");
    }

    #[test]
    fn a_copy_back_names_twenty_files_and_counts_the_rest() {
        let files: Vec<String> = (0..25).map(|i| format!("/f{i}")).collect();
        assert_eq!(file_list(&files[..2], 2), "/f0, /f1");
        let listed = file_list(&files, 25);
        assert!(listed.starts_with("/f0, /f1, "), "{listed}");
        assert!(listed.ends_with("/f19 and 5 more"), "{listed}");
        let report = SyncReport {
            remote: "root@192.0.2.20".into(),
            transferred: files,
            files_transferred: 25,
            bytes_transferred: 1000,
            replaced: vec!["/f3".into()],
            backup_dir: Some("/var/lib/xivo-ha/sync-back-x".into()),
            ..SyncReport::default()
        };
        let mail = brought_back_mail(&report);
        assert!(
            mail.starts_with("25 files (1000 bytes) brought back from root@192.0.2.20\n"),
            "{mail}"
        );
        assert!(mail.contains("  /f19\n  and 5 more\n"), "{mail}");
        assert!(!mail.contains("/f20"), "{mail}");
        assert!(
            mail.contains(
                "replaced by the slave's (kept in /var/lib/xivo-ha/sync-back-x):\n  /f3\n"
            ),
            "{mail}"
        );
    }

    fn copy_back_record(ok: bool) -> SyncDoc {
        SyncDoc {
            summary: String::new(),
            started_at: Utc::now(),
            seconds: 1.0,
            ok,
            error: (!ok).then(|| "copy back from root@192.0.2.20 failed:\n  find: denied".into()),
            last_success_at: None,
            details: SyncDetails::default(),
        }
    }

    #[test]
    fn a_failed_copy_back_holds_the_sync_only_when_the_lists_overlap() {
        let remote = "root@192.0.2.20";
        let mut settings = settings_from("").unwrap();
        let failed = copy_back_record(false);
        // The default lists: nothing the sync deletes is the copy-back's.
        copy_back_hold(Some(&failed), &settings, remote).unwrap();

        settings.dirs.push("/var/spool/asterisk".into());
        let error = refusal(copy_back_hold(Some(&failed), &settings, remote));
        assert_eq!(
            error,
            "the sync to root@192.0.2.20 is held: the last copy-back failed (copy back from \
             root@192.0.2.20 failed: find: denied) and XIVO_HA_SYNC_DIRS includes \
             /var/spool/asterisk, which overlaps /var/spool/asterisk/voicemail that the \
             copy-back brings home: its --delete-after would remove on the slave what the slave \
             made while it served; run `xivo-ha sync --back` until it succeeds, then sync again"
        );
        // A copy-back that succeeded since, or none on record: nothing to wait for.
        copy_back_hold(Some(&copy_back_record(true)), &settings, remote).unwrap();
        settings.dirs = vec!["/var/spool/asterisk/monitor".into()];
        let error = refusal(copy_back_hold(Some(&failed), &settings, remote));
        assert!(
            error.contains(
                "XIVO_HA_SYNC_DIRS includes /var/spool/asterisk/monitor, which the copy-back brings home: "
            ),
            "{error}"
        );
        copy_back_hold(None, &settings, remote).unwrap();
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let error = refusal(settings_from("XIVO_HA_SYNC_DIRS=/\n"));
        assert!(error.starts_with("XIVO_HA_SYNC_DIRS:"), "{error}");
        let error = refusal(settings_from("XIVO_HA_SSH_PORT=ssh\n"));
        assert!(error.contains("XIVO_HA_SSH_PORT"), "{error}");
        let error = refusal(settings_from("XIVO_HA_SYNC_REMOTE_ROOT=srv\n"));
        assert!(error.starts_with("XIVO_HA_SYNC_REMOTE_ROOT"), "{error}");
    }
}
