//! Running rsync as a subprocess (argument vector, no shell) and reading what it did from its
//! `--itemize-changes` lines and `--stats` block: which files were transferred or deleted, and
//! how many bytes.

use std::ffi::OsString;

use super::SyncError;

/// What one rsync run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Files whose data was transferred, as rsync names them (relative to the root).
    pub transferred: Vec<String>,
    /// Files and directories deleted on the receiving side.
    pub deleted: Vec<String>,
    /// Transferred files that replaced an existing file (not `+++++++++`: not new).
    pub replaced: Vec<String>,
    /// "Number of regular files transferred".
    pub files_transferred: u64,
    /// "Total transferred file size": the size of the files sent, before rsync's delta
    /// encoding and compression.
    pub bytes_transferred: u64,
    /// "Total bytes sent" + "Total bytes received": what went over the wire.
    pub bytes_on_wire: u64,
}

/// A failed rsync run: its exit code and stderr, for [`super::ssh::SshTarget::explain`].
#[derive(Debug)]
pub struct Failure {
    pub code: Option<i32>,
    pub stderr: String,
}

/// rsync's exit code for "some source files vanished before they could be transferred": a file
/// deleted on the master during the run, which the next run settles. Not a failure.
const VANISHED: i32 = 24;

/// The options every run uses: `--itemize-changes` and `--stats` to report, `--no-h` so numbers
/// are plain digits whatever the locale.
pub fn common_args(io_timeout: u32) -> Vec<OsString> {
    ["-a", "-R", "--itemize-changes", "--stats", "--no-h"]
        .iter()
        .map(OsString::from)
        .chain([OsString::from(format!("--timeout={io_timeout}"))])
        .collect()
}

/// Runs `rsync <args>`; `Err(Ok(failure))` when rsync ran and failed, `Err(Err(_))` when it could
/// not be started.
pub async fn run(args: Vec<OsString>) -> Result<Result<Transfer, Failure>, SyncError> {
    tracing::debug!("rsync {args:?}");
    let output = super::run_tool("rsync", args).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => Ok(Ok(parse(&stdout))),
        Some(VANISHED) => {
            tracing::warn!(
                "some files vanished during the sync (the next run settles them): {}",
                stderr.lines().next().unwrap_or_default()
            );
            Ok(Ok(parse(&stdout)))
        }
        code => Ok(Err(Failure {
            code,
            stderr: stderr.into_owned(),
        })),
    }
}

/// Reads `--itemize-changes` lines (`<f+++++++++ etc/x`, `*deleting   etc/y`) and the
/// `--stats` block.
pub fn parse(stdout: &str) -> Transfer {
    let mut transfer = Transfer::default();
    let mut sent = 0;
    let mut received = 0;
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("*deleting") {
            transfer.deleted.push(name.trim_start().to_owned());
            continue;
        }
        if let Some((label, value)) = line.split_once(": ") {
            let number = || leading_number(value);
            match label {
                "Number of regular files transferred" => transfer.files_transferred = number(),
                "Total transferred file size" => transfer.bytes_transferred = number(),
                "Total bytes sent" => sent = number(),
                "Total bytes received" => received = number(),
                _ => {}
            }
            if label.starts_with("Number of") || label.starts_with("Total") {
                continue;
            }
        }
        // An itemized line: 11 flag characters, a space, the name. `<` sent, `>` received,
        // `f` a regular file; other lines are directories, links or attribute-only changes.
        let bytes = line.as_bytes();
        if bytes.len() > 12
            && bytes[11] == b' '
            && matches!(bytes[0], b'<' | b'>')
            && bytes[1] == b'f'
        {
            let name = line[12..].to_owned();
            if &line[2..11] != "+++++++++" {
                transfer.replaced.push(name.clone());
            }
            transfer.transferred.push(name);
        }
    }
    transfer.bytes_on_wire = sent + received;
    transfer
}

/// `1234 bytes` → 1234 (digits only: a locale's separators, if any, are skipped).
fn leading_number(value: &str) -> u64 {
    value
        .trim()
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
cd+++++++++ etc/asterisk/extensions_extra.d/
<f+++++++++ etc/asterisk/extensions_extra.d/a b.conf
<f.st...... var/lib/asterisk/moh/default/x.wav
.d..t...... var/lib/asterisk/moh/
*deleting   etc/asterisk/extensions_extra.d/old.conf

Number of files: 5 (reg: 2, dir: 3)
Number of created files: 2 (reg: 1, dir: 1)
Number of deleted files: 1 (reg: 1)
Number of regular files transferred: 2
Total file size: 12,345 bytes
Total transferred file size: 12,340 bytes
Literal data: 12,340 bytes
Total bytes sent: 1,161
Total bytes received: 47

sent 1,161 bytes  received 47 bytes  416.00 bytes/sec
";

    #[test]
    fn parses_itemized_changes_and_stats() {
        let transfer = parse(OUTPUT);
        assert_eq!(
            transfer.transferred,
            vec![
                "etc/asterisk/extensions_extra.d/a b.conf",
                "var/lib/asterisk/moh/default/x.wav"
            ]
        );
        assert_eq!(
            transfer.deleted,
            vec!["etc/asterisk/extensions_extra.d/old.conf"]
        );
        assert_eq!(
            transfer.replaced,
            vec!["var/lib/asterisk/moh/default/x.wav"]
        );
        assert_eq!(transfer.files_transferred, 2);
        assert_eq!(transfer.bytes_transferred, 12340);
        assert_eq!(transfer.bytes_on_wire, 1208);
    }

    #[test]
    fn received_files_count_too() {
        let transfer =
            parse(">f+++++++++ var/spool/asterisk/voicemail/default/1000/INBOX/msg0000.txt\n");
        assert_eq!(transfer.transferred.len(), 1);
    }
}
