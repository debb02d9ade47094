//! The split-brain guard: a pure decision, apart from the verdict machine, over the verdict on
//! the master and what the witnesses said. A down verdict is acted on (the slave takes over)
//! only when a witness answered after the master went silent, or when the check is off; with
//! every witness silent the slave is the one cut off: it stays as it is, says so once per
//! episode and keeps asking. The witnesses are asked from the first suspect moment (SIP silent
//! for a quarter of the window), in parallel with the detection window, so that the takeover
//! does not wait for them. A witness answering again ends the episode without a takeover: the
//! master is judged again on a window of silence with the network back. No I/O and no clock
//! of its own (the caller passes the time).

use std::time::Duration;

use tokio::time::Instant;

use super::verdict::Verdict;

/// What the witnesses said since the master went silent (the latest witness round begun after
/// the master's last answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Witnessed {
    /// No such round has finished yet (or the check is off).
    NotAsked,
    Answered,
    Silent,
}

/// What the caller does after a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing new.
    Hold,
    /// Take over (start the services).
    TakeOver,
    /// The master is down and no witness answers: this node is cut off; `first` on the first
    /// decision of the episode (log it once).
    Isolated { first: bool },
    /// The network is back (the master or a witness answers) after `lasted` cut off.
    Recovered { lasted: Duration },
}

/// The guard's state between decisions.
#[derive(Clone, Debug)]
pub struct Guard {
    /// The check is on.
    enabled: bool,
    /// The verdict's window (`down_after`): the master is judged on a silence this long.
    window: Duration,
    /// The services were started for the current down verdict.
    taken_over: bool,
    /// Since when the node has been cut off (an episode under way).
    isolated_since: Option<Instant>,
    /// When the last episode ended: a takeover waits for a window of silence after it.
    recovered_at: Option<Instant>,
}

impl Guard {
    pub fn new(enabled: bool, window: Duration) -> Guard {
        Guard {
            enabled,
            window,
            taken_over: false,
            isolated_since: None,
            recovered_at: None,
        }
    }

    pub fn isolated_since(&self) -> Option<Instant> {
        self.isolated_since
    }

    pub fn taken_over(&self) -> bool {
        self.taken_over
    }

    /// Whether the witnesses should be asked now: the check is on, nothing has been taken
    /// over, and the master is down or suspect (SIP silent for `silent_for`, a quarter of the
    /// window or more).
    pub fn wants_witness(&self, verdict: Verdict, silent_for: Duration) -> bool {
        self.enabled
            && !self.taken_over
            && (verdict == Verdict::Down || silent_for >= self.window / 4)
    }

