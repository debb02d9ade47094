//! `sync -i`: creating the dedicated passwordless key of the master (`/root/.ssh/xivo_id_rsa`)
//! and installing its public half in the slave's authorized_keys, as `ssh-copy-id` does: with an
//! agent or key the slave already trusts, or by asking the slave's password once on the
//! controlling terminal (ssh asks it itself on /dev/tty, xivo-ha never sees it; stdin may be a
//! pipe, as under `sshpass -p PASSWORD xivo-ha sync -i`). A key that could not be installed is removed, so
//! that `sync -i` can simply be run again.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::ssh::{SshTarget, quote_for_sh};
use super::{SyncError, run_tool};
use crate::fsutil::{self, FileError};

/// The comment of the key, as XiVO writes it.
pub const KEY_COMMENT: &str = "XiVO HA";

/// A freshly installed key.
#[derive(Debug)]
pub struct InstalledKey {
    pub private: PathBuf,
    pub public_line: String,
    /// `password` or `existing key or agent`.
    pub installed_with: &'static str,
}

/// Creates the key at `key` (which must not exist) and installs it on the slave in
/// `authorized_keys` (relative paths are under the remote user's home, as sshd reads them).
pub async fn set_up(
    target: &SshTarget,
    key: &Path,
    authorized_keys: &str,
) -> Result<InstalledKey, SyncError> {
    if key.symlink_metadata().is_ok() {
        return Err(SyncError::KeyExists {
            path: key.to_owned(),
            test: test_command(target, key),
        });
    }
    create(key).await?;
    let public = key_pub(key);
    let result = async {
        let public_line = std::fs::read_to_string(&public)
            .map_err(|e| FileError::new("read", &public, e))?
            .trim()
            .to_owned();
        let installed_with = install(target, &public_line, authorized_keys).await?;
        check(target, key, authorized_keys).await?;
        Ok(InstalledKey {
            private: key.to_owned(),
            public_line,
            installed_with,
        })
    }
    .await;
    if result.is_err() {
        // Leave nothing behind: a key that the slave does not accept would make the hourly
        // sync fail and the next `sync -i` refuse.
        let _ = std::fs::remove_file(key);
        let _ = std::fs::remove_file(&public);
    }
    result
}

/// `ssh -i <key> root@<slave>`: what the administrator runs to check by hand.
pub fn test_command(target: &SshTarget, key: &Path) -> String {
    let port = if target.port == 22 {
        String::new()
    } else {
        format!(" -p {}", target.port)
    };
    format!("ssh -i {}{port} {}", key.display(), target.destination())
}

