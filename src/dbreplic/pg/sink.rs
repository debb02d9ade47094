//! The reporting PostgreSQL sink. Each batch is ONE transaction: the rows, then the
//! checkpoint row. A new batch is a binary `COPY` straight into the reporting table, its cells
//! passed on in the binary form the source sent them in; should one of its rows be there
//! already (a unique violation), that transaction is rolled back and the batch takes the
//! idempotent path: binary COPY into the connection's staging table, `INSERT ... SELECT ... ON
//! CONFLICT (origin, id) DO NOTHING` into the reporting table, and the checkpoint row. A crash
//! at any point either commits all or none; a replay inserts nothing twice. Rows below the
//! checkpoint (reconciliation) take the idempotent path without the checkpoint row; the
//! reconciliation's digest and anti-join read the reporting table by its primary key
//! (origin, id).

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, pin_mut};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use super::config;
use super::service::PgService;
use crate::db::DbTarget;
use crate::dbreplic::claim::Claimant;
use crate::dbreplic::sink::{Digest, Report, Sink, SinkError};
use crate::dbreplic::source::{self, Batch, EventTable};

pub struct PgSink {
    service: PgService,
    origin: String,
    table: EventTable,
    /// Prepared on the current connection (`None`: prepare before the next write).
    prepared: Option<Prepared>,
}

/// The statements of every batch.
struct Prepared {
    /// `COPY` straight into the reporting table.
    copy: Statement,
    checkpoint: Statement,
}

impl PgSink {
    /// Claims `origin` for `me` at every start (see `dbreplic::claim`).
    pub fn new(target: DbTarget, origin: String, me: Claimant, table: EventTable) -> Self {
        PgSink {
            service: PgService::new(target).claiming(origin.clone(), me),
            origin,
            table,
            prepared: None,
        }
    }
}

impl Sink for PgSink {
    fn name(&self) -> &'static str {
        "postgresql"
    }

    fn describe(&self) -> String {
        self.service.describe()
    }

    async fn start(&mut self) -> Result<(), SinkError> {
        self.prepared = None;
        self.service.start(self.table).await
    }

    async fn checkpoint(&mut self, table: EventTable) -> Result<i64, SinkError> {
        let sql = format!(
            "SELECT last_id FROM {} WHERE origin = $1 AND table_name = $2",
            config::CHECKPOINT_TABLE
        );
        let origin = self.origin.clone();
        let client = self.service.client()?;
        let result = client.query_opt(&sql, &[&origin, &table.name()]).await;
        match result {
            Ok(row) => Ok(row.map(|r| r.get(0)).unwrap_or(0)),
            Err(e) => Err(self.service.error("read the checkpoint", &e)),
        }
    }

    async fn write(&mut self, batch: &Batch, _report: Report<'_>) -> Result<(), SinkError> {
        self.store(batch, true).await
    }

    async fn write_below(&mut self, batch: &Batch, _report: Report<'_>) -> Result<(), SinkError> {
        self.store(batch, false).await
    }

    async fn digest(
        &mut self,
        table: EventTable,
        width: i64,
        upto: i64,
    ) -> Result<Digest, SinkError> {
        let sql = source::digest_sql(table.name(), "origin = $3 AND");
        let origin = self.origin.clone();
        let client = self.service.client()?;
        let result = client.query(&sql, &[&width, &upto, &origin]).await;
        match result {
            Ok(rows) => Ok(rows
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect()),
            Err(e) => Err(self.service.error(&format!("count {table} rows"), &e)),
        }
    }

    async fn missing(&mut self, table: EventTable, ids: &[i64]) -> Result<Vec<i64>, SinkError> {
        let sql = format!(
            "SELECT s.id FROM unnest($1::bigint[]) AS s(id) WHERE NOT EXISTS \
             (SELECT 1 FROM {table} t WHERE t.origin = $2 AND t.id = s.id) ORDER BY s.id"
        );
        let origin = self.origin.clone();
        let client = self.service.client()?;
        let result = client.query(&sql, &[&ids, &origin]).await;
        match result {
            Ok(rows) => Ok(rows.iter().map(|r| r.get(0)).collect()),
            Err(e) => Err(self.service.error(&format!("look up {table} rows"), &e)),
        }
    }
}

/// Bytes per COPY data message: encoding the next chunk overlaps the server's parsing of the
/// previous one.
const COPY_CHUNK: usize = 256 * 1024;

/// `batch`'s rows, under `origin`, in the binary COPY format of [`config::copy_columns`]: the
/// source's cells are copied as they came (same types), never decoded. Yields chunks of about
/// [`COPY_CHUNK`] bytes.
fn encode_copy<'a>(origin: &'a str, batch: &'a Batch) -> impl Iterator<Item = Bytes> + 'a {
    let columns = batch.table.columns().len();
    let fields = i16::try_from(columns + 2).expect("a table has few columns");
    let mut rows = batch.rows.iter().peekable();
    let mut header = true;
    std::iter::from_fn(move || {
        rows.peek()?;
        let mut out = BytesMut::with_capacity(COPY_CHUNK + 4096);
        if std::mem::take(&mut header) {
            out.put_slice(b"PGCOPY\n\xff\r\n\0");
            out.put_i32(0); // flags
            out.put_i32(0); // header extension length
        }
        while out.len() < COPY_CHUNK {
            let Some(row) = rows.next() else { break };
            out.put_i16(fields);
            out.put_i32(origin.len() as i32);
            out.put_slice(origin.as_bytes());
            out.put_i32(8);
            out.put_i64(row.id);
            for index in 0..columns {
                match row.raw(index) {
                    Some(value) => {
                        out.put_i32(value.len() as i32);
                        out.put_slice(value);
                    }
                    None => out.put_i32(-1),
                }
            }
        }
        if rows.peek().is_none() {
            out.put_i16(-1); // trailer
        }
        Some(out.freeze())
    })
}

