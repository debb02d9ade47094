//! Incremental replication: which tables need copying.
//!
//! - On the master, each table's fingerprint identifies its row versions: the row count and the
//!   sum of a 64-bit hash of every row's `xmin` (the transaction that wrote it), computed
//!   server-side in the snapshot that is copied. Any INSERT, UPDATE or DELETE changes it (new
//!   row versions carry a new transaction id, deletions lower the count or replace ids), and it
//!   costs a sequential scan without turning any column into text: a third of the price of
//!   hashing the rows' content, which is what keeps a run with no change cheap. The price is a
//!   spurious copy when rows are rewritten with the same content (or the master is restored
//!   from a dump): safe, only slower once.
//! - On the slave, the bookkeeping table `xivo_ha.replication_fingerprint` (outside `public`, so
//!   it never takes part in the schema comparison) records, per table, the master fingerprint
//!   of the data it holds and the id of the slave transaction that wrote it; it is written in the
//!   same transaction as the data, so it never lies after a failure.
//! - A table is skipped only when the master fingerprint equals the recorded one AND the slave
//!   rows are still the ones that transaction wrote (same count, every row's `xmin` equal to the
//!   recorded transaction id): a slave that took over and changed its own configuration (a user
//!   setting a forward while the master was down) gets the master's version back, as with XiVO,
//!   after the merge-back of its user statuses ([`super::merge`]); the tables it changed, and
//!   by how many rows ([`SlaveSide`]), are reported before they are overwritten.

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

use super::tables::{qualified, quote_literal};

/// Fingerprints of the master's tables, by name.
pub async fn master_fingerprints(
    client: &impl GenericClient,
    tables: &[&str],
) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    // One round trip for all tables. `age(xmin) - age('3')` is `3 - xmin` modulo 2^32: a
    // function of the row's transaction id alone (the reference that `age` subtracts from is
    // fixed for the transaction), obtained without turning `xmin` into text, which would cost
    // twice as much. Rows frozen before PostgreSQL 9.4 (xmin 2) make the sum vary from run to
    // run: such a table is then always copied, which is slow but never wrong.
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                "SELECT {}::text, count(*)::text || ':' || coalesce(sum(hashint8extended(
                     (age(xmin)::bigint - z.a0 + 4294967296) % 4294967296, 0)), 0)::text
                 FROM {}, (SELECT age('3'::xid)::bigint AS a0) AS z",
                quote_literal(t),
                qualified(t)
            )
        })
        .collect();
    let rows = client.query_typed(&parts.join(" UNION ALL "), &[]).await?;
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

/// The rows `sql` reads from the bookkeeping table `table` (`xivo_ha.…`) of the slave; none
/// when the table does not exist (the slave never received a replication from xivo-ha).
pub async fn bookkeeping(
    client: &impl GenericClient,
    table: &str,
    sql: &str,
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let exists: bool = client
        .query_typed(
            &format!("SELECT to_regclass({}) IS NOT NULL", quote_literal(table)),
            &[],
        )
        .await?[0]
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    client.query_typed(sql, &[]).await
}

/// The slave's bookkeeping; empty when it never received a replication from xivo-ha.
pub async fn recorded(
    client: &impl GenericClient,
) -> Result<BTreeMap<String, Recorded>, tokio_postgres::Error> {
    let rows = bookkeeping(
        client,
        "xivo_ha.replication_fingerprint",
        "SELECT table_name, fingerprint, row_count, slave_xid FROM xivo_ha.replication_fingerprint",
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

/// What the slave holds of a table it recorded: its rows now, and how many of them are still
/// the ones the recorded transaction wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlaveSide {
    pub rows: i64,
    pub as_written: i64,
}

impl SlaveSide {
    /// The slave rows are exactly the ones the recorded transaction wrote.
    pub fn untouched(&self, recorded: &Recorded) -> bool {
        self.rows == recorded.rows && self.as_written == self.rows
    }

    /// How many rows the slave changed since: those it wrote (inserted or updated) and those
    /// gone (deleted or updated); an update is both, so the larger of the two (at least that
    /// many rows changed).
    pub fn rows_changed(&self, recorded: &Recorded) -> u64 {
        let written = self.rows - self.as_written;
        let gone = recorded.rows - self.as_written;
        written.max(gone).max(0) as u64
    }
}

/// For each of `candidates` (tables the slave recorded), what it holds now, in one round trip.
pub async fn slave_side(
    client: &impl GenericClient,
    candidates: &[(&str, &Recorded)],
) -> Result<BTreeMap<String, SlaveSide>, tokio_postgres::Error> {
    if candidates.is_empty() {
        return Ok(BTreeMap::new());
    }
    let parts: Vec<String> = candidates
        .iter()
        .map(|(t, rec)| {
            format!(
                "SELECT {}::text, count(*), count(*) FILTER (WHERE xmin = '{}'::xid) FROM {}",
                quote_literal(t),
                rec.xid,
                qualified(t)
            )
        })
        .collect();
    let rows = client.query_typed(&parts.join(" UNION ALL "), &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                SlaveSide {
                    rows: r.get(1),
                    as_written: r.get(2),
                },
            )
        })
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
    // The 32-bit xid that `xmin` shows for the rows this transaction wrote; one statement for
    // all tables.
    let tables: Vec<&str> = copied.iter().map(|(t, _, _)| t.as_str()).collect();
    let fingerprints: Vec<&str> = copied.iter().map(|(_, f, _)| f.as_str()).collect();
    let rows: Vec<i64> = copied.iter().map(|(_, _, r)| *r).collect();
    client
        .execute(
            "INSERT INTO xivo_ha.replication_fingerprint (table_name, fingerprint, row_count, slave_xid)
             SELECT t, f, r, txid_current() % 4294967296
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(t, f, r)
             ON CONFLICT (table_name) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                 row_count = EXCLUDED.row_count, slave_xid = EXCLUDED.slave_xid, copied_at = now()",
            &[&tables, &fingerprints, &rows],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_changed_counts_an_update_once() {
        let recorded = Recorded {
            fingerprint: String::new(),
            rows: 10,
            xid: 7,
        };
        let side = |rows, as_written| SlaveSide { rows, as_written };
        assert!(side(10, 10).untouched(&recorded));
        assert_eq!(side(10, 10).rows_changed(&recorded), 0);
        // Two rows updated.
        assert!(!side(10, 8).untouched(&recorded));
        assert_eq!(side(10, 8).rows_changed(&recorded), 2);
        // Three inserted; one deleted.
        assert_eq!(side(13, 10).rows_changed(&recorded), 3);
        assert_eq!(side(9, 9).rows_changed(&recorded), 1);
    }
}
