//! Atomic file writes (temp file, fsync, rename, fsync of the directory) and file errors that
//! name the file and say what to do about them.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A filesystem operation that failed, with the path and a hint the administrator can act on.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}{}", path.display(), hint(source))]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FileError {
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FileError {
            action,
            path: path.into(),
            source,
        }
    }
}

fn hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::StorageFull => {
            " (the disk is full: free space on that filesystem and run again)"
        }
        io::ErrorKind::PermissionDenied => {
            " (permission denied: run as root or fix the file's owner)"
        }
        io::ErrorKind::ReadOnlyFilesystem => " (read-only filesystem: mount it read-write)",
        _ => "",
    }
}

/// Replaces `path` with `contents` so that a reader sees either the old or the new file, never a
/// mix, even across a crash. Creates the parent directories. `mode` sets the permissions.
pub fn write_atomic(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<(), FileError> {
    let (dir, temp) = written_beside(path, contents, mode)?;
    temp.persist(path)
        .map_err(|e| FileError::new("replace", path, e.error))?;
    sync_dir(&dir)
}

/// Creates `path` with `contents` unless it exists (then leaves it alone and returns false),
/// so that a reader sees it complete or not at all, and of two writers racing exactly one
/// wins: written beside it, then hard-linked into place, which fails when it exists.
pub fn create_atomic(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<bool, FileError> {
    let (dir, temp) = written_beside(path, contents, mode)?;
    match fs::hard_link(temp.path(), path) {
        Ok(()) => sync_dir(&dir).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FileError::new("create", path, e)),
    }
    // The temporary name is removed when `temp` drops.
}

/// `contents` in a synced temporary file in `path`'s directory (created when missing).
fn written_beside(
    path: &Path,
    contents: &[u8],
    mode: Option<u32>,
) -> Result<(PathBuf, tempfile::NamedTempFile), FileError> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    fs::create_dir_all(&dir).map_err(|e| FileError::new("create directory", &dir, e))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".xivo-ha-")
        .tempfile_in(&dir)
        .map_err(|e| FileError::new("create a temporary file in", &dir, e))?;
    temp.write_all(contents)
        .and_then(|()| match mode {
            Some(mode) => temp
                .as_file()
                .set_permissions(fs::Permissions::from_mode(mode)),
            None => Ok(()),
        })
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| FileError::new("write", path, e))?;
    Ok((dir, temp))
}

/// Makes a rename or a removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::new("sync directory", dir, e))
}

/// The file's bytes, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new("read", path, e)),
    }
}

/// Opens (creating it and its directory) the lock file `path`, for `nix::fcntl::Flock`.
pub fn open_lock_file(path: &Path) -> Result<std::fs::File, FileError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| FileError::new("create directory", dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| FileError::new("open", path, e))
}

/// Makes `path` exist (empty) or not, as `present` says. Returns whether anything changed.
pub fn set_flag_file(path: &Path, present: bool) -> Result<bool, FileError> {
    let exists = path.exists();
    if exists == present {
        return Ok(false);
    }
    if present {
        write_atomic(path, b"", None)?;
    } else {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(FileError::new("remove", path, e)),
        }
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file");
        write_atomic(&path, b"one", None).unwrap();
        write_atomic(&path, b"two", Some(0o600)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn flag_files_report_changes() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("x/flag");
        assert!(set_flag_file(&flag, true).unwrap());
        assert!(!set_flag_file(&flag, true).unwrap());
        assert!(set_flag_file(&flag, false).unwrap());
        assert!(!set_flag_file(&flag, false).unwrap());
    }

    #[test]
    fn errors_name_the_file_and_the_fix() {
        let error = FileError::new(
            "write",
            "/etc/xivo/ha.conf",
            io::Error::from(io::ErrorKind::StorageFull),
        );
        let message = error.to_string();
        assert!(message.contains("/etc/xivo/ha.conf"), "{message}");
        assert!(message.contains("disk is full"), "{message}");
    }
}
