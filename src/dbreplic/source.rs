//! The source side: XiVO's event tables (`cel`, `queue_log`) in the local `asterisk` database,
//! read incrementally by primary key `id`, in batches bounded by rows and bytes, by statements
//! prepared once per connection. A row keeps its cells in the binary form PostgreSQL sent them
//! in: the PostgreSQL sink copies them on as they are, the Elasticsearch sink reads them in
//! place. Owns the column lists of both tables (the single description that the sinks'
//! layouts derive from) and the queries behind the guard against ids that become visible out
//! of order.
//!
//! Why the guard: ids come from a sequence, so a transaction that took id 10 may commit after
//! the one that took id 11. A reader that has moved its checkpoint to 11 would never see 10.
//! So a batch stops before the first hole in the ids, and the hole is passed only once no
//! transaction that could still fill it is open: [`super::holes`] explains the rule (the
//! table's write-lock holders in `pg_locks`) and decides; this file lists the writers.
//! The reads by id range and by id list serve the reconciliation pass ([`super::reconcile`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Statement};

use super::holes::{HoleReport, Holes};
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
    pub fn select_sql(self) -> String {
        self.select_where("t.id > $1::bigint ORDER BY t.id LIMIT $2::bigint")
    }

    /// The rows of an id list (`$1`), for the reconciliation pass.
    fn select_ids_sql(self) -> String {
        self.select_where("t.id = ANY($1::bigint[]) ORDER BY t.id")
    }

    fn select_where(self, condition: &str) -> String {
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
            "SELECT t.id::bigint, {} FROM {} t WHERE {condition}",
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

/// One column value, borrowed from the row as it came from PostgreSQL (no copy).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Timestamp(Option<NaiveDateTime>),
}

/// A column's value in PostgreSQL's binary format, as the source sent it: what the
/// PostgreSQL sink copies on without decoding (the source's casts make the types those of
/// the reporting tables).
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One source row: its id, and its columns kept in the binary form PostgreSQL sent them in,
/// read in place ([`SourceRow::cells`], [`SourceRow::raw`]) rather than copied cell by cell.
#[derive(Debug)]
pub struct SourceRow {
    pub id: i64,
    row: tokio_postgres::Row,
}

impl SourceRow {
    fn new(row: tokio_postgres::Row) -> SourceRow {
        SourceRow {
            id: row.get(0),
            row,
        }
    }

    /// The value of column `index` of [`EventTable::columns`] in PostgreSQL's binary format
    /// (`None`: NULL).
    pub fn raw(&self, index: usize) -> Option<&[u8]> {
        self.row.get::<_, Option<Raw>>(index + 1).map(|r| r.0)
    }

    /// The columns of `table` (this row's table), in [`EventTable::columns`] order.
    pub fn cells(&self, table: EventTable) -> impl Iterator<Item = Cell<'_>> {
        table
            .columns()
            .iter()
            .enumerate()
            .map(|(index, (_, kind))| {
                let at = index + 1;
                match kind {
                    Kind::Int => Cell::Int(self.row.get(at)),
                    Kind::Text | Kind::DateText => Cell::Text(self.row.get(at)),
                    Kind::Timestamp => Cell::Timestamp(self.row.get(at)),
                }
            })
    }

    /// Rough size, for the batch byte limit.
    pub fn approx_bytes(&self) -> usize {
        (1..self.row.len())
            .map(|at| {
                self.row
                    .get::<_, Option<Raw>>(at)
                    .map_or(4, |r| r.0.len() + 4)
            })
            .sum::<usize>()
            + 8
    }
}

/// Rows with consecutive (or knowingly gapped) ids, to be delivered together.
#[derive(Debug)]
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
    /// The statements prepared on `client`, by SQL text: a poll is one Bind/Execute round
    /// trip, neither parsed nor planned again.
    statements: HashMap<String, Statement>,
    batch_rows: usize,
    batch_bytes: usize,
    holes: Holes,
}

/// The virtual transaction ids of the sessions holding a lock on the table that an INSERT
/// takes (or a stronger one), in this database, this session excluded (see [`super::holes`]).
const WRITERS_SQL: &str = "SELECT coalesce(array_agg(virtualtransaction::text), '{}') \
     FROM pg_locks WHERE locktype = 'relation' AND relation = $1::text::regclass \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock') \
     AND pid IS DISTINCT FROM pg_backend_pid()";

