//! The decision: a pure state machine that turns probe rounds into a verdict on the master (up,
//! down, not yet known) with hysteresis. No I/O and no clock of its own: the caller passes each
//! round's observation and the time, so that tests replay loss patterns with tokio's paused time.
//!
//! Rules: a round is good when the master's SIP answered. It is bad when nothing answered (host
//! down) or when the host answered on ICMP or TCP but SIP did not (Asterisk dead, the case
//! XiVO's ping never sees). ICMP silence alone never makes a round bad: one broken path is no
//! reason for two active nodes. The master is down after `down_after` consecutive bad rounds,
//! and up again after `up_after` consecutive good rounds once it has been down for `hold_down`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// What one probe round saw: which paths answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// An ICMP echo reply came back.
    pub icmp: bool,
    /// The PostgreSQL port accepted or refused the connection (either way the host is there).
    pub tcp: bool,
    /// A SIP response came back to OPTIONS.
    pub sip: bool,
}

/// How a round counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundClass {
    /// SIP answered: the master serves calls.
    Good,
    /// The host answered on ICMP or TCP, SIP did not: Asterisk is dead on a live host.
    SipDead,
    /// No path answered.
    HostDown,
}

impl Observation {
    pub fn class(&self) -> RoundClass {
        if self.sip {
            RoundClass::Good
        } else if self.icmp || self.tcp {
            RoundClass::SipDead
        } else {
            RoundClass::HostDown
        }
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = |ok: bool| if ok { "ok" } else { "silent" };
        write!(
            f,
            "icmp {}, tcp {}, sip {}",
            mark(self.icmp),
            mark(self.tcp),
            mark(self.sip)
        )
    }
}

/// The monitor's opinion of the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Not enough rounds yet: nothing is changed.
    Unknown,
    Up,
    Down,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Unknown => "unknown",
            Verdict::Up => "up",
            Verdict::Down => "down",
        })
    }
}

/// The hysteresis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub down_after: u32,
    pub up_after: u32,
    pub hold_down: Duration,
}

/// A change of verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Verdict,
    pub to: Verdict,
    pub at: Instant,
    pub reason: String,
    /// The round that completed the streak.
    pub evidence: Observation,
}

/// Rounds seen, by class, and transitions made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub rounds: u64,
    pub good: u64,
    pub sip_dead: u64,
    pub host_down: u64,
    /// Rounds where the ICMP path, or the TCP path, did not answer (whatever SIP did): a
    /// broken path shows here before it matters.
    pub icmp_silent: u64,
    pub tcp_silent: u64,
    pub to_down: u64,
    pub to_up: u64,
}

/// The state machine.
#[derive(Clone, Debug)]
pub struct Machine {
    rules: Rules,
    verdict: Verdict,
    since: Instant,
    good_streak: u32,
    bad_streak: u32,
    /// Host-down rounds within the current bad streak (the rest were SIP-dead).
    host_down_in_streak: u32,
    counters: Counters,
}

