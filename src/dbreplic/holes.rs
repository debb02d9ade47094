//! The decision of when a hole in the ids may be passed (no I/O: [`super::source`] runs the
//! queries and feeds the answers in).
//!
//! # Why holes appear, and which transaction can still fill one
//! `cel` and `queue_log` take their ids from a sequence (`serial`, cache 1), so a transaction
//! that took id 10 may commit after the one that took id 11: a reader that moved its checkpoint
//! to 11 would never see 10. A hole is either *pending* (the row is in a transaction still
//! open), or *permanent* (a rolled-back insert, sequence values lost in a crash, a row deleted
//! before it was read).
//!
//! The facts PostgreSQL gives us, for a hole seen by a read (snapshot S) below the highest id M
//! that read returned:
//! - the missing id was taken by `nextval` before M was (the sequence only goes up), and M's
//!   transaction committed before S, so the missing id was taken before S;
//! - an `INSERT INTO cel` takes `RowExclusiveLock` on `cel` when the statement starts, before
//!   the column defaults (the `nextval`) are evaluated, and keeps it until the transaction
//!   ends (commit, rollback, or the end of a prepared transaction), and `pg_locks` lists it
//!   (fast-path locks included);
//! - so the transaction that holds a missing id still open is among the holders of such a lock
//!   on the table at any moment after S. Every transaction that takes the lock later takes
//!   later ids.
//!
//! Hence the rule: when a read shows a hole, the set of transactions then holding a write lock
//! on the table (by virtual transaction id, never reused soon) is remembered, with the highest
//! id that read looked at (`through`). Delivery stops before the hole. Before each later read,
//! the holders are listed again: once none of the remembered ones is still open (and at least
//! `gap_wait` has passed since the hole was first seen), every hole at or below `through` that
//! the *next* read (a snapshot taken after that check, so it sees whatever those transactions
//! committed) still shows is permanent and passed. Holes above `through` start their own wait.
//! A transaction kept open for hours holds delivery for hours: the wait is visible in
//! `status` and `/metrics` (holes waiting, on how many transactions, since when), never lost.
//!
//! What this cannot see, and the reconciliation pass ([`super::reconcile`]) delivers: a row
//! inserted with an explicit id lower than the checkpoint, an id taken by a separate
//! `SELECT nextval(...)` statement before the transaction's first write to the table, and ids
//! handed out from a session's sequence cache (`CACHE` > 1). `gap_wait` (at least a few
//! seconds by default) keeps the common forms of the second case (nextval then INSERT at
//! once) on the fast path too.
//!
//! Cost: with no hole (the steady state of a single writer, or concurrent writers committing
//! in order) a read is the one `SELECT`; a hole adds one `pg_locks` query per read while it
//! lasts.

use std::time::{Duration, Instant};

/// What the runner shows about holes (status, `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HoleReport {
    /// Holes delivery is waiting on (0 when delivering freely).
    pub waiting: u64,
    /// The id delivery waits after.
    pub after: Option<i64>,
    /// Open transactions the wait depends on.
    pub transactions: usize,
    /// When the wait began.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Holes found permanent and passed, since the start.
    pub skipped: u64,
}

#[derive(Clone, Debug)]
struct Waiting {
    /// The id just before the first hole.
    after: i64,
    /// The highest id the read that saw the hole looked at.
    through: i64,
    /// Virtual transaction ids of the table's writers when the hole was seen (`None` until
    /// listed: then the first check's list stands in, still a superset of the transactions
    /// that can fill the hole, as such a transaction keeps its lock until it ends).
    holders: Option<Vec<String>>,
    seen: Instant,
    seen_at: chrono::DateTime<chrono::Utc>,
    /// Holes counted in that read, up to `through`.
    holes: u64,
    /// Remembered holders still open at the last check.
    open: usize,
}

/// The state of one reader's holes.
#[derive(Clone, Debug)]
pub struct Holes {
    gap_wait: Duration,
    waiting: Option<Waiting>,
    /// Holes at or below this id were waited for and found permanent.
    passed_through: i64,
    skipped: u64,
}

/// What a read must do after [`Holes::prefix`].
#[derive(Debug, PartialEq, Eq)]
pub struct Prefix {
    /// How many of the rows can be delivered now.
    pub keep: usize,
    /// A new hole was seen: list the table's writers and give them to [`Holes::wait_for`].
    pub list_writers: bool,
}

impl Holes {
    pub fn new(gap_wait: Duration) -> Holes {
        Holes {
            gap_wait,
            waiting: None,
            passed_through: 0,
            skipped: 0,
        }
    }

    /// A hole is being waited for: list the writers before the next read and give them to
    /// [`Holes::check`].
    pub fn must_check(&self) -> bool {
        self.waiting.is_some()
    }

    /// Before a read: `open` lists the table's writers now. If none of those the wait depends
    /// on is left (and `gap_wait` has passed), the holes up to the wait's `through` are
    /// permanent for every read made from now on.
    pub fn check(&mut self, open: &[String], now: Instant) {
        let Some(waiting) = self.waiting.as_mut() else {
            return;
        };
        let holders = waiting.holders.get_or_insert_with(|| open.to_vec());
        waiting.open = holders.iter().filter(|h| open.contains(h)).count();
        if waiting.open == 0 && now.duration_since(waiting.seen) >= self.gap_wait {
            self.passed_through = self.passed_through.max(waiting.through);
            self.waiting = None;
        }
    }

