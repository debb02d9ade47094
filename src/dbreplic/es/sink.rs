//! The Elasticsearch sink: `_bulk` with `index` actions (`_id = <origin>-<table>-<id>`), items
//! that failed with 429/5xx sent again (alone) after a backoff, any other item failure stops
//! the sink, and the checkpoint moved only when every item succeeded.
//!
//! Where the checkpoint lives: a small JSON file per table under
//! `/var/lib/xivo-ha/dbreplic/` (replaced atomically, fsynced), not in the reporting database.
//! Keeping it next to the reporting rows would make Elasticsearch stop whenever PostgreSQL
//! does, and the sinks must be independent. The file names the origin, the index and the URL
//! it is for: pointing DB Replic at a new cluster or index starts that one from the beginning.
//! Losing the file only costs a replay, which overwrites the same documents.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::config;
use super::retry::classify_item;
use super::service::EsService;
use crate::dbreplic::retry::{self, Decision, ErrorKind};
use crate::dbreplic::sink::{Report, Sink, SinkError};
use crate::dbreplic::source::{Batch, EventTable};
use crate::fsutil;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct CheckpointFile {
    origin: String,
    index: String,
    url: String,
    last_id: i64,
}

pub struct EsSink {
    service: EsService,
    origin: String,
    table: EventTable,
    index: String,
    checkpoint_path: PathBuf,
    retry_initial: Duration,
    templates_done: bool,
}

impl EsSink {
    pub fn new(
        service: EsService,
        origin: String,
        table: EventTable,
        index: String,
        checkpoint_dir: PathBuf,
        retry_initial: Duration,
    ) -> Self {
        EsSink {
            service,
            origin,
            checkpoint_path: checkpoint_dir.join(format!("es-{}.json", table.name())),
            table,
            index,
            retry_initial,
            templates_done: false,
        }
    }

    fn file_error(e: impl std::fmt::Display) -> SinkError {
        // A checkpoint that cannot be saved must stop the sink: delivering on without it would
        // replay everything after a restart, and the admin has to free the disk anyway.
        SinkError::new(ErrorKind::Rejected, e.to_string())
    }
}

impl Sink for EsSink {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    fn describe(&self) -> String {
        self.service.describe().to_owned()
    }

    async fn start(&mut self) -> Result<(), SinkError> {
        if !self.templates_done {
            self.service
                .put_template(
                    &config::template_name(&self.index),
                    config::template_body(self.table, &self.index),
                )
                .await?;
            self.templates_done = true;
        }
        Ok(())
    }

    async fn checkpoint(&mut self, _table: EventTable) -> Result<i64, SinkError> {
        let bytes = fsutil::read_optional(&self.checkpoint_path).map_err(Self::file_error)?;
        let Some(bytes) = bytes else { return Ok(0) };
        let file: CheckpointFile = match serde_json::from_slice(&bytes) {
            Ok(file) => file,
            Err(e) => {
                // Replaying is safe (same _id): a damaged file costs time, not correctness.
                tracing::warn!(
                    "ignoring {}: {e}; Elasticsearch delivery of {} starts over",
                    self.checkpoint_path.display(),
                    self.table
                );
                return Ok(0);
            }
        };
        let same = file.origin == self.origin
            && file.index == self.index
            && file.url == self.service.describe();
        Ok(if same { file.last_id } else { 0 })
    }

    async fn write(&mut self, batch: &Batch, report: Report<'_>) -> Result<(), SinkError> {
        let Some(last_id) = batch.last_id() else {
            return Ok(());
        };
        let table = batch.table;
        let mut pending: Vec<usize> = (0..batch.rows.len()).collect();
        let mut attempt = 0;
        loop {
            let mut body = Vec::with_capacity(pending.len() * 512);
            for &i in &pending {
                config::write_bulk_item(
                    &mut body,
                    &self.index,
                    &self.origin,
                    table,
                    &batch.rows[i],
                );
            }
            let items = self.service.bulk(Bytes::from(body), pending.len()).await?;
            let mut failed = Vec::new();
            let mut first_failure = None;
            for (&row, item) in pending.iter().zip(&items) {
                if item.status < 300 {
                    continue;
                }
                let id = config::document_id(&self.origin, table, batch.rows[row].id);
                let reason = item
                    .error
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "no reason given".into());
                let kind = classify_item(item.status);
                let error = SinkError::new(
                    kind,
                    format!(
                        "Elasticsearch {}: document {id} in index {}: HTTP {}: {reason}",
                        self.service.describe(),
                        self.index,
                        item.status
                    ),
                );
                if retry::decide(kind) == Decision::Stop {
                    return Err(error);
                }
                first_failure.get_or_insert(error);
                failed.push(row);
            }
            let Some(failure) = first_failure else { break };
            report(&SinkError::new(
                failure.kind,
                format!(
                    "{} item(s) failed, retrying them: {}",
                    failed.len(),
                    failure.message
                ),
            ));
            tokio::time::sleep(retry::backoff(self.retry_initial, attempt)).await;
            attempt += 1;
            pending = failed;
        }
        let file = CheckpointFile {
            origin: self.origin.clone(),
            index: self.index.clone(),
            url: self.service.describe().to_owned(),
            last_id,
        };
        let path = self.checkpoint_path.clone();
        let json = serde_json::to_vec(&file).expect("checkpoints serialise");
        tokio::task::spawn_blocking(move || fsutil::write_atomic(&path, &json, Some(0o644)))
            .await
            .map_err(Self::file_error)?
            .map_err(Self::file_error)
    }
}
