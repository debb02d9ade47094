//! How xivo-ha talks to the slave over SSH: the one set of `ssh` options every connection uses
//! (dedicated key, publickey only, no prompt, host key recorded on first contact and checked
//! afterwards), the `-e` string handed to rsync, and turning ssh's and rsync's stderr into one
//! error line that says what to do.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::SyncError;

/// Where and how to reach the slave.
#[derive(Clone, Debug)]
pub struct SshTarget {
    pub host: IpAddr,
    pub port: u16,
    pub user: String,
    /// `-F`: `none` (no ssh_config at all, the default) or a file.
    pub config: String,
    pub known_hosts: PathBuf,
    pub connect_timeout: u32,
}

impl SshTarget {
    /// `user@host` for messages and for ssh.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// `user@host:path` for rsync (IPv6 addresses in brackets).
    pub fn rsync_spec(&self, path: &str) -> String {
        match self.host {
            IpAddr::V6(v6) => format!("{}@[{v6}]:{path}", self.user),
            IpAddr::V4(v4) => format!("{}@{v4}:{path}", self.user),
        }
    }

    /// The name of the slave's entry in known_hosts (`[host]:port` off port 22).
    pub fn known_hosts_entry(&self) -> String {
        if self.port == 22 {
            self.host.to_string()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    /// Options shared by every connection. `StrictHostKeyChecking=accept-new` records the
    /// slave's key on first contact and refuses a different one later: never `no`, which would
    /// hand the root password or the files to whoever answers on the slave's address.
    /// `BatchMode=yes` unless asked otherwise: a cron-like job must fail, not wait for a prompt.
    pub fn base_args(&self, batch: bool) -> Vec<String> {
        vec![
            "-F".into(),
            self.config.clone(),
            "-p".into(),
            self.port.to_string(),
            "-o".into(),
            format!("BatchMode={}", if batch { "yes" } else { "no" }),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            format!("ConnectTimeout={}", self.connect_timeout),
        ]
    }

    /// Options for connections with the dedicated key only (no agent key, no password).
    pub fn key_args(&self, key: &Path) -> Vec<String> {
        let mut args = self.base_args(true);
        args.extend([
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "PreferredAuthentications=publickey".into(),
        ]);
        args
    }

    /// rsync's `-e` value: rsync splits it on spaces itself (no shell), honouring quotes.
    pub fn rsync_shell(&self, key: &Path) -> Result<String, SyncError> {
        let mut words = vec!["ssh".to_owned()];
        for arg in self.key_args(key) {
            words.push(quote_for_rsync(&arg)?);
        }
        Ok(words.join(" "))
    }

    /// Turns a failed ssh or rsync run into the error an administrator can act on.
    pub fn explain(&self, what: &str, code: Option<i32>, stderr: &str) -> SyncError {
        if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("Host key verification failed")
        {
            return SyncError::HostKeyChanged {
                host: self.host.to_string(),
                entry: self.known_hosts_entry(),
                known_hosts: self.known_hosts.clone(),
            };
        }
        let reason = main_reason(stderr).unwrap_or_else(|| {
            format!("exit status {}", code.map_or("?".into(), |c| c.to_string()))
        });
        let rsync_says = rsync_error(stderr)
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        let hint = if reason.contains("Permission denied") && reason.contains("publickey") {
            format!(
                "the slave does not accept the key: install it with `xivo-ha sync -i`, or add its .pub to {}'s authorized_keys on the slave",
                self.user
            )
        } else if [
            "Connection refused",
            "timed out",
            "No route to host",
            "unreachable",
        ]
        .iter()
        .any(|needle| reason.contains(needle))
        {
            format!(
                "is the slave up and its sshd listening on port {}? The next run tries again",
                self.port
            )
        } else if reason.contains("rsync: command not found") || reason.contains("rsync: not found")
        {
            "install rsync on the slave".to_owned()
        } else {
            "fix the cause and run again".to_owned()
        };
        SyncError::Remote {
            what: what.to_owned(),
            target: self.destination(),
            reason: format!("{reason}{rsync_says}"),
            hint,
        }
    }
}

/// Quotes one word of rsync's `-e` command when it holds spaces (rsync understands single and
/// double quotes there, not backslashes).
fn quote_for_rsync(word: &str) -> Result<String, SyncError> {
    if !word.contains([' ', '\'', '"']) {
        return Ok(word.to_owned());
    }
    if !word.contains('\'') {
        return Ok(format!("'{word}'"));
    }
    if !word.contains('"') {
        return Ok(format!("\"{word}\""));
    }
    Err(SyncError::UnquotablePath(word.to_owned()))
}

/// Quotes a word for the remote user's POSIX shell (ssh always runs remote commands through it).
pub fn quote_for_sh(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// rsync's and ssh's own words: the first stderr line that is not a banner or rsync's generic
/// follow-up ("connection unexpectedly closed", "rsync error: ... (code N)").
fn main_reason(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("@@@"))
        .collect();
    let noise = |line: &&&str| {
        line.starts_with("rsync error:")
            || line.contains("connection unexpectedly closed")
            || line.starts_with("Warning: Permanently added")
    };
    lines
        .iter()
        .find(|line| !noise(line))
        .or_else(|| lines.first())
        // ssh ends some messages with a period; the error line goes on after it.
        .map(|line| line.trim_end_matches('.').to_string())
}

/// rsync's summary of the failure: "rsync error: <what> (code N) at ..." → "rsync: <what>, code N".
fn rsync_error(stderr: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.starts_with("rsync error:"))?;
    let rest = line.trim_start_matches("rsync error:").trim();
    let rest = rest.split(" at ").next().unwrap_or(rest);
    let (what, code) = match rest.rsplit_once(" (code ") {
        Some((what, code)) => (what, code.trim_end_matches(')')),
        None => (rest, ""),
    };
    if code.is_empty() {
        Some(format!("rsync: {what}"))
    } else {
        Some(format!("rsync: {what}, code {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            host: "192.0.2.20".parse().unwrap(),
            port: 2222,
            user: "root".into(),
            config: "none".into(),
            known_hosts: "/tmp/node a/root/.ssh/known_hosts".into(),
            connect_timeout: 10,
        }
    }

    #[test]
    fn rsync_shell_quotes_paths_with_spaces_and_never_disables_host_checks() {
        let shell = target()
            .rsync_shell(Path::new("/root/.ssh/xivo_id_rsa"))
            .unwrap();
        assert!(
            shell.contains("'UserKnownHostsFile=/tmp/node a/root/.ssh/known_hosts'"),
            "{shell}"
        );
        assert!(shell.contains("StrictHostKeyChecking=accept-new"));
        assert!(shell.contains("-i /root/.ssh/xivo_id_rsa"));
        assert!(!shell.contains("StrictHostKeyChecking=no"));
        assert!(quote_for_rsync("a'b\"c d").is_err());
    }

    #[test]
    fn rsync_specs_and_known_hosts_entries() {
        let mut t = target();
        assert_eq!(t.rsync_spec("/"), "root@192.0.2.20:/");
        assert_eq!(t.known_hosts_entry(), "[192.0.2.20]:2222");
        t.host = "2001:db8::1".parse().unwrap();
        t.port = 22;
        assert_eq!(t.rsync_spec("/srv"), "root@[2001:db8::1]:/srv");
        assert_eq!(t.known_hosts_entry(), "2001:db8::1");
    }

    #[test]
    fn a_refused_connection_is_one_line_with_ssh_reason_and_hint() {
        let stderr = "ssh: connect to host 192.0.2.20 port 2222: Connection refused\r\n\
                      rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n\
                      rsync error: unexplained error (code 255) at io.c(232) [sender=3.2.7]\n";
        let message = target().explain("sync to", Some(255), stderr).to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("Connection refused"), "{message}");
        assert!(message.contains("code 255"), "{message}");
        assert!(message.contains("port 2222"), "{message}");
    }

    #[test]
    fn a_changed_host_key_says_how_to_forget_the_old_one() {
        let stderr = "@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                      Host key verification failed.\n";
        let message = target().explain("sync to", Some(255), stderr).to_string();
        assert!(
            message.contains("ssh-keygen -R '[192.0.2.20]:2222'"),
            "{message}"
        );
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(quote_for_sh("a'b"), r"'a'\''b'");
    }
}
