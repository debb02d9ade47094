//! The reconciliation pass: finds and delivers the rows below a sink's checkpoint that the
//! sink lacks, the ones the hole rule of [`super::holes`] cannot see coming (a row inserted
//! with an explicit id lower than ids already delivered, an id taken by `nextval` long before
//! its transaction's first write, a sequence with `CACHE` > 1).
//!
//! Cheap on large tables: the source and the sink each give, per bucket of [`BUCKET`] ids up
//! to the checkpoint, the number of rows and the sum of their ids (one grouped scan of the
//! primary key on each side; for Elasticsearch one `histogram` aggregation with a `sum`).
//! Only a bucket where the source has rows and the two differ is looked at closely: its ids
//! on the source, the anti-join against the sink ([`Sink::missing`]: `NOT EXISTS` in
//! PostgreSQL, `_mget` in Elasticsearch, which sees documents not yet refreshed), and the
//! missing rows are read and written with [`Sink::write_below`], the same idempotent write as
//! delivery, checkpoint unchanged. A bucket where the sink holds more than the source (XiVO
//! purged old rows) costs an anti-join and delivers nothing.
//!
//! The pass runs in the (table, sink) task between two deliveries, so it never races the
//! task's own writes; a row that commits during the pass is found by the next one.

use super::sink::{Digest, Report, Sink, SinkError};
use super::source::{EventTable, Source};

/// Ids per bucket: small enough that a differing bucket's id lists are a few tens of KB.
pub const BUCKET: i64 = 10_000;

/// Rows written per request when a bucket lacks many.
const CHUNK: usize = 1000;

/// The buckets to look at: where the source has rows and the sink's digest differs.
pub fn differing(source: &Digest, sink: &Digest) -> Vec<i64> {
    source
        .iter()
        .filter(|(bucket, digest)| sink.get(bucket) != Some(digest))
        .map(|(bucket, _)| *bucket)
        .collect()
}

/// One pass over the ids up to `upto` (the sink's checkpoint); returns the rows recovered.
pub async fn pass<S: Sink>(
    sink: &mut S,
    source: &mut Source,
    table: EventTable,
    upto: i64,
    report: Report<'_>,
) -> Result<u64, SinkError> {
    if upto <= 0 {
        return Ok(0);
    }
    let on_source = source
        .digest(table, BUCKET, upto)
        .await
        .map_err(super::source_error)?;
    let on_sink = sink.digest(table, BUCKET, upto).await?;
    let mut recovered = 0;
    for bucket in differing(&on_source, &on_sink) {
        let from = bucket * BUCKET;
        let to = (from + BUCKET - 1).min(upto);
        let ids = source
            .ids_between(table, from, to)
            .await
            .map_err(super::source_error)?;
        let missing = sink.missing(table, &ids).await?;
        for chunk in missing.chunks(CHUNK) {
            let batch = source
                .read_ids(table, chunk)
                .await
                .map_err(super::source_error)?;
            sink.write_below(&batch, report).await?;
            recovered += batch.rows.len() as u64;
        }
    }
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_buckets_with_source_rows_that_differ_are_looked_at() {
        let source: Digest = [(0, (3, 6.0)), (1, (2, 20001.0)), (2, (1, 20000.0))].into();
        // Bucket 1: same count, another id (one missing, one purged on the source); bucket 2
        // missing; bucket 5 only on the sink (purged on the source): nothing to deliver.
        let sink: Digest = [(0, (3, 6.0)), (1, (2, 20003.0)), (5, (9, 1.0))].into();
        assert_eq!(differing(&source, &sink), vec![1, 2]);
        assert!(differing(&source, &source).is_empty());
    }
}