/// Counts and id sums per bucket (`id / $1`) of the ids up to `$2`, for the reconciliation.
pub fn digest_sql(table: &str, condition: &str) -> String {
    format!(
        "SELECT (id / $1::bigint)::bigint, count(*)::bigint, sum(id)::float8 FROM {table} \
         WHERE {condition} id <= $2::bigint GROUP BY 1"
    )
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
            statements: HashMap::new(),
            batch_rows,
            batch_bytes,
            holes: Holes::new(gap_wait),
        }
    }

    async fn client(&mut self) -> Result<&Client, DbError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.statements.clear();
            self.client = Some(self.target.connect().await?);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// The next rows of `table` after `after`: at most `batch_rows` rows and about
    /// `batch_bytes` bytes (always at least one row), stopping before a recent hole in the ids.
    pub async fn read(&mut self, table: EventTable, after: i64) -> Result<Batch, DbError> {
        if self.holes.must_check() {
            // Before the read, so that the read's snapshot is later than this check.
            let open = self.writers(table).await?;
            self.holes.check(&open, Instant::now());
        }
        let limit = self.batch_rows as i64;
        let pg_rows = self.query(&table.select_sql(), &[&after, &limit]).await?;
        let mut rows = Self::decode(pg_rows, self.batch_bytes);
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let prefix = self.holes.prefix(after, &ids, Instant::now());
        if prefix.list_writers {
            let holders = self.writers(table).await?;
            self.holes.wait_for(holders);
        }
        rows.truncate(prefix.keep);
        Ok(Batch { table, rows })
    }

    /// The rows of `table` with these ids (those that exist), in id order.
    pub async fn read_ids(&mut self, table: EventTable, ids: &[i64]) -> Result<Batch, DbError> {
        let pg_rows = self.query(&table.select_ids_sql(), &[&ids]).await?;
        let rows = Self::decode(pg_rows, usize::MAX);
        Ok(Batch { table, rows })
    }

    /// The ids of `table` in `[from, to]`, in order.
    pub async fn ids_between(
        &mut self,
        table: EventTable,
        from: i64,
        to: i64,
    ) -> Result<Vec<i64>, DbError> {
        let sql = format!(
            "SELECT id::bigint FROM {} WHERE id >= $1::bigint AND id <= $2::bigint ORDER BY id",
            table.name()
        );
        let rows = self.query(&sql, &[&from, &to]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Per bucket of `width` ids up to `upto`: (rows, sum of ids).
    pub async fn digest(
        &mut self,
        table: EventTable,
        width: i64,
        upto: i64,
    ) -> Result<BTreeMap<i64, (i64, f64)>, DbError> {
        let rows = self
            .query(&digest_sql(table.name(), ""), &[&width, &upto])
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect())
    }

    /// Where the reader stands with holes, for `status`.
    pub fn holes(&self) -> HoleReport {
        self.holes.report()
    }

    /// The table's writers now (see [`WRITERS_SQL`]).
    async fn writers(&mut self, table: EventTable) -> Result<Vec<String>, DbError> {
        let rows = self.query(WRITERS_SQL, &[&table.name()]).await?;
        Ok(rows[0].get(0))
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, DbError> {
        let result = async {
            self.client().await.map_err(Err)?;
            let client = self.client.as_ref().expect("connected above");
            let statement = match self.statements.get(sql) {
                Some(statement) => statement.clone(),
                None => {
                    let statement = client.prepare(sql).await.map_err(Ok)?;
                    self.statements.insert(sql.to_owned(), statement.clone());
                    statement
                }
            };
            client.query(&statement, params).await.map_err(Ok)
        }
        .await;
        match result {
            Ok(rows) => Ok(rows),
            Err(Err(connect)) => Err(connect),
            Err(Ok(e)) => {
                if e.is_closed() {
                    self.client = None;
                }
                Err(self.target.query_error(crate::db::error_reason(&e)))
            }
        }
    }

    /// Takes rows, stopping once about `batch_bytes` are read (always at least one row).
    fn decode(pg_rows: Vec<tokio_postgres::Row>, batch_bytes: usize) -> Vec<SourceRow> {
        let mut rows = Vec::with_capacity(pg_rows.len());
        let mut bytes = 0;
        for pg_row in pg_rows {
            let row = SourceRow::new(pg_row);
            bytes += row.approx_bytes();
            rows.push(row);
            if bytes >= batch_bytes {
                break;
            }
        }
        rows
    }

    /// The highest id of each event table (0 when empty), in one query (see
    /// [`super::heads`]).
    pub async fn heads(&mut self) -> Result<BTreeMap<EventTable, i64>, DbError> {
        let heads: Vec<String> = EventTable::ALL
            .iter()
            .map(|t| format!("(SELECT coalesce(max(id), 0) FROM {t})::bigint"))
            .collect();
        let rows = self
            .query(&format!("SELECT {}", heads.join(", ")), &[])
            .await?;
        Ok(EventTable::ALL
            .iter()
            .enumerate()
            .map(|(at, &table)| (table, rows[0].get(at)))
            .collect())
    }
}
