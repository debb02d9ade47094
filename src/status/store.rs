//! Saving and loading the state documents: one file per [`Component`] under
//! `/var/lib/xivo-ha/`, replaced atomically, read back as the types of [`super::documents`].

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::documents::{Component, Documents};
use crate::fsutil::{self, FileError};
use crate::paths::Paths;

/// Records `doc` as the latest of `component`.
pub fn save<T: Serialize>(paths: &Paths, component: Component, doc: &T) -> Result<(), FileError> {
    let path = paths.state_dir().join(component.file_name());
    let mut json = serde_json::to_vec_pretty(doc).expect("state documents serialise");
    json.push(b'\n');
    fsutil::write_atomic(&path, &json, Some(0o644))
}

/// Removes `component`'s document (a state that ended, e.g. maintenance mode); returns
/// whether there was one.
pub fn remove(paths: &Paths, component: Component) -> Result<bool, FileError> {
    let path = paths.state_dir().join(component.file_name());
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FileError::new("remove", &path, e)),
    }
}

/// The latest document of `component`, or `None` when it never ran (or its file is unreadable,
/// e.g. written by an older version in another shape, which is reported as a warning: a state
/// file never stops a command).
pub fn load<T: DeserializeOwned>(paths: &Paths, component: Component) -> Option<T> {
    read(paths, component).unwrap_or_else(|warning| {
        tracing::warn!("{warning}");
        None
    })
}

/// [`load`] without the warning: `Err` is what it would log (for a caller that reads every
/// round and logs it less often).
pub fn read<T: DeserializeOwned>(paths: &Paths, component: Component) -> Result<Option<T>, String> {
    let path = paths.state_dir().join(component.file_name());
    let Some(bytes) = fsutil::read_optional(&path).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        format!(
            "ignoring {}: {e} (one left by another version is replaced at {component}'s next run)",
            path.display()
        )
    })
}

/// When `component` last succeeded: `this_run` when the run being recorded succeeded, else the
/// `last_success_at` of its previous document (read on its own, so that a document of an older
/// version still gives it), so that a failed run does not erase when the last good one was.
pub fn last_success(
    paths: &Paths,
    component: Component,
    this_run: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct LastSuccess {
        last_success_at: Option<DateTime<Utc>>,
    }
    this_run.or_else(|| load::<LastSuccess>(paths, component)?.last_success_at)
}

/// Every component's latest document.
pub fn load_all(paths: &Paths) -> Documents {
    Documents {
        alerts: load(paths, Component::Alerts),
        dbreplic: load(paths, Component::DbReplic),
        doctor: load(paths, Component::Doctor),
        maintenance: load(paths, Component::Maintenance),
        monitor: load(paths, Component::Monitor),
        replication: load(paths, Component::Replication),
        sync: load(paths, Component::Sync),
        sync_back: load(paths, Component::SyncBack),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::documents::{SyncDetails, SyncDoc};

    fn sync_doc(ok: bool) -> SyncDoc {
        SyncDoc {
            summary: "ok".into(),
            started_at: "2026-11-25T11:00:00Z".parse().unwrap(),
            seconds: 1.25,
            ok,
            error: (!ok).then(|| "refused".to_owned()),
            last_success_at: ok.then(|| "2026-11-25T11:00:00Z".parse().unwrap()),
            details: SyncDetails {
                remote: "root@192.0.2.20".into(),
                files_transferred: 3,
                ..SyncDetails::default()
            },
        }
    }

    #[test]
    fn saves_and_loads_by_component() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert_eq!(load::<SyncDoc>(&paths, Component::Sync), None);
        save(&paths, Component::Sync, &sync_doc(true)).unwrap();
        assert!(paths.state_dir().join("sync.json").exists());
        assert_eq!(
            load::<SyncDoc>(&paths, Component::Sync),
            Some(sync_doc(true))
        );
        std::fs::write(paths.state_dir().join("replication.json"), b"{").unwrap();
        let all = load_all(&paths);
        assert_eq!(all.sync, Some(sync_doc(true)));
        assert_eq!(all.replication, None, "unreadable: ignored");
        assert_eq!(all.summaries(), vec![(Component::Sync, "ok")]);
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_even_from_an_older_document() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        assert_eq!(last_success(&paths, Component::Sync, None), None);
        // The previous version's shape: `at` and `duration_ms`, no `started_at` nor `seconds`.
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        std::fs::write(
            paths.state_dir().join("sync.json"),
            br#"{"summary": "old", "at": "2026-11-25T10:00:00Z", "ok": true, "duration_ms": 10,
                "last_success_at": "2026-11-25T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(load::<SyncDoc>(&paths, Component::Sync), None);
        let at: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        assert_eq!(last_success(&paths, Component::Sync, None), Some(at));
        let now = Utc::now();
        assert_eq!(last_success(&paths, Component::Sync, Some(now)), Some(now));
    }
}