    /// How many of `rows` (their ids, increasing, read after `after`) can be delivered: up to
    /// the first hole that may still be filled.
    pub fn prefix(&mut self, after: i64, ids: &[i64], now: Instant) -> Prefix {
        let mut previous = after;
        for (index, &id) in ids.iter().enumerate() {
            // `after == 0` is a fresh start: the first id is whatever XiVO's purge left.
            let hole = id != previous + 1 && !(index == 0 && after == 0);
            if hole {
                if id <= self.passed_through {
                    self.skipped += 1;
                    tracing::info!(
                        after = previous,
                        next = id,
                        "passing a permanent hole in the ids (no transaction that was writing \
                         the table when it appeared is still open)"
                    );
                } else {
                    let through = *ids.last().expect("not empty: we are in the loop");
                    let covered = self
                        .waiting
                        .as_ref()
                        .is_some_and(|w| w.after == previous && id <= w.through);
                    if !covered {
                        let holes = count_holes(previous, &ids[index..]);
                        self.waiting = Some(Waiting {
                            after: previous,
                            through,
                            holders: None,
                            seen: now,
                            seen_at: chrono::Utc::now(),
                            holes,
                            open: 0,
                        });
                    }
                    return Prefix {
                        keep: index,
                        list_writers: !covered,
                    };
                }
            }
            previous = id;
        }
        if self.waiting.as_ref().is_some_and(|w| w.after < previous) {
            // The rows came: the hole was filled.
            self.waiting = None;
        }
        Prefix {
            keep: ids.len(),
            list_writers: false,
        }
    }

    /// The table's writers listed right after the read that saw a new hole.
    pub fn wait_for(&mut self, holders: Vec<String>) {
        if let Some(waiting) = self.waiting.as_mut() {
            waiting.open = holders.len();
            waiting.holders = Some(holders);
        }
    }

    pub fn report(&self) -> HoleReport {
        HoleReport {
            waiting: self.waiting.as_ref().map_or(0, |w| w.holes),
            after: self.waiting.as_ref().map(|w| w.after),
            transactions: self.waiting.as_ref().map_or(0, |w| w.open),
            since: self.waiting.as_ref().map(|w| w.seen_at),
            skipped: self.skipped,
        }
    }
}

/// Holes among `ids` (increasing) after `after`.
fn count_holes(after: i64, ids: &[i64]) -> u64 {
    let mut previous = after;
    let mut holes = 0;
    for &id in ids {
        if id != previous + 1 {
            holes += 1;
        }
        previous = id;
    }
    holes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vx(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_hole_waits_for_the_writers_seen_with_it_then_is_passed() {
        let t0 = Instant::now();
        let mut h = Holes::new(Duration::ZERO);
        let p = h.prefix(0, &[5, 6, 8, 9, 12], t0);
        assert_eq!(
            p,
            Prefix {
                keep: 2,
                list_writers: true
            }
        );
        h.wait_for(vx(&["3/10", "4/7"]));
        assert_eq!(h.report().waiting, 2);
        assert_eq!(h.report().after, Some(6));
        // Still open: nothing passes, however long it takes.
        h.check(&vx(&["4/7", "5/1"]), t0 + Duration::from_secs(3600));
        assert_eq!(h.prefix(6, &[8, 9, 12], t0).keep, 0);
        assert_eq!(h.report().transactions, 1);
        // A new writer (5/1) takes later ids: it does not hold the hole.
        h.check(&vx(&["5/1"]), t0);
        assert!(!h.must_check());
        let p = h.prefix(6, &[8, 9, 12, 14], t0);
        // 7 and 10..11 are permanent; 13 is a new hole (14 was not in the first read).
        assert_eq!(
            p,
            Prefix {
                keep: 3,
                list_writers: true
            }
        );
        assert_eq!(h.report().skipped, 2);
        assert_eq!(h.report().after, Some(12));
    }

    #[test]
    fn a_filled_hole_ends_the_wait() {
        let t0 = Instant::now();
        let mut h = Holes::new(Duration::ZERO);
        assert_eq!(h.prefix(6, &[8], t0).keep, 0);
        h.wait_for(vx(&["3/10"]));
        assert_eq!(h.prefix(6, &[7, 8], t0).keep, 2);
        assert!(!h.must_check());
        assert_eq!(h.report(), HoleReport::default());
    }

    #[test]
    fn writers_never_listed_after_the_read_are_listed_at_the_first_check() {
        // The listing after the read failed: the check's own list stands in.
        let t0 = Instant::now();
        let mut h = Holes::new(Duration::ZERO);
        assert!(h.prefix(6, &[8], t0).list_writers);
        h.check(&vx(&["3/10"]), t0);
        assert_eq!(h.prefix(6, &[8], t0).keep, 0);
        h.check(&vx(&["3/10", "4/1"]), t0);
        assert_eq!(h.prefix(6, &[8], t0).keep, 0);
        h.check(&vx(&["4/1"]), t0);
        assert_eq!(h.prefix(6, &[8], t0).keep, 1);
    }

    #[test]
    fn gap_wait_is_a_minimum_even_without_writers() {
        let t0 = Instant::now();
        let mut h = Holes::new(Duration::from_secs(5));
        assert_eq!(h.prefix(6, &[8], t0).keep, 0);
        h.wait_for(vec![]);
        h.check(&[], t0 + Duration::from_secs(1));
        assert_eq!(h.prefix(6, &[8], t0).keep, 0);
        h.check(&[], t0 + Duration::from_secs(5));
        assert_eq!(h.prefix(6, &[8], t0).keep, 1);
    }
}
