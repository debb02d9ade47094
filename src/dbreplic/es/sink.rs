//! The Elasticsearch sink: the origin claimed for this node at every start (see
//! `dbreplic::claim`), `_bulk` with `index` actions (`_id = <origin>-<table>-<id>`; a full
//! batch in several requests, two in flight at once, see [`REQUESTS_IN_FLIGHT`]), items
//! that failed with 429/5xx sent again (alone) after a backoff, any other item failure stops
//! the sink, and the checkpoint moved only when every item succeeded. For the reconciliation:
//! rows below the checkpoint by the same `_bulk` (checkpoint untouched), the digest by one
//! `histogram` aggregation on `id` (with a `sum`) over this origin's documents, and the
//! anti-join by `_mget` (real-time: it sees documents not yet refreshed).
//!
//! Where the checkpoint lives: a small JSON file per table under
//! `/var/lib/xivo-ha/dbreplic/` (replaced atomically, fsynced), not in the reporting database.
//! Keeping it next to the reporting rows would make Elasticsearch stop whenever PostgreSQL
//! does, and the sinks must be independent. The file names the origin, the index and the URL
//! it is for: pointing DB Replic at a new cluster or index starts that one from the beginning.
//! Losing the file only costs a replay, which overwrites the same documents.
//!
//! The file is written by a task of its own, fed the latest checkpoint through a watch channel:
//! its fsyncs (slow on a busy disk) stay off the delivery path. The saved checkpoint may lag
//! the delivered one by a write in flight, never lead it; a failed write stops the sink at its
//! next batch, as delivering on without a checkpoint would only grow the replay.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::config;
use super::retry::classify_item;
use super::service::{BulkItem, EsService};
use crate::dbreplic::claim::Claimant;
use crate::dbreplic::retry::{self, Decision, ErrorKind};
use crate::dbreplic::sink::{Digest, Report, Sink, SinkError};
use crate::dbreplic::source::{Batch, EventTable};
use crate::fsutil;

/// A batch's `_bulk` requests hold at least this many rows...
const REQUEST_ROWS: usize = 500;
/// ...and a full batch makes this many of them...
const REQUESTS_PER_BATCH: usize = 4;
/// ...of which this many are sent at once.
const REQUESTS_IN_FLIGHT: usize = 2;

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
    me: Claimant,
    table: EventTable,
    index: String,
    bulk: config::BulkWriter,
    checkpoint_path: PathBuf,
    retry_initial: Duration,
    templates_done: bool,
    saver: tokio::sync::watch::Sender<Option<Vec<u8>>>,
    save_error: Arc<Mutex<Option<String>>>,
    saver_task: Option<tokio::task::JoinHandle<()>>,
}

/// Writes each new checkpoint (coalescing those that arrive during a write) until the sink is
/// dropped, then the last one.
async fn save_checkpoints(
    path: PathBuf,
    mut latest: tokio::sync::watch::Receiver<Option<Vec<u8>>>,
    error: Arc<Mutex<Option<String>>>,
) {
    while latest.changed().await.is_ok() {
        let Some(json) = latest.borrow_and_update().clone() else {
            continue;
        };
        let target = path.clone();
        let result =
            tokio::task::spawn_blocking(move || fsutil::write_atomic(&target, &json, Some(0o644)))
                .await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("cannot save {}: {e}", path.display())),
        };
        if let Some(message) = &failure {
            tracing::error!("{message}");
        }
        *error.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }
}

impl EsSink {
    pub fn new(
        service: EsService,
        origin: String,
        me: Claimant,
        table: EventTable,
        index: String,
        checkpoint_dir: PathBuf,
        retry_initial: Duration,
    ) -> Self {
        let checkpoint_path = checkpoint_dir.join(format!("es-{}.json", table.name()));
        let (saver, latest) = tokio::sync::watch::channel(None);
        let save_error = Arc::new(Mutex::new(None));
        let saver_task = tokio::spawn(save_checkpoints(
            checkpoint_path.clone(),
            latest,
            save_error.clone(),
        ));
        let bulk = config::BulkWriter::new(&index, &origin, table);
        EsSink {
            service,
            origin,
            me,
            saver,
            save_error,
            saver_task: Some(saver_task),
            checkpoint_path,
            table,
            bulk,
            index,
            retry_initial,
            templates_done: false,
        }
    }

    /// The task that writes the checkpoint file: it ends, after the last write, once the sink
    /// is dropped. Await it for a clean stop.
    pub fn take_saver_task(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.saver_task.take()
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
        self.service.claim(&self.origin, &self.me).await?;
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
        self.store(batch, report).await?;
        let file = CheckpointFile {
            origin: self.origin.clone(),
            index: self.index.clone(),
            url: self.service.describe().to_owned(),
            last_id,
        };
        if let Some(message) = self
            .save_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(Self::file_error(message));
        }
        let json = serde_json::to_vec(&file).expect("checkpoints serialise");
        self.saver.send_replace(Some(json));
        Ok(())
    }

    async fn write_below(&mut self, batch: &Batch, report: Report<'_>) -> Result<(), SinkError> {
        self.store(batch, report).await
    }

    async fn digest(
        &mut self,
        _table: EventTable,
        width: i64,
        upto: i64,
    ) -> Result<Digest, SinkError> {
        self.service
            .id_histogram(&self.index, &self.origin, width, upto)
            .await
    }

    async fn missing(&mut self, table: EventTable, ids: &[i64]) -> Result<Vec<i64>, SinkError> {
        let doc_ids: Vec<String> = ids
            .iter()
            .map(|&id| config::document_id(&self.origin, table, id))
            .collect();
        let found = self.service.found(&self.index, &doc_ids).await?;
        Ok(ids
            .iter()
            .zip(found)
            .filter(|(_, found)| !found)
            .map(|(&id, _)| id)
            .collect())
    }
}

impl EsSink {
    /// The rows `rows` of `batch` in `_bulk` requests of at least [`REQUEST_ROWS`] rows (a
    /// batch makes up to [`REQUESTS_PER_BATCH`]), [`REQUESTS_IN_FLIGHT`] at a time, so that one
    /// request is serialised while the cluster indexes another; the items' results in `rows`
    /// order.
    async fn send(&self, batch: &Batch, rows: &[usize]) -> Result<Vec<BulkItem>, SinkError> {
        let size = rows.len().div_ceil(REQUESTS_PER_BATCH).max(REQUEST_ROWS);
        let requests: Vec<_> = rows
            .chunks(size)
            .map(|chunk| self.request(batch, chunk))
            .collect();
        let answers: Vec<Vec<BulkItem>> = futures_util::stream::iter(requests)
            .buffered(REQUESTS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// One `_bulk` request of the rows `rows` of `batch`.
    async fn request(&self, batch: &Batch, rows: &[usize]) -> Result<Vec<BulkItem>, SinkError> {
        let mut body = Vec::with_capacity(rows.len() * 640);
        for &i in rows {
            let row = &batch.rows[i];
            self.bulk.write(&mut body, row.id, row.cells(batch.table));
        }
        self.service.bulk(Bytes::from(body), rows.len()).await
    }

    /// Every row of `batch` indexed (failed items retried), checkpoint untouched.
    async fn store(&mut self, batch: &Batch, report: Report<'_>) -> Result<(), SinkError> {
        let table = batch.table;
        let mut pending: Vec<usize> = (0..batch.rows.len()).collect();
        let mut attempt = 0;
        loop {
            let items = self.send(batch, &pending).await?;
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
                if retry::decide(kind) != Decision::Retry {
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
        Ok(())
    }
}
