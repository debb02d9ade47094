//! XiVO CC's configuration tables, refreshed in the reporting database every 5 minutes when
//! the node is not an HA slave (`IS_HA_SLAVE=false`). In HA mode this module never runs: the
//! master feeds them, and a slave's copy of the configuration is the master's anyway.
//!
//! Each refresh is one consistent snapshot of the source (a REPEATABLE READ read-only
//! transaction) copied into one transaction on the reporting side: every table is emptied and
//! refilled with binary COPY, so XiVO CC's reports never see a half-refreshed configuration.
//! The reporting copies have the source's columns and types (user-defined types, such as
//! XiVO's enums, become text); a table whose columns changed (a XiVO upgrade) is recreated.

use futures_util::{SinkExt, pin_mut};
use tokio_postgres::{Client, IsolationLevel};

use crate::db::{DbTarget, error_reason};

/// The configuration tables DB Replic copies (XiVO CC's reports join the events with them).
pub const CONFIG_TABLES: &[&str] = &[
    "agentfeatures",
    "dialaction",
    "extensions",
    "linefeatures",
    "queuefeatures",
    "queuemember",
    "userfeatures",
];

#[derive(Debug, thiserror::Error)]
#[error("configuration tables: {what}: {reason}")]
pub struct ConfigTablesError {
    pub what: String,
    pub reason: String,
}

fn failed(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ConfigTablesError {
    let what = what.into();
    move |e| ConfigTablesError {
        what,
        reason: error_reason(&e),
    }
}

/// Columns of `table` in the source: (name, SQL type for the copy).
async fn source_columns(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<Vec<(String, String)>, ConfigTablesError> {
    let rows = client
        .query(
            "SELECT a.attname::text, \
                    CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace \
                         THEN format_type(a.atttypid, a.atttypmod) ELSE 'text' END \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&table],
        )
        .await
        .map_err(failed(format!(
            "read the columns of {table} in the XiVO database"
        )))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Copies every table of [`CONFIG_TABLES`]; returns the number of rows copied.
pub async fn refresh(source: &DbTarget, reporting: &DbTarget) -> Result<u64, ConfigTablesError> {
    let connect = |target: &DbTarget| {
        let target = target.clone();
        async move {
            target.connect().await.map_err(|e| ConfigTablesError {
                what: format!("connect to the {} database", target.purpose),
                reason: e.to_string(),
            })
        }
    };
    let mut source_client: Client = connect(source).await?;
    let mut target_client: Client = connect(reporting).await?;
    let source_tx = source_client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(failed("begin on the XiVO database"))?;
    let target_tx = target_client
        .transaction()
        .await
        .map_err(failed("begin on the reporting database"))?;
    let mut total = 0;
    for table in CONFIG_TABLES {
        let columns = source_columns(&source_tx, table).await?;
        if columns.is_empty() {
            tracing::warn!(
                "configuration table {table} is missing from the XiVO database: skipped"
            );
            continue;
        }
        let existing = source_columns(&target_tx, table).await?;
        if existing != columns {
            let definition: Vec<String> = columns
                .iter()
                .map(|(name, ty)| format!("\"{name}\" {ty}"))
                .collect();
            target_tx
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS \"{table}\"; CREATE TABLE \"{table}\" ({})",
                    definition.join(", ")
                ))
                .await
                .map_err(failed(format!("create {table} in the reporting database")))?;
        }
        target_tx
            .batch_execute(&format!("TRUNCATE \"{table}\""))
            .await
            .map_err(failed(format!("empty {table} in the reporting database")))?;
        let names: Vec<String> = columns.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let names = names.join(", ");
        let out = source_tx
            .copy_out(&format!(
                "COPY (SELECT {names} FROM \"{table}\") TO STDOUT (FORMAT binary)"
            ))
            .await
            .map_err(failed(format!("read {table}")))?;
        let sink = target_tx
            .copy_in(&format!(
                "COPY \"{table}\" ({names}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(failed(format!("write {table}")))?;
        pin_mut!(out);
        pin_mut!(sink);
        sink.send_all(&mut out)
            .await
            .map_err(failed(format!("copy {table}")))?;
        total += sink
            .as_mut()
            .finish()
            .await
            .map_err(failed(format!("copy {table}")))?;
    }
    target_tx
        .commit()
        .await
        .map_err(failed("commit on the reporting database"))?;
    Ok(total)
}