impl Machine {
    pub fn new(rules: Rules, now: Instant) -> Machine {
        Machine {
            rules,
            verdict: Verdict::Unknown,
            since: now,
            good_streak: 0,
            bad_streak: 0,
            host_down_in_streak: 0,
            counters: Counters::default(),
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// When the current verdict began.
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn streaks(&self) -> (u32, u32) {
        (self.good_streak, self.bad_streak)
    }

    /// Takes one round's observation at `now`; returns the transition it caused, if any.
    pub fn observe(&mut self, now: Instant, observation: Observation) -> Option<Transition> {
        self.counters.rounds += 1;
        self.counters.icmp_silent += u64::from(!observation.icmp);
        self.counters.tcp_silent += u64::from(!observation.tcp);
        let class = observation.class();
        match class {
            RoundClass::Good => {
                self.counters.good += 1;
                self.good_streak = self.good_streak.saturating_add(1);
                self.bad_streak = 0;
                self.host_down_in_streak = 0;
            }
            RoundClass::SipDead | RoundClass::HostDown => {
                if class == RoundClass::SipDead {
                    self.counters.sip_dead += 1;
                } else {
                    self.counters.host_down += 1;
                    self.host_down_in_streak += 1;
                }
                self.bad_streak = self.bad_streak.saturating_add(1);
                self.good_streak = 0;
            }
        }

        if self.verdict != Verdict::Down && self.bad_streak >= self.rules.down_after {
            let cause = if self.host_down_in_streak == self.bad_streak {
                "host down: no ICMP, TCP or SIP answer".to_owned()
            } else if self.host_down_in_streak == 0 {
                "Asterisk dead: the host answers but SIP does not".to_owned()
            } else {
                format!(
                    "{} rounds host down, {} rounds SIP silent on a live host",
                    self.host_down_in_streak,
                    self.bad_streak - self.host_down_in_streak
                )
            };
            let reason = format!("{} consecutive bad rounds ({cause})", self.bad_streak);
            self.counters.to_down += 1;
            return Some(self.change(Verdict::Down, now, reason, observation));
        }

        if self.verdict != Verdict::Up && self.good_streak >= self.rules.up_after {
            let in_state = now.saturating_duration_since(self.since);
            let held = self.verdict == Verdict::Unknown || in_state >= self.rules.hold_down;
            if held {
                let reason = match self.verdict {
                    Verdict::Down => format!(
                        "{} consecutive rounds with SIP answering, after {:.1} s down (hold-down {:.1} s)",
                        self.good_streak,
                        in_state.as_secs_f64(),
                        self.rules.hold_down.as_secs_f64()
                    ),
                    _ => format!("{} consecutive rounds with SIP answering", self.good_streak),
                };
                self.counters.to_up += 1;
                return Some(self.change(Verdict::Up, now, reason, observation));
            }
        }
        None
    }

    fn change(
        &mut self,
        to: Verdict,
        now: Instant,
        reason: String,
        evidence: Observation,
    ) -> Transition {
        let from = self.verdict;
        self.verdict = to;
        self.since = now;
        Transition {
            from,
            to,
            at: now,
            reason,
            evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const INTERVAL: Duration = Duration::from_secs(1);

    fn rules() -> Rules {
        Rules {
            down_after: 3,
            up_after: 5,
            hold_down: Duration::from_secs(10),
        }
    }

    const UP: Observation = Observation {
        icmp: true,
        tcp: true,
        sip: true,
    };
    const HOST_DOWN: Observation = Observation {
        icmp: false,
        tcp: false,
        sip: false,
    };
    const SIP_DEAD: Observation = Observation {
        icmp: true,
        tcp: true,
        sip: false,
    };

    /// Feeds one observation per interval of paused time; returns the transitions with the
    /// round number (from 1) at which each happened.
    async fn replay(
        machine: &mut Machine,
        rounds: impl IntoIterator<Item = Observation>,
    ) -> Vec<(usize, Transition)> {
        let mut transitions = Vec::new();
        for (index, observation) in rounds.into_iter().enumerate() {
            tokio::time::advance(INTERVAL).await;
            if let Some(t) = machine.observe(Instant::now(), observation) {
                transitions.push((index + 1, t));
            }
        }
        transitions
    }

    async fn up_machine() -> Machine {
        let mut machine = Machine::new(rules(), Instant::now());
        let t = replay(&mut machine, [UP; 5]).await;
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].0, t[0].1.from, t[0].1.to),
            (5, Verdict::Unknown, Verdict::Up)
        );
        machine
    }

    #[tokio::test(start_paused = true)]
    async fn steady_total_loss_is_down_after_exactly_three_rounds() {
        let mut machine = up_machine().await;
        let t = replay(&mut machine, [HOST_DOWN; 10]).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].0, 3);
        assert_eq!(t[0].1.to, Verdict::Down);
        assert!(t[0].1.reason.contains("host down"), "{}", t[0].1.reason);
        assert_eq!(machine.counters().host_down, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn steady_partial_loss_one_round_in_three_never_fails_over() {
        let mut machine = up_machine().await;
        let rounds = (0..300).map(|i| if i % 3 == 0 { HOST_DOWN } else { UP });
        assert_eq!(replay(&mut machine, rounds).await, vec![]);
        assert_eq!(machine.verdict(), Verdict::Up);
        assert_eq!(machine.counters().host_down, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_shorter_than_the_threshold_are_absorbed_longer_ones_are_not() {
        let mut machine = up_machine().await;
        let mut rounds = Vec::new();
        for _ in 0..20 {
            rounds.extend([HOST_DOWN, HOST_DOWN, UP]);
        }
        assert_eq!(replay(&mut machine, rounds).await, vec![]);
        let t = replay(&mut machine, [UP, HOST_DOWN, HOST_DOWN, HOST_DOWN, UP]).await;
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].0, t[0].1.to), (4, Verdict::Down));
    }

