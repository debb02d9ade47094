//! The source side: XiVO's event tables (`cel`, `queue_log`) in the local `asterisk` database,
//! read incrementally by primary key `id`, in batches bounded by rows and bytes. Owns the
//! column lists of both tables (the single description that the sinks' layouts derive from)
//! and the guard against ids that become visible out of order.
//!
//! Why the guard: ids come from a sequence, so a transaction that took id 10 may commit after
//! the one that took id 11. A reader that has moved its checkpoint to 11 would never see 10.
//! So a batch stops before the first hole in the ids; a hole that is still there after
//! `gap_wait` is taken as permanent (a rolled-back insert, sequence values lost in a crash,
//! rows purged by XiVO) and skipped.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio_postgres::Client;

use crate::db::{DbError, DbTarget};

/// The PostgreSQL type a column is forwarded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any integer column, forwarded as bigint (an Elasticsearch long).
    Int,
    Text,
    /// `timestamp without time zone` (an Elasticsearch date).
    Timestamp,
    /// Text that holds a date (queue_log.time is varchar in XiVO): a date in Elasticsearch,
    /// text in PostgreSQL as in XiVO.
    DateText,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventTable {
    Cel,
    QueueLog,
}

const CEL_COLUMNS: &[(&str, Kind)] = &[
    ("eventtype", Kind::Text),
    ("eventtime", Kind::Timestamp),
    ("userdeftype", Kind::Text),
    ("cid_name", Kind::Text),
    ("cid_num", Kind::Text),
    ("cid_ani", Kind::Text),
    ("cid_rdnis", Kind::Text),
    ("cid_dnid", Kind::Text),
    ("exten", Kind::Text),
    ("context", Kind::Text),
    ("channame", Kind::Text),
    ("appname", Kind::Text),
    ("appdata", Kind::Text),
    ("amaflags", Kind::Int),
    ("accountcode", Kind::Text),
    ("peeraccount", Kind::Text),
    ("uniqueid", Kind::Text),
    ("linkedid", Kind::Text),
    ("userfield", Kind::Text),
    ("peer", Kind::Text),
    ("extra", Kind::Text),
    ("call_log_id", Kind::Int),
];

const QUEUE_LOG_COLUMNS: &[(&str, Kind)] = &[
    ("time", Kind::DateText),
    ("callid", Kind::Text),
    ("queuename", Kind::Text),
    ("agent", Kind::Text),
    ("event", Kind::Text),
    ("data1", Kind::Text),
    ("data2", Kind::Text),
    ("data3", Kind::Text),
    ("data4", Kind::Text),
    ("data5", Kind::Text),
];

impl EventTable {
    pub const ALL: [EventTable; 2] = [EventTable::Cel, EventTable::QueueLog];

    /// The table's name in XiVO's database and in the reporting database.
    pub fn name(self) -> &'static str {
        match self {
            EventTable::Cel => "cel",
            EventTable::QueueLog => "queue_log",
        }
    }

    /// Every column but `id`, in forwarding order.
    pub fn columns(self) -> &'static [(&'static str, Kind)] {
        match self {
            EventTable::Cel => CEL_COLUMNS,
            EventTable::QueueLog => QUEUE_LOG_COLUMNS,
        }
    }

    /// The incremental read. Casts make the row shape independent of XiVO's version (later
    /// versions made queue_log.time a timestamptz and widened columns).
    fn select_sql(self) -> String {
        let columns: Vec<String> = self
            .columns()
            .iter()
            .map(|(name, kind)| {
                let cast = match kind {
                    Kind::Int => "bigint",
                    Kind::Text | Kind::DateText => "text",
                    Kind::Timestamp => "timestamp",
                };
                format!("t.\"{name}\"::{cast}")
            })
            .collect();
        // `t.id`, not `id`: ORDER BY `id` would name the output column `id::bigint`, and
        // sorting by that expression cannot walk the primary key (every row after the
        // checkpoint would be read and sorted for each batch).
        format!(
            "SELECT t.id::bigint, {} FROM {} t WHERE t.id > $1::bigint ORDER BY t.id LIMIT $2::bigint",
            columns.join(", "),
            self.name()
        )
    }
}

