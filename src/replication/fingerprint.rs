//! Incremental replication: which tables need copying.
//!
//! - On the master, each table's fingerprint is its row count and the sum of a 64-bit hash of
//!   every row's text form, computed server-side in the snapshot that is copied. A sum needs no
//!   sort and constant memory, so fingerprinting costs one sequential scan per table.
//! - On the slave, the bookkeeping table `xivo_ha.replication_fingerprint` (outside `public`, so
//!   it never takes part in the schema comparison) records, per table, the master fingerprint
//!   of the data it holds and the id of the slave transaction that wrote it; it is written in the
//!   same transaction as the data, so it never lies after a failure.
//! - A table is skipped only when the master fingerprint equals the recorded one AND the slave
//!   rows are still the ones that transaction wrote (same count, every row's `xmin` equal to the
//!   recorded transaction id): a slave that took over and changed its own configuration (a user
//!   setting a forward while the master was down) gets the master's version back, as with XiVO.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

use super::tables::{qualified, quote_literal};

/// Session settings that fix the text form of every type, so that a row's fingerprint depends on
/// its content only (not on the DateStyle or time zone of whoever connects).
pub const DETERMINISTIC_OUTPUT: &str = "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';
     SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

/// Fingerprints of the master's tables, by name.
pub async fn master_fingerprints(
    client: &impl GenericClient,
    tables: &[&str],
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    // One round trip for all tables.
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                "SELECT {}::text, count(*)::text || ':' || coalesce(sum(hashtextextended(r::text, 0)::numeric), 0)::text
                 FROM {} AS r",
                quote_literal(t),
                qualified(t)
            )
        })
        .collect();
    let rows = client.query(&parts.join(" UNION ALL "), &[]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// What the slave recorded about one table.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub fingerprint: String,
    pub rows: i64,
    /// The slave transaction (32-bit xid) that wrote the rows.
    pub xid: i64,
}

/// The slave's bookkeeping; empty when it never received a replication from xivo-ha.
pub async fn recorded(
    client: &impl GenericClient,
) -> Result<BTreeMap<String, Recorded>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('xivo_ha.replication_fingerprint') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows = client
        .query(
            "SELECT table_name, fingerprint, row_count, slave_xid FROM xivo_ha.replication_fingerprint",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                Recorded {
                    fingerprint: r.get(1),
                    rows: r.get(2),
                    xid: r.get(3),
                },
            )
        })
        .collect())
}

/// Among `candidates` (tables whose master fingerprint matches the recorded one), those whose
/// slave rows are still exactly the ones the recorded transaction wrote.
pub async fn untouched_on_slave(
    client: &impl GenericClient,
    candidates: &[(&str, &Recorded)],
) -> Result<Vec<String>, tokio_postgres::Error> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<String> = candidates
        .iter()
        .map(|(t, rec)| {
            format!(
                "SELECT {}::text, count(*) = {} AND bool_and(xmin::text = '{}') IS NOT FALSE
                 FROM {}",
                quote_literal(t),
                rec.rows,
                rec.xid,
                qualified(t)
            )
        })
        .collect();
    let rows = client.query(&parts.join(" UNION ALL "), &[]).await?;
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect())
}

/// Records, in the slave's transaction, what it now holds for the tables just copied (and
/// forgets tables that no longer exist).
pub async fn record(
    client: &impl GenericClient,
    copied: &[(String, String, i64)],
    known_tables: &[&str],
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS xivo_ha;
             CREATE TABLE IF NOT EXISTS xivo_ha.replication_fingerprint (
                 table_name text PRIMARY KEY,
                 fingerprint text NOT NULL,
                 row_count bigint NOT NULL,
                 slave_xid bigint NOT NULL,
                 copied_at timestamptz NOT NULL DEFAULT now()
             );
             COMMENT ON TABLE xivo_ha.replication_fingerprint IS
                 'xivo-ha db-replication: master fingerprint of each public table held here; do not edit';",
        )
        .await?;
    let known: Vec<String> = known_tables.iter().map(|t| t.to_string()).collect();
    client
        .execute(
            "DELETE FROM xivo_ha.replication_fingerprint WHERE NOT (table_name = ANY($1))",
            &[&known],
        )
        .await?;
    // The 32-bit xid that `xmin` shows for the rows this transaction wrote.
    let statement = client
        .prepare(
            "INSERT INTO xivo_ha.replication_fingerprint (table_name, fingerprint, row_count, slave_xid)
             VALUES ($1, $2, $3, txid_current() % 4294967296)
             ON CONFLICT (table_name) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                 row_count = EXCLUDED.row_count, slave_xid = EXCLUDED.slave_xid, copied_at = now()",
        )
        .await?;
    for (table, fingerprint, rows) in copied {
        client
            .execute(&statement, &[table, fingerprint, rows])
            .await?;
    }
    Ok(())
}
