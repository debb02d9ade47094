//! The reporting database's layout, which this project defines (XiVO CC's own DB Replic is not
//! public): one table per event table, named like XiVO's, with the origin node in front of the
//! id, and one checkpoint table. Derived from [`EventTable::columns`], so source and target
//! cannot drift apart.
//!
//! ```text
//! cel        (origin text, id bigint, eventtype text, eventtime timestamp, ..., PRIMARY KEY (origin, id))
//! queue_log  (origin text, id bigint, time text, callid text, ..., PRIMARY KEY (origin, id))
//! dbreplic_checkpoint (origin text, table_name text, last_id bigint, updated_at timestamptz,
//!                      PRIMARY KEY (origin, table_name))
//! ```

use crate::dbreplic::source::{EventTable, Kind};
use tokio_postgres::types::Type;

pub const CHECKPOINT_TABLE: &str = "dbreplic_checkpoint";

fn pg_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "bigint",
        Kind::Text | Kind::DateText => "text",
        Kind::Timestamp => "timestamp",
    }
}

/// The wire types of the binary COPY, in [`copy_columns`] order.
pub fn copy_types(table: EventTable) -> Vec<Type> {
    let mut types = vec![Type::TEXT, Type::INT8];
    types.extend(table.columns().iter().map(|(_, kind)| match kind {
        Kind::Int => Type::INT8,
        Kind::Text | Kind::DateText => Type::TEXT,
        Kind::Timestamp => Type::TIMESTAMP,
    }));
    types
}

/// `origin, id, <columns>`, quoted.
pub fn copy_columns(table: EventTable) -> String {
    let mut names = vec!["origin".to_owned(), "id".to_owned()];
    names.extend(table.columns().iter().map(|(n, _)| format!("\"{n}\"")));
    names.join(", ")
}

pub fn create_table_sql(table: EventTable) -> String {
    let columns: Vec<String> = table
        .columns()
        .iter()
        .map(|(name, kind)| format!("\"{name}\" {}", pg_type(*kind)))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} (origin text NOT NULL, id bigint NOT NULL, {}, PRIMARY KEY (origin, id))",
        table.name(),
        columns.join(", ")
    )
}

pub fn create_checkpoint_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (origin text NOT NULL, table_name text NOT NULL, \
         last_id bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (origin, table_name))"
    )
}

pub fn staging_table(table: EventTable) -> String {
    format!("dbreplic_staging_{}", table.name())
}

/// A temporary table per connection, emptied by every commit.
pub fn create_staging_sql(table: EventTable) -> String {
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        staging_table(table),
        table.name()
    )
}

pub fn merge_sql(table: EventTable) -> String {
    let columns = copy_columns(table);
    format!(
        "INSERT INTO {} ({columns}) SELECT {columns} FROM {} ON CONFLICT (origin, id) DO NOTHING",
        table.name(),
        staging_table(table)
    )
}

pub fn checkpoint_upsert_sql() -> String {
    // GREATEST: a replayed older batch never moves the checkpoint back.
    format!(
        "INSERT INTO {CHECKPOINT_TABLE} (origin, table_name, last_id, updated_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (origin, table_name) DO UPDATE SET \
         last_id = GREATEST({CHECKPOINT_TABLE}.last_id, EXCLUDED.last_id), updated_at = now()"
    )
}
