//! The idle watch: the highest id of each event table (its "head"), read by ONE query every
//! `DB_REPLIC_POLL_MS` for the whole run, instead of one read per (table, sink) task.
//!
//! A task that found nothing new waits here until its table's head is beyond its checkpoint
//! ([`Heads::wait_beyond`]). That is exact: an idle task has no hole pending (a hole makes it
//! wait and read on its own, see [`super::holes`]), so every row it has yet to deliver has an
//! id above its checkpoint, and the head covers it as soon as it commits. Rows inserted below
//! the checkpoint are the reconciliation's business either way. The task still reads on its
//! own after [`IDLE_READ`], so that a watch that fails (source down) delays nothing for long
//! and a due reconciliation runs. The status board's "rows behind" comes from the same heads.
//!
//! The query is two backward steps on the primary keys (`max(id)`), a fraction of a
//! millisecond: with the defaults, 10 queries a second cost the XiVO's PostgreSQL well under
//! 1 % of a core (measured by `cargo bench --bench dbreplic`).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use super::source::{EventTable, Source};

/// An idle task reads on its own at least this often, whatever the watch says.
pub const IDLE_READ: Duration = Duration::from_secs(5);

/// The latest heads seen (empty until the first query answers), as one task waits on them.
#[derive(Clone)]
pub struct Heads {
    latest: watch::Receiver<BTreeMap<EventTable, i64>>,
    /// The head that ended this task's last wait: it does not end the next one, so that a
    /// head the task's read cannot reach (rows deleted since the watch saw them) makes it wait
    /// for the watch to move instead of reading again and again.
    woken_by: Option<i64>,
}

impl Heads {
    /// The watch, and the task that feeds it from `source` every `poll` until dropped.
    pub fn spawn(mut source: Source, poll: Duration) -> (Heads, tokio::task::JoinHandle<()>) {
        let (tell, latest) = watch::channel(BTreeMap::new());
        let task = tokio::spawn(async move {
            loop {
                match source.heads().await {
                    Ok(heads) => {
                        tell.send_if_modified(|old| {
                            let changed = *old != heads;
                            *old = heads;
                            changed
                        });
                    }
                    Err(e) => tracing::debug!("idle watch: {e}"),
                }
                if tell.is_closed() {
                    return;
                }
                tokio::time::sleep(poll).await;
            }
        });
        (
            Heads {
                latest,
                woken_by: None,
            },
            task,
        )
    }

    /// The head of `table`, once known.
    pub fn get(&self, table: EventTable) -> Option<i64> {
        self.latest.borrow().get(&table).copied()
    }

    /// Returns once `table`'s head is beyond `after` (and is not the one that ended the last
    /// wait), or after `timeout`.
    pub async fn wait_beyond(&mut self, table: EventTable, after: i64, timeout: Duration) {
        let woken_by = self.woken_by;
        let wakes = |heads: &BTreeMap<EventTable, i64>| {
            heads
                .get(&table)
                .is_some_and(|&head| head > after && Some(head) != woken_by)
        };
        let woke = tokio::time::timeout(timeout, async {
            match self.latest.wait_for(wakes).await {
                Ok(heads) => heads.get(&table).copied(),
                Err(_) => None,
            }
        })
        .await;
        if let Ok(Some(head)) = woke {
            self.woken_by = Some(head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch saying `first`, and the task side of it.
    fn watch_saying(
        first: BTreeMap<EventTable, i64>,
    ) -> (watch::Sender<BTreeMap<EventTable, i64>>, Heads) {
        let (tell, latest) = watch::channel(first);
        let heads = Heads {
            latest,
            woken_by: None,
        };
        (tell, heads)
    }

    /// Waits in a task of its own; returns how long it waited.
    fn wait_in_task(mut heads: Heads, after: i64) -> tokio::task::JoinHandle<Duration> {
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            heads.wait_beyond(EventTable::Cel, after, IDLE_READ).await;
            started.elapsed()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_wakes_when_its_table_moves_past_its_checkpoint() {
        let (tell, heads) = watch_saying(BTreeMap::new());
        let waiter = wait_in_task(heads, 10);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The other table, and this one at the checkpoint: still waiting.
        tell.send_replace([(EventTable::QueueLog, 50), (EventTable::Cel, 10)].into());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        tell.send_replace([(EventTable::QueueLog, 50), (EventTable::Cel, 11)].into());
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_reads_on_its_own_when_the_watch_says_nothing() {
        let (_tell, heads) = watch_saying(BTreeMap::new());
        assert_eq!(wait_in_task(heads, 0).await.unwrap(), IDLE_READ);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_the_read_could_not_reach_wakes_a_task_once() {
        // The watch saw id 150, whose rows were deleted before the task read: one wake, then
        // the task waits for the watch to move (here, for new rows) instead of spinning.
        let (tell, mut heads) = watch_saying([(EventTable::Cel, 150)].into());
        let started = tokio::time::Instant::now();
        heads.wait_beyond(EventTable::Cel, 100, IDLE_READ).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        let waiter = wait_in_task(heads, 100);
        tokio::time::sleep(Duration::from_millis(300)).await;
        tell.send_replace([(EventTable::Cel, 151)].into());
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(300));
    }
}
