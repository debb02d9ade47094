//! The [`Sink`] trait: what a destination of DB Replic (the reporting PostgreSQL,
//! Elasticsearch) must do, and the delivery contract every implementation keeps.
//!
//! # Delivery contract
//! - **At-least-once delivery.** The runner hands a sink batches of rows with increasing ids,
//!   starting after the sink's own checkpoint. A batch is sent again (whole or in part) after
//!   any failure, crash or restart, so a sink sees some rows more than once.
//! - **Idempotent writes keyed by (origin, table, id).** Writing a row twice leaves one copy:
//!   PostgreSQL inserts with `ON CONFLICT (origin, id) DO NOTHING`; Elasticsearch indexes with
//!   `_id = <origin>-<table>-<id>`, so a replay overwrites the same document.
//! - **The checkpoint advances only once the batch is durable.** `write` returns `Ok` only when
//!   every row of the batch is stored and the checkpoint that `checkpoint` will return from then
//!   on (also after a restart) is the batch's last id. At-least-once plus idempotence gives
//!   exactly one copy of every row in every sink.
//! - **Rows below the checkpoint** (found missing by the reconciliation pass,
//!   [`super::reconcile`]) are stored with `write_below`, the same idempotent write that leaves
//!   the checkpoint where it is.
//! - **Errors are classified** ([`SinkError::kind`]) and the runner applies the one retry
//!   policy of [`super::retry`]; a sink never sleeps on behalf of the runner, except to retry
//!   the failed items of a partially successful request.

use std::future::Future;

use super::retry::ErrorKind;
use super::source::{Batch, EventTable};

/// How a sink reports a failure it is handling itself (items being retried), so that
/// `status` shows it.
pub type Report<'a> = &'a (dyn Fn(&SinkError) + Send + Sync);

/// A failure of a sink operation: its kind (for the retry policy) and a one-line message that
/// names the destination and the fix.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub kind: ErrorKind,
    pub message: String,
}

impl SinkError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SinkError {
            kind,
            message: message.into(),
        }
    }
}

pub trait Sink: Send + 'static {
    /// `postgresql` or `elasticsearch`: the name in logs and `status`.
    fn name(&self) -> &'static str;

    /// Where the destination is, without credentials.
    fn describe(&self) -> String;

    /// Connects and prepares the destination (tables, index templates). Called again after
    /// any error before the next `write`.
    fn start(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The last id of `table` durably delivered (0 when none).
    fn checkpoint(
        &mut self,
        table: EventTable,
    ) -> impl Future<Output = Result<i64, SinkError>> + Send;

    /// Stores every row of `batch` and moves the checkpoint to its last id (see the contract).
    fn write(
        &mut self,
        batch: &Batch,
        report: Report<'_>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Stores every row of `batch` (ids at or below the checkpoint), checkpoint unchanged.
    fn write_below(
        &mut self,
        batch: &Batch,
        report: Report<'_>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// This origin's rows of `table` with ids up to `upto`, per bucket `id / width`: (rows, sum
    /// of the ids). May lag the writes by a refresh (Elasticsearch): a bucket that differs is
    /// checked with [`Sink::missing`], which does not.
    fn digest(
        &mut self,
        table: EventTable,
        width: i64,
        upto: i64,
    ) -> impl Future<Output = Result<Digest, SinkError>> + Send;

    /// Of `ids`, those this origin's `table` lacks, in order.
    fn missing(
        &mut self,
        table: EventTable,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<i64>, SinkError>> + Send;
}

/// Bucket (`id / width`) → (rows, sum of ids).
pub type Digest = std::collections::BTreeMap<i64, (i64, f64)>;