impl std::fmt::Display for EventTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One column value.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Timestamp(Option<NaiveDateTime>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SourceRow {
    pub id: i64,
    /// In the order of [`EventTable::columns`].
    pub cells: Vec<Cell>,
}

impl SourceRow {
    /// Rough size, for the batch byte limit.
    pub fn approx_bytes(&self) -> usize {
        self.cells
            .iter()
            .map(|c| match c {
                Cell::Text(Some(s)) => s.len() + 4,
                _ => 8,
            })
            .sum::<usize>()
            + 8
    }
}

/// Rows with consecutive (or knowingly gapped) ids, to be delivered together.
#[derive(Clone, Debug)]
pub struct Batch {
    pub table: EventTable,
    pub rows: Vec<SourceRow>,
}

impl Batch {
    pub fn last_id(&self) -> Option<i64> {
        self.rows.last().map(|r| r.id)
    }
}

/// A connection to the local XiVO database that reads one table after a checkpoint.
pub struct Source {
    target: DbTarget,
    client: Option<Client>,
    batch_rows: usize,
    batch_bytes: usize,
    gap_wait: Duration,
    /// The hole last seen: (the id just before it, when it was first seen).
    gap: Option<(i64, Instant)>,
}

impl Source {
    pub fn new(
        target: DbTarget,
        batch_rows: usize,
        batch_bytes: usize,
        gap_wait: Duration,
    ) -> Self {
        Source {
            target,
            client: None,
            batch_rows,
            batch_bytes,
            gap_wait,
            gap: None,
        }
    }

    async fn client(&mut self) -> Result<&Client, DbError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(self.target.connect().await?);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// The next rows of `table` after `after`: at most `batch_rows` rows and about
    /// `batch_bytes` bytes (always at least one row), stopping before a recent hole in the ids.
    pub async fn read(&mut self, table: EventTable, after: i64) -> Result<Batch, DbError> {
        let limit = self.batch_rows as i64;
        let sql = table.select_sql();
        let target = self.target.clone();
        let client = self.client().await?;
        let result = client.query(&sql, &[&after, &limit]).await;
        let pg_rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                if e.is_closed() {
                    self.client = None;
                }
                return Err(target.query_error(crate::db::error_reason(&e)));
            }
        };
        let mut rows = Vec::with_capacity(pg_rows.len());
        let mut bytes = 0;
        for pg_row in &pg_rows {
            let mut cells = Vec::with_capacity(table.columns().len());
            for (index, (_, kind)) in table.columns().iter().enumerate() {
                let at = index + 1;
                cells.push(match kind {
                    Kind::Int => Cell::Int(pg_row.get(at)),
                    Kind::Text | Kind::DateText => Cell::Text(pg_row.get(at)),
                    Kind::Timestamp => Cell::Timestamp(pg_row.get(at)),
                });
            }
            let row = SourceRow {
                id: pg_row.get(0),
                cells,
            };
            bytes += row.approx_bytes();
            rows.push(row);
            if bytes >= self.batch_bytes {
                break;
            }
        }
        let keep = self.contiguous_prefix(after, &rows, Instant::now());
        rows.truncate(keep);
        Ok(Batch { table, rows })
    }

    /// How many of `rows` can be delivered now: up to the first hole in the ids, unless that
    /// hole has been there for `gap_wait` already at `now`.
    fn contiguous_prefix(&mut self, after: i64, rows: &[SourceRow], now: Instant) -> usize {
        let mut previous = after;
        for (index, row) in rows.iter().enumerate() {
            // `after == 0` is a fresh start: the first id is whatever XiVO's purge left.
            let hole = row.id != previous + 1 && !(index == 0 && after == 0);
            if hole {
                match self.gap {
                    Some((before, since)) if before == previous => {
                        if now.duration_since(since) < self.gap_wait {
                            return index;
                        }
                        tracing::debug!(
                            after = previous,
                            next = row.id,
                            "skipping a permanent hole in the ids"
                        );
                    }
                    _ => {
                        self.gap = Some((previous, now));
                        if !self.gap_wait.is_zero() {
                            return index;
                        }
                    }
                }
            }
            previous = row.id;
        }
        rows.len()
    }

    /// The highest id in `table` (0 when empty), for "rows behind".
    pub async fn max_id(&mut self, table: EventTable) -> Result<i64, DbError> {
        let target = self.target.clone();
        let client = self.client().await?;
        let sql = format!("SELECT coalesce(max(id), 0)::bigint FROM {}", table.name());
        match client.query_one(&sql, &[]).await {
            Ok(row) => Ok(row.get(0)),
            Err(e) => {
                if e.is_closed() {
                    self.client = None;
                }
                Err(target.query_error(crate::db::error_reason(&e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: &[i64]) -> Vec<SourceRow> {
        ids.iter()
            .map(|&id| SourceRow { id, cells: vec![] })
            .collect()
    }

    fn source(wait_ms: u64) -> Source {
        let target = DbTarget::parse("source", "host=127.0.0.1 dbname=x").unwrap();
        Source::new(target, 10, 1000, Duration::from_millis(wait_ms))
    }

    #[test]
    fn a_batch_stops_before_a_recent_hole_then_skips_it() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut s = source(50);
        assert_eq!(s.contiguous_prefix(0, &rows(&[5, 6, 8, 9]), at(0)), 2);
        assert_eq!(s.contiguous_prefix(6, &rows(&[8, 9]), at(49)), 0);
        assert_eq!(s.contiguous_prefix(6, &rows(&[8, 9]), at(50)), 2);
        // The late row filled the hole: nothing is skipped.
        let mut s = source(50);
        assert_eq!(s.contiguous_prefix(6, &rows(&[8]), at(0)), 0);
        assert_eq!(s.contiguous_prefix(6, &rows(&[7, 8]), at(10)), 2);
    }

    #[test]
    fn no_wait_means_holes_are_skipped_at_once() {
        let mut s = source(0);
        assert_eq!(s.contiguous_prefix(1, &rows(&[3, 4, 9]), Instant::now()), 3);
    }
}