fn key_pub(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates the pair in a temporary directory next to `.ssh`, then moves it in place, public
/// half first: a crash never leaves a private key without its public half, nor a half-written
/// key. (Generating outside any `*/root/.ssh` path also keeps ssh-keygen from creating the real
/// `~/.ssh` of the user running it when `--root` is not `/`.)
async fn create(key: &Path) -> Result<(), SyncError> {
    let ssh_dir = key.parent().expect("the key path has a directory");
    if !ssh_dir.exists() {
        std::fs::create_dir_all(ssh_dir)
            .and_then(|()| {
                std::fs::set_permissions(ssh_dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| FileError::new("create directory", ssh_dir, e))?;
    }
    let home = ssh_dir.parent().unwrap_or(ssh_dir);
    let temp = tempfile::Builder::new()
        .prefix(".xivo-ha-keygen-")
        .tempdir_in(home)
        .map_err(|e| FileError::new("create a temporary directory in", home, e))?;
    let temp_key = temp.path().join("key");
    let mut args: Vec<OsString> = ["-q", "-t", "ed25519", "-N", "", "-C", KEY_COMMENT, "-f"]
        .into_iter()
        .map(OsString::from)
        .collect();
    args.push(temp_key.clone().into_os_string());
    let output = run_tool("ssh-keygen", args).await?;
    if !output.status.success() {
        return Err(SyncError::Keygen(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    std::fs::set_permissions(&temp_key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| FileError::new("set the mode of", &temp_key, e))?;
    let public = key_pub(key);
    std::fs::rename(key_pub(&temp_key), &public)
        .map_err(|e| FileError::new("create", &public, e))?;
    std::fs::rename(&temp_key, key).map_err(|e| FileError::new("create", key, e))?;
    fsutil::sync_dir(ssh_dir)?;
    Ok(())
}

/// The remote command (run by the remote user's shell, as every ssh command is) that appends
/// the key read on stdin to `authorized_keys`, as ssh-copy-id does: umask 077, the directory
/// created, a missing final newline added first, SELinux labels restored where there are any.
fn install_command(authorized_keys: &str) -> String {
    format!(
        "umask 077; f={}; case \"$f\" in /*) ;; *) cd || exit 1 ;; esac; \
         mkdir -p \"$(dirname \"$f\")\" && \
         {{ [ ! -s \"$f\" ] || [ -z \"$(tail -c 1 \"$f\")\" ] || echo >> \"$f\"; }} && \
         cat >> \"$f\" || exit 1; \
         if type restorecon >/dev/null 2>&1; then restorecon -F \"$(dirname \"$f\")\" \"$f\"; fi; exit 0",
        quote_for_sh(authorized_keys)
    )
}

/// Whether this process has a controlling terminal ssh can prompt on: ssh reads passwords from
/// /dev/tty, not from stdin, so that is what counts (as for ssh-copy-id): a terminal session
/// whose stdin is a pipe has one, and so has a command run by `sshpass`, which gives it a
/// pseudo-terminal of its own; a cron job or a service has none.
fn has_controlling_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Appends the public key on the slave: first without any prompt (agent, default keys), then,
/// when the process has a controlling terminal, with the password asked once by ssh.
async fn install(
    target: &SshTarget,
    public_line: &str,
    authorized_keys: &str,
) -> Result<&'static str, SyncError> {
    let mut batch = target.base_args(true);
    batch.extend(["-o".into(), "PreferredAuthentications=publickey".into()]);
    let first = ssh_with_stdin(target, batch, authorized_keys, public_line).await?;
    let Err(stderr) = first else {
        return Ok("existing key or agent");
    };
    let auth_refused = stderr.contains("Permission denied");
    if !(auth_refused && has_controlling_terminal()) {
        let error = target.explain("installing the key on", None, &stderr);
        return Err(match error {
            SyncError::Remote { reason, .. } if auth_refused => SyncError::Install {
                target: target.destination(),
                reason,
                hint: "run `xivo-ha sync -i` on a terminal (or under `sshpass -p PASSWORD`) to type the slave's password, or load a key the slave trusts in ssh-agent",
            },
            other => other,
        });
    }
    println!(
        "{} does not know any of your keys yet: type its password (asked once, by ssh)",
        target.destination()
    );
    let mut interactive = target.base_args(false);
    interactive.extend([
        "-o".into(),
        "PreferredAuthentications=keyboard-interactive,password".into(),
        "-o".into(),
        "NumberOfPasswordPrompts=1".into(),
    ]);
    match ssh_with_stdin(target, interactive, authorized_keys, public_line).await? {
        Ok(()) => Ok("password"),
        Err(stderr) => Err(
            match target.explain("installing the key on", None, &stderr) {
                SyncError::Remote { reason, .. } => SyncError::Install {
                    target: target.destination(),
                    reason,
                    hint: "check the password, and that the slave's sshd accepts password logins for this user (PermitRootLogin yes for root)",
                },
                other => other,
            },
        ),
    }
}

/// Runs the install command with the public key on stdin; `Ok(Err(stderr))` when ssh failed.
async fn ssh_with_stdin(
    target: &SshTarget,
    args: Vec<String>,
    authorized_keys: &str,
    public_line: &str,
) -> Result<Result<(), String>, SyncError> {
    let mut child = tokio::process::Command::new("ssh")
        .args(&args)
        .arg(target.destination())
        .arg(install_command(authorized_keys))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SyncError::Spawn {
            program: "ssh",
            source,
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // ssh may exit before reading (refused connection): a broken pipe here is not the error
    // worth reporting, ssh's own stderr is.
    let _ = stdin.write_all(format!("{public_line}\n").as_bytes()).await;
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| SyncError::Spawn {
            program: "ssh",
            source,
        })?;
    if output.status.success() {
        Ok(Ok(()))
    } else {
        Ok(Err(String::from_utf8_lossy(&output.stderr).into_owned()))
    }
}

/// Logs in with the new key alone, as the hourly sync will.
pub async fn check(target: &SshTarget, key: &Path, authorized_keys: &str) -> Result<(), SyncError> {
    let mut args = target.key_args(key);
    args.extend([target.destination(), "true".to_owned()]);
    let output = run_tool("ssh", args).await?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(SyncError::NotAccepted {
        target: target.destination(),
        authorized_keys: authorized_keys.to_owned(),
        reason: stderr.lines().next().unwrap_or_default().trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_command_quotes_the_path() {
        let command = install_command("/tmp/it's/authorized_keys");
        assert!(
            command.contains(r"f='/tmp/it'\''s/authorized_keys'"),
            "{command}"
        );
        assert!(command.starts_with("umask 077;"));
    }

    #[test]
    fn pub_path_appends_the_suffix() {
        assert_eq!(
            key_pub(Path::new("/root/.ssh/xivo_id_rsa")),
            PathBuf::from("/root/.ssh/xivo_id_rsa.pub")
        );
    }
}
