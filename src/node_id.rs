//! This node's identity: 128 random bits in hex, made once on the node and kept in
//! `/var/lib/xivo-ha/node-id` (0644). Nothing else carries it: not `custom.env` (which an
//! administrator may copy from the other node), not the configuration database (XiVO's
//! `infos.uuid` is copied to the slave by the replication). DB Replic binds its origin to it
//! (see `dbreplic::claim`).

use std::fmt;
use std::io;

use crate::fsutil::{self, FileError};
use crate::paths::Paths;

/// 32 lower-case hex digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeId(String);

#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(
        "{}: `{found}` is not a node id (32 hex digits): restore the file, or remove it to make a new \
         identity (this node then needs `xivo-ha db-replic --take-over-origin` for its origin)",
        path.display()
    )]
    Malformed {
        path: std::path::PathBuf,
        found: String,
    },
}

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh identity from the OS's random source.
    pub fn random() -> NodeId {
        NodeId(format!("{:032x}", rand::random::<u128>()))
    }

    /// Checks the text of a node-id file (surrounding white space allowed).
    pub fn parse(text: &str) -> Option<NodeId> {
        let text = text.trim();
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| NodeId(text.to_ascii_lowercase()))
    }

    /// This node's identity, `None` when it was never made.
    pub fn read(paths: &Paths) -> Result<Option<NodeId>, NodeIdError> {
        let path = paths.node_id();
        let Some(bytes) = fsutil::read_optional(&path)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        match NodeId::parse(&text) {
            Some(id) => Ok(Some(id)),
            None => Err(NodeIdError::Malformed {
                path,
                found: text.trim().chars().take(40).collect(),
            }),
        }
    }

    /// This node's identity, made on first need. Two processes making it at once get the same
    /// one: the file appears complete or not at all (written beside it, then hard-linked into
    /// place, which fails when it exists), and the loser reads the winner's.
    pub fn load_or_create(paths: &Paths) -> Result<NodeId, NodeIdError> {
        if let Some(id) = NodeId::read(paths)? {
            return Ok(id);
        }
        let path = paths.node_id();
        let text = format!("{}\n", NodeId::random());
        fsutil::create_atomic(&path, text.as_bytes(), Some(0o644))?;
        match NodeId::read(paths)? {
            Some(id) => Ok(id),
            None => Err(FileError::new(
                "read",
                &path,
                io::Error::new(io::ErrorKind::NotFound, "vanished right after it was made"),
            )
            .into()),
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_then_kept() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        assert_eq!(NodeId::read(&paths).unwrap(), None);
        let id = NodeId::load_or_create(&paths).unwrap();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(NodeId::load_or_create(&paths).unwrap(), id);
        let mode = fs::metadata(paths.node_id()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // Nothing left beside it.
        let names: Vec<_> = fs::read_dir(paths.state_dir()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert_ne!(NodeId::random(), NodeId::random());
    }

    #[test]
    fn two_at_once_agree() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        let ids: Vec<NodeId> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| NodeId::load_or_create(&paths).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    }

    #[test]
    fn a_damaged_file_is_named() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        fs::create_dir_all(paths.state_dir()).unwrap();
        fs::write(paths.node_id(), "xivo-a\n").unwrap();
        let e = NodeId::load_or_create(&paths).unwrap_err().to_string();
        assert!(e.contains("node-id") && e.contains("`xivo-a`"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }
}
