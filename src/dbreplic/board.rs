//! DB Replic's status board: what every (table, sink) task and the configuration tables'
//! refresh report, kept in one [`DbReplicDoc`] saved as `dbreplic.json` for `xivo-ha status`
//! and `/metrics`, and, for errors and recoveries, written to the log once each.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::config_tables;
use super::holes::HoleReport;
use super::logfile::LogFile;
use super::settings::DbReplicSettings;
use super::sink::SinkError;
use super::source::EventTable;
use crate::alert::{Event, Kind};
use crate::paths::Paths;
use crate::status::documents::{
    Component, ConfigStatus, DbReplicDoc, DbReplicMode, SinkState, SinkStatus,
};
use crate::status::store;

/// The shared status of every task, written to the state file and, for errors, to the log.
#[derive(Clone)]
pub(super) struct Board {
    doc: Arc<Mutex<DbReplicDoc>>,
    log: Arc<LogFile>,
    paths: Paths,
}

impl Board {
    pub(super) fn new(settings: &DbReplicSettings, log: Arc<LogFile>, paths: Paths) -> Board {
        let doc = DbReplicDoc {
            mode: if settings.ha_slave {
                DbReplicMode::Ha
            } else {
                DbReplicMode::Normal
            },
            origin: settings.origin.clone(),
            config_tables: (!settings.ha_slave).then(|| ConfigStatus {
                tables: config_tables::CONFIG_TABLES
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
                ..ConfigStatus::default()
            }),
            ..DbReplicDoc::default()
        };
        Board {
            doc: Arc::new(Mutex::new(doc)),
            log,
            paths,
        }
    }