/// A statement's failure, with what was being done.
type Failed = (&'static str, tokio_postgres::Error);

impl PgSink {
    /// Prepares the statements of every batch on the (new) connection.
    async fn prepare(&mut self) -> Result<(), SinkError> {
        let table = self.table;
        let client = self.service.client()?;
        let prepared = async {
            let copy = client.prepare(&copy_sql(table, table.name())).await?;
            let checkpoint = client.prepare(&config::checkpoint_upsert_sql()).await?;
            Ok::<_, tokio_postgres::Error>(Prepared { copy, checkpoint })
        }
        .await;
        self.prepared =
            Some(prepared.map_err(|e| self.service.error("prepare the statements", &e))?);
        Ok(())
    }

    /// One transaction: the rows, and the checkpoint when `checkpoint`. A new batch (after
    /// the checkpoint) is copied straight into the reporting table; should any of its rows be
    /// there already (a unique violation: rows put there by hand, or a checkpoint row
    /// deleted), that transaction is rolled back and the batch takes the idempotent path.
    async fn store(&mut self, batch: &Batch, checkpoint: bool) -> Result<(), SinkError> {
        if batch.rows.is_empty() {
            return Ok(());
        }
        let table = batch.table;
        if self.prepared.is_none() {
            self.prepare().await?;
        }
        let prepared = self.prepared.as_ref().expect("prepared above");
        let client = self.service.client()?;
        let result = if checkpoint {
            match copy_direct(client, prepared, &self.origin, batch).await {
                Err(("copy", e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    tracing::info!(
                        table = %table,
                        "some rows of the batch are already in the reporting database: \
                         merging it instead"
                    );
                    merge(client, &self.origin, batch, checkpoint).await
                }
                other => other,
            }
        } else {
            merge(client, &self.origin, batch, checkpoint).await
        };
        result.map_err(|(what, e)| self.service.error(&format!("{what} {table} rows"), &e))
    }
}

/// `COPY` into the reporting table and the checkpoint row, in one transaction.
async fn copy_direct(
    client: &mut Client,
    prepared: &Prepared,
    origin: &str,
    batch: &Batch,
) -> Result<(), Failed> {
    let last_id = batch.last_id().expect("not empty");
    let tx = client.transaction().await.map_err(|e| ("begin", e))?;
    send_copy(&tx, &prepared.copy, origin, batch).await?;
    tx.execute(
        &prepared.checkpoint,
        &[&origin, &batch.table.name(), &last_id],
    )
    .await
    .map_err(|e| ("save the checkpoint", e))?;
    tx.commit().await.map_err(|e| ("commit", e))
}

/// The idempotent path: `COPY` into the staging table, `INSERT ... ON CONFLICT DO NOTHING`,
/// and the checkpoint row when `checkpoint`, in one transaction.
async fn merge(
    client: &mut Client,
    origin: &str,
    batch: &Batch,
    checkpoint: bool,
) -> Result<(), Failed> {
    let table = batch.table;
    let last_id = batch.last_id().expect("not empty");
    let tx = client.transaction().await.map_err(|e| ("begin", e))?;
    let copy = tx
        .prepare(&copy_sql(table, &config::staging_table(table)))
        .await
        .map_err(|e| ("copy", e))?;
    send_copy(&tx, &copy, origin, batch).await?;
    tx.execute(&config::merge_sql(table), &[])
        .await
        .map_err(|e| ("insert", e))?;
    if checkpoint {
        tx.execute(
            &config::checkpoint_upsert_sql(),
            &[&origin, &table.name(), &last_id],
        )
        .await
        .map_err(|e| ("save the checkpoint", e))?;
    }
    tx.commit().await.map_err(|e| ("commit", e))
}

/// `COPY <into> (<columns>) FROM STDIN (FORMAT binary)`.
fn copy_sql(table: EventTable, into: &str) -> String {
    format!(
        "COPY {into} ({}) FROM STDIN (FORMAT binary)",
        config::copy_columns(table)
    )
}

/// Streams `batch` through the prepared `COPY` statement `copy`.
async fn send_copy(
    tx: &tokio_postgres::Transaction<'_>,
    copy: &Statement,
    origin: &str,
    batch: &Batch,
) -> Result<(), Failed> {
    let sink = tx.copy_in(copy).await.map_err(|e| ("copy", e))?;
    pin_mut!(sink);
    for chunk in encode_copy(origin, batch) {
        sink.feed(chunk).await.map_err(|e| ("copy", e))?;
    }
    sink.finish().await.map_err(|e| ("copy", e))?;
    Ok(())
}
