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
//! dbreplic_origin_claim (origin text PRIMARY KEY, node_id text, hostname text,
//!                        claimed_at timestamptz)   -- which node owns an origin (dbreplic::claim)
//! ```

use crate::dbreplic::source::{EventTable, Kind};

pub const CHECKPOINT_TABLE: &str = "dbreplic_checkpoint";
pub const CLAIM_TABLE: &str = "dbreplic_origin_claim";

fn pg_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Int => "bigint",
        Kind::Text | Kind::DateText => "text",
        Kind::Timestamp => "timestamp",
    }
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

pub fn create_claim_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {CLAIM_TABLE} (origin text PRIMARY KEY, node_id text NOT NULL, \
         hostname text NOT NULL, claimed_at timestamptz NOT NULL DEFAULT now())"
    )
}

/// `$1` origin, `$2` node id, `$3` host name: the first claim wins, later ones change nothing.
pub fn claim_insert_sql() -> String {
    format!(
        "INSERT INTO {CLAIM_TABLE} (origin, node_id, hostname) VALUES ($1, $2, $3) \
         ON CONFLICT (origin) DO NOTHING"
    )
}

/// `--take-over-origin`: the origin is this node's from now on.
pub fn claim_take_over_sql() -> String {
    format!(
        "INSERT INTO {CLAIM_TABLE} (origin, node_id, hostname) VALUES ($1, $2, $3) \
         ON CONFLICT (origin) DO UPDATE SET node_id = EXCLUDED.node_id, \
         hostname = EXCLUDED.hostname, claimed_at = now()"
    )
}

pub fn claim_select_sql() -> String {
    format!("SELECT node_id, hostname, claimed_at FROM {CLAIM_TABLE} WHERE origin = $1")
}