    pub(super) fn with<R>(&self, f: impl FnOnce(&mut DbReplicDoc) -> R) -> R {
        let mut doc = self.doc.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut doc)
    }

    pub(super) fn entry<R>(
        &self,
        key: (EventTable, &'static str),
        f: impl FnOnce(&mut SinkStatus) -> R,
    ) -> R {
        self.with(|doc| {
            let entry = doc
                .tables
                .entry(key.0.name().to_owned())
                .or_default()
                .entry(key.1.to_owned())
                .or_default();
            f(entry)
        })
    }

    pub(super) fn register(&self, key: (EventTable, &'static str), destination: String) {
        self.entry(key, |s| {
            s.destination = destination;
            s.state = SinkState::Ok;
        });
    }

    pub(super) fn delivered(&self, key: (EventTable, &'static str), last_id: i64) {
        self.entry(key, |s| s.last_id = last_id);
    }

    pub(super) fn holes(&self, key: (EventTable, &'static str), holes: HoleReport) {
        self.entry(key, |s| {
            s.holes_waiting = holes.waiting;
            s.hole_after = holes.after;
            s.hole_transactions = holes.transactions;
            s.hole_since = holes.since;
            s.holes_passed = holes.skipped;
        });
    }

    pub(super) fn reconciled(&self, key: (EventTable, &'static str), recovered: u64) {
        self.entry(key, |s| {
            s.recovered += recovered;
            s.last_reconcile_at = Some(chrono::Utc::now());
        });
        if recovered > 0 {
            let message = format!(
                "{} → {}: reconciliation delivered {recovered} row(s) the sink lacked below its checkpoint",
                key.0, key.1
            );
            tracing::warn!("{message}");
            self.log.line("WARN", &message);
        }
    }

    pub(super) fn error(&self, key: (EventTable, &'static str), error: &SinkError) {
        let new = self.entry(key, |s| {
            let new =
                s.last_error.as_deref() != Some(&error.message) || s.state != SinkState::Retrying;
            s.last_error = Some(error.message.clone());
            s.last_error_at = Some(chrono::Utc::now());
            s.state = SinkState::Retrying;
            new
        });
        // Every retry: the alerts mail it once it lasted 5 minutes, then hourly.
        crate::alert::raise(Event::failing(
            Kind::DbReplicSink,
            sink_key(key),
            error.message.clone(),
        ));
        // Once per distinct error, not once per retry.
        if new {
            let message = format!("{} → {}: {}", key.0, key.1, error.message);
            tracing::warn!("{message}");
            self.log.line("WARN", &message);
        }
    }

    /// A step succeeded: a retrying sink delivers again, its error cleared (nothing to do
    /// when it was not retrying).
    pub(super) fn recovered(&self, key: (EventTable, &'static str)) {
        let was_retrying = self.entry(key, |s| {
            let was_retrying = s.state == SinkState::Retrying;
            if was_retrying {
                s.state = SinkState::Ok;
                s.last_error = None;
            }
            was_retrying
        });
        if !was_retrying {
            return;
        }
        crate::alert::raise(Event::recovered(Kind::DbReplicSink, sink_key(key), ""));
        let message = format!("{} → {}: delivering again", key.0, key.1);
        tracing::info!("{message}");
        self.log.line("INFO", &message);
    }

    pub(super) fn stopped(&self, key: (EventTable, &'static str)) {
        let message = self.entry(key, |s| {
            s.state = SinkState::Stopped;
            s.last_error.clone().unwrap_or_default()
        });
        let message = format!("{} → {} stopped: {message}", key.0, key.1);
        tracing::error!("{message}");
        self.log.line("ERROR", &message);
    }

    pub(super) fn config_refreshed(&self, rows: u64) {
        self.with(|doc| {
            if let Some(c) = doc.config_tables.as_mut() {
                c.last_refresh = Some(chrono::Utc::now());
                c.rows = rows;
                c.last_error = None;
            }
        });
        let message = format!("configuration tables refreshed: {rows} rows");
        tracing::info!("{message}");
        self.log.line("INFO", &message);
    }

    pub(super) fn config_failed(&self, error: &str) {
        self.with(|doc| {
            if let Some(c) = doc.config_tables.as_mut() {
                c.last_error = Some(error.to_owned());
            }
        });
        tracing::warn!("{error}");
        self.log.line("WARN", error);
    }

    /// "Rows behind" of every sink, from the tables' highest ids (see [`super::heads`]).
    pub(super) fn behind(&self, heads: &BTreeMap<EventTable, i64>) {
        let now = chrono::Utc::now();
        self.with(|doc| {
            for (table, &max) in heads {
                if let Some(sinks) = doc.tables.get_mut(table.name()) {
                    for s in sinks.values_mut() {
                        let behind = (max - s.last_id).max(0);
                        s.behind = Some(behind);
                        if behind == 0 {
                            s.caught_up_at = Some(now);
                        }
                    }
                }
            }
        });
    }

    pub(super) fn save(&self) {
        let doc = self.with(|doc| {
            doc.updated_at = Some(chrono::Utc::now());
            summarise(doc);
            doc.clone()
        });
        if let Err(e) = store::save(&self.paths, Component::DbReplic, &doc) {
            tracing::warn!("{e}");
        }
    }
}

/// A sink's key in the alerts: `cel -> elasticsearch`.
fn sink_key(key: (EventTable, &'static str)) -> String {
    format!("{} -> {}", key.0, key.1)
}

/// The one line `status` prints.
fn summarise(doc: &mut DbReplicDoc) {
    let mut parts = Vec::new();
    for (table, sinks) in &doc.tables {
        let sinks: Vec<String> = sinks
            .iter()
            .map(|(sink, s)| {
                let behind = s
                    .behind
                    .map(|b| format!(", {b} behind"))
                    .unwrap_or_default();
                let error = match (&s.last_error, s.state) {
                    (Some(e), SinkState::Retrying | SinkState::Stopped) => {
                        format!(", {}: {e}", s.state)
                    }
                    _ => String::new(),
                };
                let hole = match (s.holes_waiting, s.hole_after, s.hole_since) {
                    (0, _, _) | (_, None, _) | (_, _, None) => String::new(),
                    (n, Some(after), Some(since)) => format!(
                        ", waiting on {n} hole(s) after #{after} for {} open transaction(s) since {}",
                        s.hole_transactions,
                        since.format("%H:%M:%S")
                    ),
                };
                let recovered = match s.recovered {
                    0 => String::new(),
                    n => format!(", {n} recovered by reconciliation"),
                };
                format!("{sink} #{}{behind}{hole}{recovered}{error}", s.last_id)
            })
            .collect();
        parts.push(format!("{table} → {}", sinks.join(", ")));
    }
    if let Some(config) = &doc.config_tables {
        match (&config.last_error, config.last_refresh) {
            (Some(e), _) => parts.push(format!("config tables: {e}")),
            (None, Some(at)) => {
                parts.push(format!("config tables refreshed {}", at.format("%H:%M:%S")))
            }
            (None, None) => parts.push("config tables: first refresh pending".into()),
        }
    }
    doc.summary = format!("{} ({}): {}", doc.mode, doc.origin, parts.join("; "));
}
