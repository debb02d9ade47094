//! The JSON state files that components leave for `status` (and the monitor's HTTP endpoint):
//! one file per component under `/var/lib/xivo-ha/`, replaced atomically. By convention each
//! document has a `summary` string: the one line `status` prints for it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fsutil::{self, FileError};
use crate::paths::Paths;

fn file_name(component: &str) -> String {
    format!("{component}.json")
}

/// Records `state` as the latest of `component` (e.g. `monitor`, `replication`).
pub fn save<T: Serialize>(paths: &Paths, component: &str, state: &T) -> Result<(), FileError> {
    let path = paths.state_dir().join(file_name(component));
    let mut json = serde_json::to_vec_pretty(state).expect("state documents serialise");
    json.push(b'\n');
    fsutil::write_atomic(&path, &json, Some(0o644))
}

/// The latest state of `component`, or `None` when it never ran (or its file is unreadable,
/// which is reported as a warning: a state file never stops a command).
pub fn load<T: DeserializeOwned>(paths: &Paths, component: &str) -> Option<T> {
    let path = paths.state_dir().join(file_name(component));
    let bytes = match fsutil::read_optional(&path) {
        Ok(bytes) => bytes?,
        Err(e) => {
            tracing::warn!("{e}");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            None
        }
    }
}

/// When `component` last succeeded: `this_run` when the run being recorded succeeded, else the
/// `last_success_at` of its previous state document, so that a failed run does not erase when
/// the last good one was (the metrics' "seconds since the last successful ...").
pub fn last_success(
    paths: &Paths,
    component: &str,
    this_run: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    this_run.or_else(|| {
        load::<serde_json::Value>(paths, component)?
            .get("last_success_at")?
            .as_str()?
            .parse()
            .ok()
    })
}

/// Every component's latest state, by component name.
pub fn load_all(paths: &Paths) -> BTreeMap<String, serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(paths.state_dir()) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let component = name.strip_suffix(".json")?.to_owned();
            let value = load(paths, &component)?;
            Some((component, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Sample {
        summary: String,
        count: u32,
    }

    #[test]
    fn saves_and_loads_by_component() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert_eq!(load::<Sample>(&paths, "sync"), None);
        let sample = Sample {
            summary: "ok".into(),
            count: 3,
        };
        save(&paths, "sync", &sample).unwrap();
        assert_eq!(load::<Sample>(&paths, "sync"), Some(sample));
        std::fs::write(paths.state_dir().join("broken.json"), b"{").unwrap();
        let all = load_all(&paths);
        assert_eq!(all.keys().collect::<Vec<_>>(), vec!["sync"]);
    }
}