    #[tokio::test(start_paused = true)]
    async fn asterisk_dead_on_a_live_host_is_down() {
        let mut machine = up_machine().await;
        let t = replay(&mut machine, [SIP_DEAD; 3]).await;
        assert_eq!(t.len(), 1);
        assert!(t[0].1.reason.contains("Asterisk dead"), "{}", t[0].1.reason);
        assert_eq!(t[0].1.evidence, SIP_DEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn icmp_blocked_but_sip_answering_is_up() {
        let mut machine = up_machine().await;
        let no_icmp = Observation {
            icmp: false,
            tcp: true,
            sip: true,
        };
        assert_eq!(replay(&mut machine, [no_icmp; 50]).await, vec![]);
        assert_eq!(machine.verdict(), Verdict::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn failback_waits_for_the_good_streak_and_the_hold_down() {
        let mut machine = up_machine().await;
        let down = replay(&mut machine, [HOST_DOWN; 3]).await;
        assert_eq!(down.len(), 1);
        let went_down = down[0].1.at;
        // The master comes back at once: 5 good rounds are not enough before 10 s down.
        let t = replay(&mut machine, [UP; 20]).await;
        assert_eq!(t.len(), 1);
        let (round, up) = &t[0];
        assert_eq!(up.to, Verdict::Up);
        assert_eq!(up.at - went_down, Duration::from_secs(10));
        assert_eq!(*round, 10);
        assert!(up.reason.contains("hold-down"), "{}", up.reason);

        // Down a long time: the good streak alone decides.
        replay(&mut machine, [HOST_DOWN; 30]).await;
        let t = replay(&mut machine, [UP; 5]).await;
        assert_eq!((t.len(), t[0].0), (1, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_link_fails_over_once_and_does_not_bounce() {
        let mut machine = up_machine().await;
        // 4 s dead, 4 s alive, for ten minutes.
        let rounds = (0..600).map(|i| if (i / 4) % 2 == 0 { HOST_DOWN } else { UP });
        let t = replay(&mut machine, rounds).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].1.to, Verdict::Down);
        // 3 s dead, 3 s alive: down at the first dead spell, then the good streak never
        // reaches 5: it stays down instead of bouncing every 3 s.
        let mut machine = up_machine().await;
        let rounds = (0..90).map(|i| if i % 6 < 3 { HOST_DOWN } else { UP });
        let t = replay(&mut machine, rounds).await;
        assert_eq!(t.len(), 1, "{t:?}");
    }

    /// Packet-level model of a round under random loss: the monitor retries within a round
    /// (`SIP_ATTEMPTS` OPTIONS retransmissions, `ICMP_ATTEMPTS` pings, `TCP_ATTEMPTS` connects);
    /// each attempt needs its request and its answer through a link that drops `loss` of the
    /// packets each way.
    fn lossy_round(rng: &mut StdRng, loss: f64) -> Observation {
        use crate::monitor::probe::{ICMP_ATTEMPTS, SIP_ATTEMPTS, TCP_ATTEMPTS};
        let mut through =
            |attempts: u32| (0..attempts).any(|_| !rng.random_bool(loss) && !rng.random_bool(loss));
        Observation {
            icmp: through(ICMP_ATTEMPTS),
            tcp: through(TCP_ATTEMPTS),
            sip: through(SIP_ATTEMPTS),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn thirty_percent_random_loss_both_ways_for_three_hours_never_flaps() {
        let mut rng = StdRng::seed_from_u64(0x0005_eed3);
        let mut machine = up_machine().await;
        let rounds: Vec<_> = (0..3 * 3600).map(|_| lossy_round(&mut rng, 0.30)).collect();
        let bad = rounds.iter().filter(|o| !o.sip).count();
        assert!(
            bad > 0,
            "the model must lose some rounds for this test to mean anything"
        );
        assert_eq!(replay(&mut machine, rounds).await, vec![]);
        assert_eq!(machine.verdict(), Verdict::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn total_loss_after_random_loss_still_fails_over_within_the_threshold() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut machine = up_machine().await;
        let rounds: Vec<_> = (0..600).map(|_| lossy_round(&mut rng, 0.30)).collect();
        assert_eq!(replay(&mut machine, rounds).await, vec![]);
        let t = replay(&mut machine, (0..5).map(|_| lossy_round(&mut rng, 1.0))).await;
        assert_eq!((t.len(), t[0].0), (1, 3));
    }

    /// A SIP answer slower than the round's timeout is no answer.
    async fn answered_within(latency: Duration, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, tokio::time::sleep(latency))
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn slow_answers_count_as_silence_fast_enough_ones_do_not() {
        let timeout = Duration::from_millis(900);
        let mut machine = up_machine().await;
        // An overloaded master answering in 850 ms stays up.
        for _ in 0..30 {
            let sip = answered_within(Duration::from_millis(850), timeout).await;
            let observation = Observation { sip, ..UP };
            assert!(machine.observe(Instant::now(), observation).is_none());
        }
        // One answering in 1.5 s is as good as dead: down after three such rounds.
        let mut transitions = Vec::new();
        for round in 1..=5 {
            let sip = answered_within(Duration::from_millis(1500), timeout).await;
            let observation = Observation { sip, ..UP };
            if let Some(t) = machine.observe(Instant::now(), observation) {
                transitions.push((round, t.to));
            }
        }
        assert_eq!(transitions, vec![(3, Verdict::Down)]);
    }

    #[test]
    fn observations_classify_as_documented() {
        assert_eq!(UP.class(), RoundClass::Good);
        assert_eq!(SIP_DEAD.class(), RoundClass::SipDead);
        assert_eq!(HOST_DOWN.class(), RoundClass::HostDown);
        let tcp_only = Observation {
            tcp: true,
            ..HOST_DOWN
        };
        assert_eq!(tcp_only.class(), RoundClass::SipDead);
    }
}
