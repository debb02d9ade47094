//! The data transfer inside the slave's transaction: which tables must be emptied together
//! (TRUNCATE's foreign-key rule), emptying them, streaming each table from the master's
//! `COPY … TO STDOUT (FORMAT binary)` into the slave's `COPY … FROM STDIN (FORMAT binary)`, and
//! setting the slave's sequences to the master's values transactionally.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{GenericClient, Transaction};

use super::tables::{Catalog, column_list, is_excluded, qualified};

/// The tables to copy, closed under "is referenced by": PostgreSQL refuses to TRUNCATE a table
/// that another table references unless both are truncated in the same command, even under
/// `session_replication_role = replica`. So a changed `userfeatures` drags `user_line` (which
/// references it) along. Tables referenced by an excluded table cannot be truncated (the
/// excluded table must keep its rows): they are emptied with DELETE, which replica role lets
/// through without firing the foreign-key triggers.
pub struct Plan {
    /// Every table to copy, sorted.
    pub copy: Vec<String>,
    /// The subset emptied with one TRUNCATE.
    pub truncate: Vec<String>,
    /// The subset emptied with DELETE.
    pub delete: Vec<String>,
}

impl Plan {
    pub fn new(catalog: &Catalog, changed: &BTreeSet<String>) -> Plan {
        let mut copy: BTreeSet<String> = changed.clone();
        loop {
            let referencing: Vec<String> = catalog
                .foreign_keys
                .iter()
                .filter(|(from, to)| {
                    copy.contains(to) && !copy.contains(from) && !is_excluded(from)
                })
                .map(|(from, _)| from.clone())
                .collect();
            if referencing.is_empty() {
                break;
            }
            copy.extend(referencing);
        }
        // A table referenced by a table that is not truncated with it (an excluded one, or one
        // emptied with DELETE) cannot be truncated either.
        let mut delete: BTreeSet<String> = BTreeSet::new();
        loop {
            let more: Vec<String> = copy
                .iter()
                .filter(|table| !delete.contains(*table))
                .filter(|table| {
                    catalog.foreign_keys.iter().any(|(from, to)| {
                        to == *table && (is_excluded(from) || delete.contains(from))
                    })
                })
                .cloned()
                .collect();
            if more.is_empty() {
                break;
            }
            delete.extend(more);
        }
        Plan {
            truncate: copy.difference(&delete).cloned().collect(),
            delete: delete.into_iter().collect(),
            copy: copy.into_iter().collect(),
        }
    }

    /// Empties the tables of the plan on the slave.
    pub async fn empty(&self, slave: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        if !self.truncate.is_empty() {
            let names: Vec<String> = self.truncate.iter().map(|t| qualified(t)).collect();
            slave
                .batch_execute(&format!("TRUNCATE ONLY {}", names.join(", ")))
                .await?;
        }
        for table in &self.delete {
            slave
                .batch_execute(&format!("DELETE FROM ONLY {}", qualified(table)))
                .await?;
        }
        Ok(())
    }
}

/// What one table's copy moved.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Which side failed during a copy, so that the message can say so.
#[derive(Debug)]
pub enum CopyFailure {
    Master(tokio_postgres::Error),
    Slave(tokio_postgres::Error),
}

/// Data is handed to the slave in chunks of about this size: the master sends one message per
/// row, and batching them keeps the per-message cost out of the transfer.
const CHUNK: usize = 256 * 1024;

