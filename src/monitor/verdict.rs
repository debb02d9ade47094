//! The decision: a pure state machine that turns the master's answers into a verdict (up, down,
//! not yet known) with hysteresis, on TIME without an answer rather than on a count of rounds.
//! No I/O and no clock of its own: the caller passes each answer with the instant it arrived
//! and asks for a decision at an instant, so that tests replay loss and delay patterns with
//! tokio's paused time.
//!
//! Rules: the prober sends SIP OPTIONS every few tens of milliseconds (and pings, and connects
//! to the PostgreSQL port, less often); each path keeps when it last answered, whatever the
//! age of the request answered (a late answer counts: delay cannot look like death). The master
//! is down when SIP has not answered for `down_after`: "host down" when ICMP and TCP were
//! silent too over the last half of that window, "Asterisk dead" when the host answered (the case XiVO's ping
//! never sees). ICMP or TCP silence alone never makes it down: one broken path is no reason for
//! two active nodes. It is up again once SIP has answered for `up_after` without a silence
//! longer than half of `down_after`, and once it has been down for `hold_down`.
//!
//! [`Observation`] and [`Counters`] describe rounds: the caller's fixed slots (the monitor's
//! interval) saying which paths answered in each, for the timeline and the counters only.

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

/// The hysteresis, in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// SIP silent this long: down.
    pub down_after: Duration,
    /// SIP answering this long (no silence longer than half of `down_after`): up.
    pub up_after: Duration,
    /// Down at least this long before up again.
    pub hold_down: Duration,
}

impl Rules {
    /// The longest silence that still counts as answering, for the way back up.
    pub fn gap(&self) -> Duration {
        self.down_after / 2
    }
}

/// A probe path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Icmp,
    Tcp,
    Sip,
}

/// When each path last answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastAnswers {
    pub icmp: Option<Instant>,
    pub tcp: Option<Instant>,
    pub sip: Option<Instant>,
}

impl LastAnswers {
    fn slot(&mut self, path: Path) -> &mut Option<Instant> {
        match path {
            Path::Icmp => &mut self.icmp,
            Path::Tcp => &mut self.tcp,
            Path::Sip => &mut self.sip,
        }
    }

    /// Which paths answered in the `window` before `now`.
    pub fn within(&self, now: Instant, window: Duration) -> Observation {
        let recent =
            |at: Option<Instant>| at.is_some_and(|at| now.saturating_duration_since(at) < window);
        Observation {
            icmp: recent(self.icmp),
            tcp: recent(self.tcp),
            sip: recent(self.sip),
        }
    }
}

/// A change of verdict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Verdict,
    pub to: Verdict,
    pub at: Instant,
    pub reason: String,
    /// The paths that answered within the last `down_after`.
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
    /// When the watch began: silence counts from there until the first answer.
    watching_since: Instant,
    last: LastAnswers,
    /// The start of the current run of SIP answers (no silence longer than [`Rules::gap`]).
    answering_since: Option<Instant>,
    counters: Counters,
}

impl Machine {
    pub fn new(rules: Rules, now: Instant) -> Machine {
        Machine {
            rules,
            verdict: Verdict::Unknown,
            since: now,
            watching_since: now,
            last: LastAnswers::default(),
            answering_since: None,
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

    pub fn last_answers(&self) -> LastAnswers {
        self.last
    }

    /// How long SIP has been silent at `now` (since the watch began, before any answer).
    pub fn sip_silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last.sip.unwrap_or(self.watching_since))
    }

    /// When SIP last answered, or when the watch began.
    pub fn sip_silent_since(&self) -> Instant {
        self.last.sip.unwrap_or(self.watching_since)
    }

    /// `path` answered at `at` (the arrival of the answer, however old its request).
    pub fn answered(&mut self, path: Path, at: Instant) {
        if path == Path::Sip {
            let continues = match (self.last.sip, self.answering_since) {
                (Some(previous), Some(_)) => {
                    at.saturating_duration_since(previous) <= self.rules.gap()
                }
                _ => false,
            };
            if !continues {
                self.answering_since = Some(at);
            }
        }
        let slot = self.last.slot(path);
        if slot.is_none_or(|previous| previous < at) {
            *slot = Some(at);
        }
    }

