//! Atomic file writes (temp file, fsync, rename, fsync of the directory), changes prepared
//! beside their files and made later ([`Staged`]), and file errors that name the file and say
//! what to do about them.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    stage(path, contents, mode)?.commit()
}

/// Creates `path` with `contents` unless it exists (then leaves it alone and returns false),
/// so that a reader sees it complete or not at all, and of two writers racing exactly one
/// wins: written beside it, then hard-linked into place, which fails when it exists.
pub fn create_atomic(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<bool, FileError> {
    let staged = stage(path, contents, mode)?;
    match fs::hard_link(staged.temp.path(), path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FileError::new("create", path, e)),
    }
    // The temporary name is removed when `staged` drops.
}

/// A change to one file, prepared but not made: new contents written and synced under a
/// temporary name beside the file, or (for a removal) a temporary file beside it that proves
/// its directory takes changes. [`Staged::commit`] makes the change (a rename, or the
/// removal); dropping it instead removes the temporary file and leaves the file as it was.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    temp: tempfile::NamedTempFile,
    remove: bool,
}

impl Staged {
    /// The file this change is for.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the change: renames the new contents over the file (or removes it), then makes
    /// that durable.
    pub fn commit(self) -> Result<(), FileError> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_owned();
        if self.remove {
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FileError::new("remove", &self.path, e)),
            }
            drop(self.temp);
        } else {
            self.temp
                .persist(&self.path)
                .map_err(|e| FileError::new("replace", &self.path, e.error))?;
        }
        sync_dir(&dir)
    }
}

/// Prepares replacing `path` with `contents` (see [`Staged`]); `mode` sets the permissions
/// (`None`: 0600). Creates the parent directories.
pub fn stage(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<Staged, FileError> {
    stage_with(path, contents, |file| match mode {
        Some(mode) => file.set_permissions(fs::Permissions::from_mode(mode)),
        None => Ok(()),
    })
}

/// Prepares replacing `path` with `contents`, keeping the mode, owner and group of the file
/// replaced (another program reads it: provd runs as its own user); a new file gets `mode`.
pub fn stage_keeping_owner(path: &Path, contents: &[u8], mode: u32) -> Result<Staged, FileError> {
    let current = match fs::metadata(path) {
        Ok(metadata) => Some(metadata),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(FileError::new("read the permissions of", path, e)),
    };
    stage_with(path, contents, |file| match &current {
        Some(metadata) => {
            std::os::unix::fs::fchown(file, Some(metadata.uid()), Some(metadata.gid()))?;
            file.set_permissions(fs::Permissions::from_mode(metadata.mode() & 0o7777))
        }
        None => file.set_permissions(fs::Permissions::from_mode(mode)),
    })
}

fn stage_with(
    path: &Path,
    contents: &[u8],
    permissions: impl FnOnce(&fs::File) -> io::Result<()>,
) -> Result<Staged, FileError> {
    let mut temp = temp_beside(path)?;
    temp.write_all(contents)
        .and_then(|()| permissions(temp.as_file()))
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| FileError::new("write", path, e))?;
    Ok(Staged {
        path: path.to_owned(),
        temp,
        remove: false,
    })
}

/// A temporary file in `path`'s directory (created when missing).
fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile, FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| FileError::new("create directory", dir, e))?;
    tempfile::Builder::new()
        .prefix(".xivo-ha-")
        .tempfile_in(dir)
        .map_err(|e| FileError::new("create a temporary file in", dir, e))
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
    match stage_flag_file(path, present)? {
        Some(change) => change.commit().map(|()| true),
        None => Ok(false),
    }
}

/// Prepares making `path` exist (empty) or not (see [`Staged`]); `None` when it already is so.
pub fn stage_flag_file(path: &Path, present: bool) -> Result<Option<Staged>, FileError> {
    if path.exists() == present {
        return Ok(None);
    }
    if present {
        return stage(path, b"", None).map(Some);
    }
    Ok(Some(Staged {
        path: path.to_owned(),
        temp: temp_beside(path)?,
        remove: true,
    }))
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
    fn a_dropped_change_leaves_the_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        fs::write(&path, b"old").unwrap();
        drop(stage(&path, b"new", None).unwrap());
        drop(stage_flag_file(&path, false).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        stage_flag_file(&path, false)
            .unwrap()
            .unwrap()
            .commit()
            .unwrap();
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_replacement_can_keep_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        stage_keeping_owner(&path, b"new", 0o600)
            .unwrap()
            .commit()
            .unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            (metadata.mode() & 0o777, metadata.uid(), metadata.gid()),
            (0o640, 65534, 65534)
        );
        let fresh = dir.path().join("fresh");
        stage_keeping_owner(&fresh, b"x", 0o644)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o644);
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