/// Streams one table from the master's snapshot into the (emptied) slave table. The two sides
/// run concurrently: the master keeps sending while the slave ingests the previous chunk.
/// `progress` is called with the running (rows unknown until the end, so bytes only) total.
pub async fn copy_table(
    master: &Transaction<'_>,
    slave: &Transaction<'_>,
    catalog: &Catalog,
    table: &str,
    mut progress: impl FnMut(u64),
) -> Result<TableCopy, CopyFailure> {
    let started = std::time::Instant::now();
    // A table whose columns were all dropped still has rows: COPY it without a column list.
    let columns = match catalog.tables[table].as_slice() {
        [] => String::new(),
        columns => column_list(columns),
    };
    let source = master
        .copy_out(&format!(
            "COPY {} {columns} TO STDOUT (FORMAT binary)",
            qualified(table)
        ))
        .await
        .map_err(CopyFailure::Master)?;
    let sink = slave
        .copy_in::<_, Bytes>(&format!(
            "COPY {} {columns} FROM STDIN (FORMAT binary)",
            qualified(table)
        ))
        .await
        .map_err(CopyFailure::Slave)?;

    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(8);
    let read = async move {
        let mut source = std::pin::pin!(source);
        let mut buffer = BytesMut::with_capacity(CHUNK);
        let mut total = 0u64;
        while let Some(chunk) = source.next().await {
            let chunk = chunk.map_err(CopyFailure::Master)?;
            total += chunk.len() as u64;
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= CHUNK {
                progress(total);
                // A closed channel means the writer failed: its error is the one to report.
                if sender.send(buffer.split().freeze()).await.is_err() {
                    return Ok(total);
                }
            }
        }
        if !buffer.is_empty() {
            let _ = sender.send(buffer.freeze()).await;
        }
        progress(total);
        Ok::<u64, CopyFailure>(total)
    };
    let write = async move {
        let mut sink = std::pin::pin!(sink);
        while let Some(chunk) = receiver.recv().await {
            sink.send(chunk).await.map_err(CopyFailure::Slave)?;
        }
        sink.as_mut().finish().await.map_err(CopyFailure::Slave)
    };
    let (read, write) = tokio::join!(read, write);
    // A master failure leaves the slave's COPY incomplete: report the master's error first.
    let bytes = read?;
    let rows = write?;
    Ok(TableCopy {
        table: table.to_owned(),
        rows,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `(last_value, is_called)` of each named sequence.
pub async fn sequence_values(
    client: &impl GenericClient,
    sequences: &[&str],
) -> Result<BTreeMap<String, (i64, bool)>, tokio_postgres::Error> {
    if sequences.is_empty() {
        return Ok(BTreeMap::new());
    }
    let parts: Vec<String> = sequences
        .iter()
        .map(|s| {
            format!(
                "SELECT {}::text, last_value, is_called FROM {}",
                super::tables::quote_literal(s),
                qualified(s)
            )
        })
        .collect();
    let rows = client.query_typed(&parts.join(" UNION ALL "), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Sets slave sequences to the master's state, in one round trip. `setval` alone is not
/// transactional (a rollback would keep the new value); `ALTER SEQUENCE … RESTART` first gives
/// each sequence new storage inside this transaction, so the `setval` that follows is undone
/// with it on failure.
pub async fn set_sequences(
    slave: &Transaction<'_>,
    values: &[(&str, (i64, bool))],
) -> Result<(), tokio_postgres::Error> {
    if values.is_empty() {
        return Ok(());
    }
    let script: String = values
        .iter()
        .map(|(sequence, (last_value, is_called))| {
            format!(
                "ALTER SEQUENCE {name} RESTART; SELECT setval({literal}, {last_value}, {is_called});\n",
                name = qualified(sequence),
                literal = super::tables::quote_literal(&qualified(sequence)),
            )
        })
        .collect();
    slave.batch_execute(&script).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referencing_tables_are_copied_together_and_excluded_ones_force_delete() {
        let mut catalog = Catalog::default();
        for (from, to) in [
            ("user_line", "userfeatures"),
            ("user_line", "linefeatures"),
            ("userfeatures", "voicemail"),
            ("stat_agent", "agentfeatures"),
            ("queuemember", "queuefeatures"),
            ("queuefeatures", "agentfeatures"),
        ] {
            catalog.foreign_keys.insert((from.into(), to.into()));
        }
        let changed: BTreeSet<String> = ["voicemail".to_string()].into();
        let plan = Plan::new(&catalog, &changed);
        assert_eq!(plan.copy, vec!["user_line", "userfeatures", "voicemail"]);
        assert_eq!(plan.truncate, plan.copy);
        assert!(plan.delete.is_empty());

        let changed: BTreeSet<String> = ["agentfeatures".to_string()].into();
        let plan = Plan::new(&catalog, &changed);
        assert_eq!(
            plan.copy,
            vec!["agentfeatures", "queuefeatures", "queuemember"]
        );
        assert_eq!(plan.delete, vec!["agentfeatures"]);
        assert_eq!(plan.truncate, vec!["queuefeatures", "queuemember"]);

        // Deleting a referencing table forces DELETE on the tables it references.
        catalog
            .foreign_keys
            .insert(("stat_queue".into(), "queuemember".into()));
        let plan = Plan::new(&catalog, &["queuemember".to_string()].into());
        assert_eq!(plan.copy, vec!["queuemember"]);
        let plan = Plan::new(&catalog, &["queuefeatures".to_string()].into());
        assert_eq!(plan.delete, vec!["queuefeatures", "queuemember"]);
    }
}
