//! The provisioning side of HA: the backup registrar and proxy that devices get from provd's
//! `default` registrar configuration (`/var/lib/xivo-provd/jsondb/configs/default`), where XiVO
//! keeps them. On a master they point at the slave; disabled blanks them; a slave leaves them.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::HaError;
use crate::fsutil;
use crate::paths::Paths;

const BACKUP_KEYS: [&str; 2] = ["registrar_backup", "proxy_backup"];

/// provd's `default` configuration document, as read from disk.
#[derive(Clone, Debug)]
pub struct DefaultRegistrar {
    pub path: PathBuf,
    document: Map<String, Value>,
}

impl DefaultRegistrar {
    /// Reads the document; `None` when provd has none (provd not installed).
    pub fn load(paths: &Paths) -> Result<Option<DefaultRegistrar>, HaError> {
        let path = paths.provd_config("default");
        let Some(bytes) = fsutil::read_optional(&path)? else {
            return Ok(None);
        };
        let corrupt = |reason: String| HaError::CorruptProvdConfig {
            path: path.clone(),
            reason,
        };
        let document = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(corrupt("not a JSON object".into())),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        Ok(Some(DefaultRegistrar { path, document }))
    }

    /// The backup registrar currently handed to devices (`""` when none).
    pub fn backup_registrar(&self) -> &str {
        self.document
            .get("registrar_backup")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Sets both backup keys to `address`; returns whether the document changed.
    pub fn set_backup(&mut self, address: &str) -> bool {
        let mut changed = false;
        for key in BACKUP_KEYS {
            if self.document.get(key).and_then(Value::as_str) != Some(address) {
                self.document
                    .insert(key.to_owned(), Value::String(address.to_owned()));
                changed = true;
            }
        }
        changed
    }

    /// Prepares replacing the file with the current document (see [`fsutil::Staged`]), with
    /// the mode, owner and group of the file it replaces: provd reads it as its own user.
    pub fn stage(&self) -> Result<fsutil::Staged, HaError> {
        let json =
            serde_json::to_vec(&Value::Object(self.document.clone())).expect("JSON serialises");
        Ok(fsutil::stage_keeping_owner(&self.path, &json, 0o644)?)
    }
}
