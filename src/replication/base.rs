//! The merge-back's I/O: the base kept on the slave, the merged columns read from either side,
//! and the merged values written into the master.
//!
//! The base lives beside the fingerprints in the slave's `xivo_ha` schema (outside `public`,
//! so it never takes part in the schema comparison), written in the replication's slave
//! transaction from what that transaction just copied, so that it never lies after a failure:
//! - `xivo_ha.merge_base_table`: per table, the key and the columns recorded;
//! - `xivo_ha.merge_base`: per row, its key and the merged columns' values, as text (no index:
//!   it is written whole for a table at each copy of it, and read whole after a failover; the
//!   keys are the source table's primary key, unique already).

use std::collections::BTreeMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Transaction};

use super::merge::{Base, Resolved, RowWrite, Rows};
use super::tables::{Catalog, qualified, quote_ident, quote_literal};

/// Each table's recorded base: its key and columns (empty when the slave has none).
pub async fn recorded(
    client: &impl GenericClient,
) -> Result<BTreeMap<String, (Vec<String>, Vec<String>)>, tokio_postgres::Error> {
    let rows = super::fingerprint::bookkeeping(
        client,
        "xivo_ha.merge_base_table",
        "SELECT table_name, key_columns, columns FROM xivo_ha.merge_base_table",
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// The base of `table` as recorded with `key` and `columns`.
pub async fn read(
    client: &impl GenericClient,
    table: &str,
    key: Vec<String>,
    columns: Vec<String>,
) -> Result<Base, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT row_key, vals FROM xivo_ha.merge_base WHERE table_name = $1",
            &[&table],
        )
        .await?;
    Ok(Base {
        key,
        columns,
        rows: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
    })
}

/// `ARRAY[k1::text, ...], ARRAY[c1::text, ...]`: a row's key and merged columns as text.
fn select_list(table: &Resolved) -> String {
    let array = |columns: &[String]| {
        let parts: Vec<String> = columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect();
        format!("ARRAY[{}]::text[]", parts.join(", "))
    };
    format!("{}, {}", array(&table.key), array(&table.columns))
}

/// The merged columns of every row of `table`, as this side holds them now.
pub async fn values(
    client: &impl GenericClient,
    table: &Resolved,
) -> Result<Rows, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT {} FROM {}",
                select_list(table),
                qualified(&table.table)
            ),
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Writes the merged values into the master, one UPDATE per row, each only if the master still
/// holds the base for every value it changes (a value changed on the master since it was read
/// is left alone). Returns the writes that found their row as expected, and the others.
pub async fn write(
    master: &Transaction<'_>,
    catalog: &Catalog,
    table: &Resolved,
    writes: Vec<RowWrite>,
) -> Result<(Vec<RowWrite>, Vec<RowWrite>), tokio_postgres::Error> {
    let type_of = |column: &str| {
        catalog
            .column_type(&table.table, column)
            .expect("resolved columns exist")
    };
    let mut done = Vec::new();
    let mut missed = Vec::new();
    if !writes.is_empty() {
        // Rows held by a long transaction on the master fail the run instead of hanging it.
        master
            .batch_execute("SET LOCAL lock_timeout = '60s'")
            .await?;
    }
    for write in writes {
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let mut sets = Vec::new();
        let mut checks = Vec::new();
        for (column, value, _) in &write.values {
            params.push(value);
            sets.push(format!(
                "{} = CAST(${}::text AS {})",
                quote_ident(column),
                params.len(),
                type_of(column)
            ));
        }
        for (column, _, was) in &write.values {
            params.push(was);
            checks.push(format!(
                "{} IS NOT DISTINCT FROM CAST(${}::text AS {})",
                quote_ident(column),
                params.len(),
                type_of(column)
            ));
        }
        for (column, value) in table.key.iter().zip(&write.key) {
            params.push(value);
            checks.push(format!(
                "{} = CAST(${}::text AS {})",
                quote_ident(column),
                params.len(),
                type_of(column)
            ));
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            qualified(&table.table),
            sets.join(", "),
            checks.join(" AND ")
        );
        let updated = master.execute(&sql, &params).await?;
        if updated == 1 {
            done.push(write);
        } else {
            missed.push(write);
        }
    }
    Ok((done, missed))
}

/// Records, in the slave's transaction, the base of each of `tables` from what the slave now
/// holds, and forgets the base of every other table (no longer merged, or its base stale).
pub async fn record(
    slave: &Transaction<'_>,
    tables: &[&Resolved],
    merged: &[Resolved],
) -> Result<(), tokio_postgres::Error> {
    slave
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS xivo_ha;
             CREATE TABLE IF NOT EXISTS xivo_ha.merge_base_table (
                 table_name text PRIMARY KEY,
                 key_columns text[] NOT NULL,
                 columns text[] NOT NULL,
                 recorded_at timestamptz NOT NULL DEFAULT now()
             );
             CREATE TABLE IF NOT EXISTS xivo_ha.merge_base (
                 table_name text NOT NULL,
                 row_key text[] NOT NULL,
                 vals text[] NOT NULL
             );
             COMMENT ON TABLE xivo_ha.merge_base IS
                 'xivo-ha db-replication: the merged-back columns as the last replication wrote them here; do not edit';",
        )
        .await?;
    let keep: Vec<&str> = merged
        .iter()
        .filter(|m| !tables.iter().any(|t| t.table == m.table))
        .map(|m| m.table.as_str())
        .collect();
    slave
        .execute(
            "DELETE FROM xivo_ha.merge_base_table WHERE NOT (table_name = ANY($1))",
            &[&keep],
        )
        .await?;
    slave
        .execute(
            "DELETE FROM xivo_ha.merge_base WHERE NOT (table_name = ANY($1))",
            &[&keep],
        )
        .await?;
    for table in tables {
        slave
            .execute(
                "INSERT INTO xivo_ha.merge_base_table (table_name, key_columns, columns)
                 VALUES ($1, $2, $3)",
                &[&table.table, &table.key, &table.columns],
            )
            .await?;
        slave
            .batch_execute(&format!(
                "INSERT INTO xivo_ha.merge_base (table_name, row_key, vals) SELECT {}, {} FROM {}",
                quote_literal(&table.table),
                select_list(table),
                qualified(&table.table)
            ))
            .await?;
    }
    Ok(())
}
