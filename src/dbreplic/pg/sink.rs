//! The reporting PostgreSQL sink. Each batch is ONE transaction: binary COPY into the
//! connection's staging table, `INSERT ... SELECT ... ON CONFLICT (origin, id) DO NOTHING` into
//! the reporting table, and the checkpoint row. A crash at any point either commits all three
//! or none; a replay inserts nothing twice. Rows below the checkpoint (reconciliation) take
//! the same transaction without the checkpoint row; the reconciliation's digest and anti-join
//! read the reporting table by its primary key (origin, id).

use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;

use super::config;
use super::service::PgService;
use crate::db::DbTarget;
use crate::dbreplic::claim::Claimant;
use crate::dbreplic::sink::{Digest, Report, Sink, SinkError};
use crate::dbreplic::source::{self, Batch, Cell, EventTable};

pub struct PgSink {
    service: PgService,
    origin: String,
    table: EventTable,
}

impl PgSink {
    /// Claims `origin` for `me` at every start (see `dbreplic::claim`).
    pub fn new(target: DbTarget, origin: String, me: Claimant, table: EventTable) -> Self {
        PgSink {
            service: PgService::new(target).claiming(origin.clone(), me),
            origin,
            table,
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

impl PgSink {
    /// One transaction: the rows, and the checkpoint when `checkpoint`.
    async fn store(&mut self, batch: &Batch, checkpoint: bool) -> Result<(), SinkError> {
        let Some(last_id) = batch.last_id() else {
            return Ok(());
        };
        let table = batch.table;
        let origin = self.origin.clone();
        let copy_sql = format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            config::staging_table(table),
            config::copy_columns(table)
        );
        let client = self.service.client()?;
        let result: Result<(), (&str, tokio_postgres::Error)> = async {
            let tx = client.transaction().await.map_err(|e| ("begin", e))?;
            let sink = tx.copy_in(&copy_sql).await.map_err(|e| ("copy", e))?;
            let writer = BinaryCopyInWriter::new(sink, &config::copy_types(table));
            pin_mut!(writer);
            for row in &batch.rows {
                let mut values: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(row.cells.len() + 2);
                values.push(&origin);
                values.push(&row.id);
                for cell in &row.cells {
                    values.push(match cell {
                        Cell::Int(v) => v,
                        Cell::Text(v) => v,
                        Cell::Timestamp(v) => v,
                    });
                }
                writer
                    .as_mut()
                    .write(&values)
                    .await
                    .map_err(|e| ("copy", e))?;
            }
            writer.finish().await.map_err(|e| ("copy", e))?;
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
            tx.commit().await.map_err(|e| ("commit", e))?;
            Ok(())
        }
        .await;
        result.map_err(|(what, e)| self.service.error(&format!("{what} {table} rows"), &e))
    }
}
