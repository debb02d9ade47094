//! The split-brain guard: a pure decision, apart from the verdict machine, over the verdict on
//! the master and what the witnesses said. A down verdict is acted on (the slave takes over)
//! only when a witness answered in the same round, or when the check is off; with every
//! witness silent the slave is the one cut off: it stays as it is, says so once per episode
//! and asks again each round. The round in which a witness answers again ends the episode
//! without a takeover: it may straddle the network's return (a path that failed at once, a
//! witness that answered a retry), so the master is judged on the next round, with the network
//! back. No I/O and no clock of its own (the caller passes the time).

use std::time::Duration;

use tokio::time::Instant;

use super::verdict::Verdict;

/// What the witnesses said in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Witnessed {
    /// Not asked: the check is off (`XIVO_HA_MONITOR_WITNESSES=none`), or not needed this round.
    NotAsked,
    Answered,
    Silent,
}

/// What the caller does after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing new.
    Hold,
    /// Take over (start the services).
    TakeOver,
    /// The master is down and no witness answers: this node is cut off; `first` on the first
    /// round of the episode (log it once).
    Isolated { first: bool },
    /// The network is back (the master or a witness answers) after `lasted` cut off.
    Recovered { lasted: Duration },
}

/// The guard's state between rounds.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// The check is on.
    enabled: bool,
    /// The services were started for the current down verdict.
    taken_over: bool,
    /// Since when the node has been cut off (an episode under way).
    isolated_since: Option<Instant>,
}

impl Guard {
    pub fn new(enabled: bool) -> Guard {
        Guard {
            enabled,
            ..Guard::default()
        }
    }

    pub fn isolated_since(&self) -> Option<Instant> {
        self.isolated_since
    }

    pub fn taken_over(&self) -> bool {
        self.taken_over
    }

    /// Whether this round needs the witnesses: the check is on, nothing has been taken over,
    /// and the master is down or this round could make it so (`bad_streak` bad rounds so far,
    /// down after `down_after`), so that the witness round runs beside the last bad round.
    pub fn wants_witness(&self, verdict: Verdict, bad_streak: u32, down_after: u32) -> bool {
        self.enabled
            && !self.taken_over
            && (verdict == Verdict::Down || bad_streak.saturating_add(1) >= down_after)
    }

    /// The round at `now`: `verdict` after it, whether it was a bad round, what the witnesses
    /// said.
    pub fn step(
        &mut self,
        now: Instant,
        verdict: Verdict,
        bad_round: bool,
        witnessed: Witnessed,
    ) -> Decision {
        if verdict != Verdict::Down {
            self.taken_over = false;
            return self.recover(now);
        }
        if self.taken_over {
            return Decision::Hold;
        }
        if !bad_round {
            // The master answers again (its verdict comes back after the hold-down).
            return self.recover(now);
        }
        let connected = !self.enabled || witnessed != Witnessed::Silent;
        if connected && self.isolated_since.is_some() {
            // The network is back: the next round decides, on a link that is up.
            return self.recover(now);
        }
        if connected {
            self.taken_over = true;
            return Decision::TakeOver;
        }
        let first = self.isolated_since.is_none();
        self.isolated_since.get_or_insert(now);
        Decision::Isolated { first }
    }

    fn recover(&mut self, now: Instant) -> Decision {
        match self.isolated_since.take() {
            Some(since) => Decision::Recovered {
                lasted: now - since,
            },
            None => Decision::Hold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_cut_off_slave_waits_for_a_witness_then_takes_over() {
        let mut guard = Guard::new(true);
        assert!(!guard.wants_witness(Verdict::Up, 0, 3));
        assert!(
            guard.wants_witness(Verdict::Up, 2, 3),
            "beside the last bad round"
        );
        let start = Instant::now();
        let d = guard.step(Instant::now(), Verdict::Down, true, Witnessed::Silent);
        assert_eq!(d, Decision::Isolated { first: true });
        tokio::time::sleep(S).await;
        let d = guard.step(Instant::now(), Verdict::Down, true, Witnessed::Silent);
        assert_eq!(d, Decision::Isolated { first: false });
        assert_eq!(guard.isolated_since(), Some(start));
        assert!(
            guard.wants_witness(Verdict::Down, 5, 3),
            "asked again each round"
        );
        tokio::time::sleep(S).await;
        // A witness answers again: the episode ends, and the next round (on a link that is up)
        // decides.
        let d = guard.step(Instant::now(), Verdict::Down, true, Witnessed::Answered);
        assert_eq!(d, Decision::Recovered { lasted: 2 * S });
        assert!(guard.wants_witness(Verdict::Down, 6, 3));
        let d = guard.step(Instant::now(), Verdict::Down, true, Witnessed::Answered);
        assert_eq!(d, Decision::TakeOver);
        assert!(!guard.wants_witness(Verdict::Down, 6, 3), "taken over");
        assert_eq!(
            guard.step(Instant::now(), Verdict::Down, true, Witnessed::NotAsked),
            Decision::Hold
        );
        // Failback: a new down verdict asks again.
        guard.step(Instant::now(), Verdict::Up, false, Witnessed::NotAsked);
        assert!(guard.wants_witness(Verdict::Up, 2, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_network_back_ends_the_episode_without_a_takeover() {
        let mut guard = Guard::new(true);
        guard.step(Instant::now(), Verdict::Down, true, Witnessed::Silent);
        tokio::time::sleep(5 * S).await;
        // The master answers again, still within its hold-down: recovered, no takeover.
        let d = guard.step(Instant::now(), Verdict::Down, false, Witnessed::NotAsked);
        assert_eq!(d, Decision::Recovered { lasted: 5 * S });
        assert!(!guard.taken_over());
        assert_eq!(
            guard.step(Instant::now(), Verdict::Up, false, Witnessed::NotAsked),
            Decision::Hold
        );
        // A new episode is logged again.
        let d = guard.step(Instant::now(), Verdict::Down, true, Witnessed::Silent);
        assert_eq!(d, Decision::Isolated { first: true });
        let d = guard.step(Instant::now(), Verdict::Up, false, Witnessed::NotAsked);
        assert_eq!(
            d,
            Decision::Recovered {
                lasted: Duration::ZERO
            }
        );
    }

    #[test]
    fn with_the_check_off_a_down_verdict_takes_over_at_once() {
        let mut guard = Guard::new(false);
        assert!(!guard.wants_witness(Verdict::Down, 3, 3));
        let now = Instant::now();
        assert_eq!(
            guard.step(now, Verdict::Down, true, Witnessed::NotAsked),
            Decision::TakeOver
        );
        // Unknown or up: nothing to do.
        let mut guard = Guard::new(true);
        assert_eq!(
            guard.step(now, Verdict::Unknown, true, Witnessed::Silent),
            Decision::Hold
        );
    }
}