    /// Counts one round (the caller's slot of time) by what answered in it.
    pub fn count(&mut self, observation: Observation) {
        self.counters.rounds += 1;
        self.counters.icmp_silent += u64::from(!observation.icmp);
        self.counters.tcp_silent += u64::from(!observation.tcp);
        match observation.class() {
            RoundClass::Good => self.counters.good += 1,
            RoundClass::SipDead => self.counters.sip_dead += 1,
            RoundClass::HostDown => self.counters.host_down += 1,
        }
    }

    /// The earliest instant at which [`Machine::check`] could change the verdict if no answer
    /// comes meanwhile (`None`: only an answer can change it).
    pub fn deadline(&self) -> Option<Instant> {
        let down = (self.verdict != Verdict::Down)
            .then(|| self.sip_silent_since() + self.rules.down_after);
        let up = match (self.verdict, self.answering_since) {
            (Verdict::Up, _) | (_, None) => None,
            (Verdict::Unknown, Some(run)) => Some(run + self.rules.up_after),
            (Verdict::Down, Some(run)) => {
                Some((run + self.rules.up_after).max(self.since + self.rules.hold_down))
            }
        };
        match (down, up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The decision at `now`: returns the transition it makes, if any.
    pub fn check(&mut self, now: Instant) -> Option<Transition> {
        let silent = self.sip_silent_for(now);
        let window = self.rules.down_after;
        if self.verdict != Verdict::Down && silent >= window {
            let seen = self.last.within(now, window);
            // The host is judged on the last half of the window: a stopped host's kernel
            // answers a little longer than its Asterisk.
            let host = self.last.within(now, window / 2);
            let cause = if host.icmp || host.tcp {
                "Asterisk dead: the host answers but SIP does not"
            } else {
                "host down: no ICMP, TCP or SIP answer"
            };
            let reason = format!("no SIP answer for {:.1} s ({cause})", silent.as_secs_f64());
            self.answering_since = None;
            self.counters.to_down += 1;
            return Some(self.change(Verdict::Down, now, reason, seen));
        }
        if silent > self.rules.gap() {
            self.answering_since = None;
        }
        let run = self.answering_since?;
        let answering = now.saturating_duration_since(run);
        if self.verdict == Verdict::Up || answering < self.rules.up_after {
            return None;
        }
        let in_state = now.saturating_duration_since(self.since);
        if self.verdict == Verdict::Down && in_state < self.rules.hold_down {
            return None;
        }
        let reason = match self.verdict {
            Verdict::Down => format!(
                "SIP answering for {:.1} s, after {:.1} s down (hold-down {:.1} s)",
                answering.as_secs_f64(),
                in_state.as_secs_f64(),
                self.rules.hold_down.as_secs_f64()
            ),
            _ => format!("SIP answering for {:.1} s", answering.as_secs_f64()),
        };
        self.counters.to_up += 1;
        let seen = self.last.within(now, window);
        Some(self.change(Verdict::Up, now, reason, seen))
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

    const MS: Duration = Duration::from_millis(1);
    /// The defaults' cadences (see `settings`): SIP every 40 ms, ICMP every 200 ms, TCP every s.
    const SIP_EVERY: Duration = Duration::from_millis(40);
    const ICMP_EVERY: u32 = 5;
    const TCP_EVERY: u32 = 25;

    fn rules() -> Rules {
        Rules {
            down_after: Duration::from_millis(1200),
            up_after: Duration::from_secs(3),
            hold_down: Duration::from_secs(10),
        }
    }

    /// What the master does with one probe: `None` = lost (or dead), `Some(d)` = answered
    /// `d` after it was sent.
    type Fate = Option<Duration>;

    /// Drives `machine` over paused time, one SIP probe every [`SIP_EVERY`] (ICMP and TCP
    /// on their cadences), `fate` deciding each probe's answer for `(path, probe index)`; asks
    /// for a decision at every probe and at every answer, as the monitor's loop does. Returns
    /// the transitions with the time since the start of the replay.
    async fn replay(
        machine: &mut Machine,
        probes: u32,
        mut fate: impl FnMut(Path, u32) -> Fate,
    ) -> Vec<(Duration, Transition)> {
        let start = Instant::now();
        // Answers still on their way: (arrival, path).
        let mut in_flight: Vec<(Instant, Path)> = Vec::new();
        let mut transitions = Vec::new();
        for i in 0..probes {
            let sent = start + SIP_EVERY * i;
            let mut paths = vec![Path::Sip];
            if i % ICMP_EVERY == 0 {
                paths.push(Path::Icmp);
            }
            if i % TCP_EVERY == 0 {
                paths.push(Path::Tcp);
            }
            for path in paths {
                if let Some(delay) = fate(path, i) {
                    in_flight.push((sent + delay, path));
                }
            }
            in_flight.sort_by_key(|(at, _)| *at);
            let next = sent + SIP_EVERY;
            // Every answer that arrives before the next probe, and the deadlines between.
            loop {
                let answer = in_flight.first().map(|(at, _)| *at).filter(|at| *at < next);
                let deadline = machine.deadline().filter(|at| *at < next);
                let wake = match (answer, deadline) {
                    (Some(a), Some(d)) => a.min(d),
                    (a, d) => match a.or(d) {
                        Some(at) => at,
                        None => break,
                    },
                };
                tokio::time::sleep_until(wake.max(Instant::now())).await;
                if answer == Some(wake) {
                    let (at, path) = in_flight.remove(0);
                    machine.answered(path, at);
                }
                if let Some(t) = machine.check(Instant::now()) {
                    transitions.push((Instant::now() - start, t));
                }
            }
            tokio::time::sleep_until(next).await;
            if let Some(t) = machine.check(Instant::now()) {
                transitions.push((Instant::now() - start, t));
            }
        }
        transitions
    }

    /// Probes in `seconds` of replay.
    fn probes(seconds: f64) -> u32 {
        (seconds / SIP_EVERY.as_secs_f64()).round() as u32
    }

    fn alive(_: Path, _: u32) -> Fate {
        Some(MS)
    }

    fn dead(_: Path, _: u32) -> Fate {
        None
    }

    async fn up_machine() -> Machine {
        let mut machine = Machine::new(rules(), Instant::now());
        let t = replay(&mut machine, probes(3.5), alive).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!((t[0].1.from, t[0].1.to), (Verdict::Unknown, Verdict::Up));
        assert!(t[0].0 >= Duration::from_secs(3), "{t:?}");
        machine
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_master_is_down_when_sip_has_been_silent_for_the_window() {
        let mut machine = up_machine().await;
        let t = replay(&mut machine, probes(5.0), dead).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].1.to, Verdict::Down);
        // The last answer came 1 ms after the last probe of the previous replay, 40 ms before
        // this one began: down 1.2 s after it, to the millisecond (the deadline wakes us).
        assert_eq!(t[0].0 + SIP_EVERY - MS, rules().down_after, "{t:?}");
        assert!(t[0].1.reason.contains("host down"), "{}", t[0].1.reason);
        assert_eq!(t[0].1.evidence, Observation::default());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_master_that_never_answers_is_down_after_the_window() {
        let mut machine = Machine::new(rules(), Instant::now());
        let t = replay(&mut machine, probes(3.0), dead).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(
            (t[0].0, t[0].1.from, t[0].1.to),
            (rules().down_after, Verdict::Unknown, Verdict::Down)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn asterisk_dead_on_a_live_host_is_down_in_the_same_time() {
        let mut machine = up_machine().await;
        let sip_dead = |path: Path, _| (path != Path::Sip).then_some(MS);
        let t = replay(&mut machine, probes(3.0), sip_dead).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].0 + SIP_EVERY - MS, rules().down_after);
        assert!(t[0].1.reason.contains("Asterisk dead"), "{}", t[0].1.reason);
        assert!(t[0].1.evidence.icmp && t[0].1.evidence.tcp && !t[0].1.evidence.sip);
    }

    #[tokio::test(start_paused = true)]
    async fn icmp_and_tcp_blocked_but_sip_answering_is_up() {
        let mut machine = up_machine().await;
        let sip_only = |path: Path, _| (path == Path::Sip).then_some(MS);
        assert_eq!(replay(&mut machine, probes(60.0), sip_only).await, vec![]);
        assert_eq!(machine.verdict(), Verdict::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn silences_shorter_than_the_window_are_absorbed() {
        let mut machine = up_machine().await;
        // 1.1 s of silence every 2 s, for a minute.
        let t = replay(&mut machine, probes(60.0), |_, i| {
            ((i % 50) >= 28).then_some(MS)
        })
        .await;
        assert_eq!(t, vec![]);
        // 1.3 s is one too many.
        let t = replay(&mut machine, probes(3.0), |_, i| (i >= 33).then_some(MS)).await;
        assert_eq!(t.len(), 1, "{t:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn failback_waits_for_the_answering_time_and_the_hold_down() {
        let mut machine = up_machine().await;
        let down = replay(&mut machine, probes(1.5), dead).await;
        assert_eq!(down.len(), 1);
        let went_down = down[0].1.at;
        // The master comes back at once: 3 s of answers are not enough before 10 s down.
        let t = replay(&mut machine, probes(20.0), alive).await;
        assert_eq!(t.len(), 1, "{t:?}");
        let up = &t[0].1;
        assert_eq!(up.to, Verdict::Up);
        assert_eq!(up.at - went_down, rules().hold_down);
        assert!(up.reason.contains("hold-down"), "{}", up.reason);

        // Down a long time: the answering time alone decides.
        replay(&mut machine, probes(30.0), dead).await;
        let t = replay(&mut machine, probes(5.0), alive).await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(
            t[0].0 >= rules().up_after && t[0].0 < rules().up_after + 2 * SIP_EVERY,
            "{t:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_link_fails_over_once_and_does_not_bounce() {
        let mut machine = up_machine().await;
        // 2 s dead, 2 s alive, for ten minutes: down at the first dead spell, then the answers
        // never last the 3 s the way back asks: it stays down instead of bouncing.
        let t = replay(&mut machine, probes(600.0), |_, i| {
            ((i / 50) % 2 == 1).then_some(MS)
        })
        .await;
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].1.to, Verdict::Down);
    }

    /// One probe's fate through a link that drops `loss` of the packets each way.
    fn lossy(rng: &mut StdRng, loss: f64) -> Fate {
        (!rng.random_bool(loss) && !rng.random_bool(loss)).then_some(MS)
    }

    #[tokio::test(start_paused = true)]
    async fn thirty_percent_random_loss_both_ways_for_three_hours_never_flaps() {
        let mut rng = StdRng::seed_from_u64(0x0005_eed3);
        let mut machine = up_machine().await;
        let mut lost = 0u32;
        let t = replay(&mut machine, probes(3.0 * 3600.0), |path, _| {
            let fate = lossy(&mut rng, 0.30);
            lost += u32::from(path == Path::Sip && fate.is_none());
            fate
        })
        .await;
        assert!(
            lost > 100_000,
            "the model loses about half the probes ({lost})"
        );
        assert_eq!(t, vec![]);
        assert_eq!(machine.verdict(), Verdict::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_delayed_by_100_to_300_ms_and_reordered_never_flap() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut machine = up_machine().await;
        let t = replay(&mut machine, probes(600.0), |_, _| {
            Some(Duration::from_millis(rng.random_range(100..=300)))
        })
        .await;
        assert_eq!(t, vec![]);
        // Delay and 30 % loss together, for ten minutes more.
        let t = replay(&mut machine, probes(600.0), |_, _| {
            lossy(&mut rng, 0.30).map(|_| Duration::from_millis(rng.random_range(100..=300)))
        })
        .await;
        assert_eq!(t, vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn total_loss_after_random_loss_still_fails_over_within_the_window() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut machine = up_machine().await;
        let t = replay(&mut machine, probes(600.0), |_, _| lossy(&mut rng, 0.30)).await;
        assert_eq!(t, vec![]);
        let t = replay(&mut machine, probes(3.0), dead).await;
        assert_eq!(t.len(), 1, "{t:?}");
        // Down 1.2 s after the last answer, which came at most a few probes before the end.
        assert!(t[0].0 <= rules().down_after, "{t:?}");
    }

    #[test]
    fn observations_classify_as_documented() {
        let up = Observation {
            icmp: true,
            tcp: true,
            sip: true,
        };
        let sip_dead = Observation { sip: false, ..up };
        assert_eq!(up.class(), RoundClass::Good);
        assert_eq!(sip_dead.class(), RoundClass::SipDead);
        assert_eq!(Observation::default().class(), RoundClass::HostDown);
        let tcp_only = Observation {
            tcp: true,
            ..Observation::default()
        };
        assert_eq!(tcp_only.class(), RoundClass::SipDead);
    }
}