    /// The decision at `now`: `verdict`, the master's SIP silent since `silent_since`, what
    /// the witnesses said since then.
    pub fn step(
        &mut self,
        now: Instant,
        verdict: Verdict,
        silent_since: Instant,
        witnessed: Witnessed,
    ) -> Decision {
        if verdict != Verdict::Down {
            self.taken_over = false;
            return self.recover(now);
        }
        if self.taken_over {
            return Decision::Hold;
        }
        if now.saturating_duration_since(silent_since) < self.window {
            // The master answers again (its verdict comes back after the hold-down).
            return self.recover(now);
        }
        if !self.enabled {
            self.taken_over = true;
            return Decision::TakeOver;
        }
        match witnessed {
            Witnessed::NotAsked => Decision::Hold,
            Witnessed::Answered if self.isolated_since.is_some() => {
                // The network is back: the master is judged on a window with the link up.
                self.recover(now)
            }
            Witnessed::Answered => {
                let settled = self
                    .recovered_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.window);
                if settled {
                    self.taken_over = true;
                    Decision::TakeOver
                } else {
                    Decision::Hold
                }
            }
            Witnessed::Silent => {
                let first = self.isolated_since.is_none();
                self.isolated_since.get_or_insert(now);
                Decision::Isolated { first }
            }
        }
    }

    fn recover(&mut self, now: Instant) -> Decision {
        match self.isolated_since.take() {
            Some(since) => {
                self.recovered_at = Some(now);
                Decision::Recovered {
                    lasted: now - since,
                }
            }
            None => Decision::Hold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const WINDOW: Duration = Duration::from_millis(1200);

    /// The guard's decision now, the verdict down, the master silent since `silent_since`.
    fn down(guard: &mut Guard, silent_since: Instant, witnessed: Witnessed) -> Decision {
        guard.step(Instant::now(), Verdict::Down, silent_since, witnessed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_off_slave_waits_for_a_witness_then_takes_over() {
        let mut guard = Guard::new(true, WINDOW);
        let silent_since = Instant::now();
        assert!(!guard.wants_witness(Verdict::Up, Duration::from_millis(100)));
        assert!(
            guard.wants_witness(Verdict::Up, Duration::from_millis(300)),
            "from the first suspect moment"
        );
        tokio::time::advance(WINDOW).await;
        // Down, and no witness round has finished yet: wait for it.
        let d = down(&mut guard, silent_since, Witnessed::NotAsked);
        assert_eq!(d, Decision::Hold);
        let start = Instant::now();
        let d = down(&mut guard, silent_since, Witnessed::Silent);
        assert_eq!(d, Decision::Isolated { first: true });
        tokio::time::sleep(S).await;
        let d = down(&mut guard, silent_since, Witnessed::Silent);
        assert_eq!(d, Decision::Isolated { first: false });
        assert_eq!(guard.isolated_since(), Some(start));
        assert!(guard.wants_witness(Verdict::Down, 5 * S), "asked on");
        tokio::time::sleep(S).await;
        // A witness answers again: the episode ends, and the master is judged on a window of
        // silence with the network back.
        let d = down(&mut guard, silent_since, Witnessed::Answered);
        assert_eq!(d, Decision::Recovered { lasted: 2 * S });
        let d = down(&mut guard, silent_since, Witnessed::Answered);
        assert_eq!(d, Decision::Hold, "not before a window with the link up");
        tokio::time::sleep(WINDOW).await;
        let d = down(&mut guard, silent_since, Witnessed::Answered);
        assert_eq!(d, Decision::TakeOver);
        assert!(!guard.wants_witness(Verdict::Down, 5 * S), "taken over");
        assert_eq!(
            down(&mut guard, silent_since, Witnessed::NotAsked),
            Decision::Hold
        );
        // Failback: a new down verdict asks again.
        guard.step(
            Instant::now(),
            Verdict::Up,
            Instant::now(),
            Witnessed::NotAsked,
        );
        assert!(guard.wants_witness(Verdict::Up, WINDOW / 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_witness_that_answers_in_the_window_takes_over_at_its_end() {
        let mut guard = Guard::new(true, WINDOW);
        let silent_since = Instant::now();
        tokio::time::advance(WINDOW).await;
        let d = down(&mut guard, silent_since, Witnessed::Answered);
        assert_eq!(d, Decision::TakeOver);
    }

    #[tokio::test(start_paused = true)]
    async fn the_network_back_ends_the_episode_without_a_takeover() {
        let mut guard = Guard::new(true, WINDOW);
        let silent_since = Instant::now();
        tokio::time::advance(WINDOW).await;
        down(&mut guard, silent_since, Witnessed::Silent);
        tokio::time::sleep(5 * S).await;
        // The master answers again, still within its hold-down: recovered, no takeover.
        let d = guard.step(
            Instant::now(),
            Verdict::Down,
            Instant::now(),
            Witnessed::NotAsked,
        );
        assert_eq!(d, Decision::Recovered { lasted: 5 * S });
        assert!(!guard.taken_over());
        assert_eq!(
            guard.step(
                Instant::now(),
                Verdict::Up,
                Instant::now(),
                Witnessed::NotAsked
            ),
            Decision::Hold
        );
        // A new episode is logged again.
        let silent_since = Instant::now();
        tokio::time::advance(WINDOW).await;
        let d = down(&mut guard, silent_since, Witnessed::Silent);
        assert_eq!(d, Decision::Isolated { first: true });
        let d = guard.step(
            Instant::now(),
            Verdict::Up,
            Instant::now(),
            Witnessed::NotAsked,
        );
        assert_eq!(
            d,
            Decision::Recovered {
                lasted: Duration::ZERO
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_the_check_off_a_down_verdict_takes_over_at_once() {
        let mut guard = Guard::new(false, WINDOW);
        assert!(!guard.wants_witness(Verdict::Down, 3 * S));
        let silent_since = Instant::now();
        tokio::time::advance(WINDOW).await;
        assert_eq!(
            down(&mut guard, silent_since, Witnessed::NotAsked),
            Decision::TakeOver
        );
        // Unknown or up: nothing to do.
        let mut guard = Guard::new(true, WINDOW);
        assert_eq!(
            guard.step(
                Instant::now(),
                Verdict::Unknown,
                silent_since,
                Witnessed::Silent
            ),
            Decision::Hold
        );
    }
}
