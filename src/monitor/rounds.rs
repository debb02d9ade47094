//! The monitor's recent probe rounds, kept in memory for the dashboard's timeline, as runs:
//! consecutive rounds that saw the same thing (the same paths answering, the witness asked or
//! not and its answer) are one [`Run`] (16 bytes: when it began, how long it lasted, how many
//! rounds). The memory follows the changes, not the round length: a steady master is one run
//! whether rounds come every second or every 300 ms. Runs older than [`WINDOW`] behind the
//! newest round are forgotten, and at most [`RUNS_KEPT`] are kept (a master flapping every
//! round): a few KB at most. The monitor's loop pushes each round ([`Mark`]); the HTTP endpoint
//! reads a copy. Nothing is written to disk: after a restart the timeline starts empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::verdict::Observation;

/// How far back the timeline goes.
pub const WINDOW: Duration = Duration::from_secs(600);

/// Runs kept at most: 8 KB.
pub const RUNS_KEPT: usize = 512;

/// The longest pause between two rounds of one run when the log is made with
/// [`RoundLog::default`]; the monitor makes its own from its interval and timeouts.
pub const DEFAULT_MAX_GAP: Duration = Duration::from_secs(3);

/// A row of the timeline: a probe path, or the witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbePath {
    Icmp,
    Tcp,
    Sip,
    /// The witnesses, asked only before a takeover: most rounds do not ask them.
    Witness,
}

impl ProbePath {
    /// Every row, in the timeline's order.
    pub const ALL: [ProbePath; 4] = [
        ProbePath::Icmp,
        ProbePath::Tcp,
        ProbePath::Sip,
        ProbePath::Witness,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProbePath::Icmp => "icmp",
            ProbePath::Tcp => "tcp",
            ProbePath::Sip => "sip",
            ProbePath::Witness => "witness",
        }
    }

    fn bit(self) -> u8 {
        match self {
            ProbePath::Icmp => 1,
            ProbePath::Tcp => 2,
            ProbePath::Sip => 4,
            ProbePath::Witness => 8,
        }
    }
}

/// The witness row's "asked in this round" bit (the answer is [`ProbePath::Witness`]'s bit).
const WITNESS_ASKED: u8 = 16;
/// A run that began right after the previous one (no gap in the rounds between them).
const FOLLOWS: u8 = 128;
/// The bits that make two rounds the same.
const SEEN: u8 = 1 | 2 | 4 | 8 | WITNESS_ASKED;

/// What a row shows for a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Answered,
    Silent,
    /// The witness was not asked in that round (never for a probe path).
    NotAsked,
}

/// One round: when it ended and what answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    at_ms: i64,
    seen: u8,
}

impl Mark {
    /// The round `observation` saw, ended at `at`; `witness` is what the witnesses said when
    /// they were asked in that round (`Some(true)`: one answered), `None` when not asked.
    pub fn of(at: DateTime<Utc>, observation: Observation, witness: Option<bool>) -> Mark {
        let mut seen = 0;
        for (path, ok) in [
            (ProbePath::Icmp, observation.icmp),
            (ProbePath::Tcp, observation.tcp),
            (ProbePath::Sip, observation.sip),
            (ProbePath::Witness, witness == Some(true)),
        ] {
            if ok {
                seen |= path.bit();
            }
        }
        if witness.is_some() {
            seen |= WITNESS_ASKED;
        }
        Mark {
            at_ms: at.timestamp_millis(),
            seen,
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        at_ms(self.at_ms)
    }
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Consecutive rounds that saw the same thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Seconds and milliseconds of the first round's end (u32 seconds: until 2106).
    first_s: u32,
    first_ms: u16,
    seen: u8,
    /// From the first round's end to the last's.
    span_ms: u32,
    rounds: u32,
}

impl Run {
    fn of(mark: Mark, follows: bool) -> Run {
        Run {
            first_s: (mark.at_ms.div_euclid(1000)).clamp(0, u32::MAX as i64) as u32,
            first_ms: mark.at_ms.rem_euclid(1000) as u16,
            seen: mark.seen | if follows { FOLLOWS } else { 0 },
            span_ms: 0,
            rounds: 1,
        }
    }

    fn first_ms(&self) -> i64 {
        self.first_s as i64 * 1000 + self.first_ms as i64
    }

    fn last_ms(&self) -> i64 {
        self.first_ms() + self.span_ms as i64
    }

    /// When its first round ended.
    pub fn first(&self) -> DateTime<Utc> {
        at_ms(self.first_ms())
    }

    /// When its last round ended.
    pub fn last(&self) -> DateTime<Utc> {
        at_ms(self.last_ms())
    }

    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The mean time between its rounds (`None` for a run of one round).
    pub fn period(&self) -> Option<chrono::Duration> {
        (self.rounds > 1)
            .then(|| chrono::Duration::milliseconds(self.span_ms as i64 / (self.rounds - 1) as i64))
    }

    /// It began right after the previous run: no gap in the rounds between the two.
    pub fn follows_previous(&self) -> bool {
        self.seen & FOLLOWS != 0
    }

    /// What `path` saw in its rounds.
    pub fn seen(&self, path: ProbePath) -> Seen {
        if path == ProbePath::Witness && self.seen & WITNESS_ASKED == 0 {
            Seen::NotAsked
        } else if self.seen & path.bit() != 0 {
            Seen::Answered
        } else {
            Seen::Silent
        }
    }
}

#[derive(Debug)]
struct Runs {
    runs: VecDeque<Run>,
    max_gap_ms: i64,
}

/// The shared log of runs (cloning shares it).
#[derive(Clone, Debug)]
pub struct RoundLog {
    inner: Arc<Mutex<Runs>>,
}

impl Default for RoundLog {
    fn default() -> Self {
        RoundLog::new(DEFAULT_MAX_GAP)
    }
}

impl RoundLog {
    /// A log where rounds more than `max_gap` apart are a gap in the timeline (the monitor's
    /// loop did not run), never one run.
    pub fn new(max_gap: Duration) -> RoundLog {
        RoundLog {
            inner: Arc::new(Mutex::new(Runs {
                runs: VecDeque::new(),
                max_gap_ms: max_gap.as_millis() as i64,
            })),
        }
    }

    pub fn push(&self, mark: Mark) {
        let mut inner = self.inner.lock().expect("round log lock");
        let max_gap = inner.max_gap_ms;
        let follows = match inner.runs.back_mut() {
            Some(last) => {
                let gap = mark.at_ms - last.last_ms();
                let follows = (0..=max_gap).contains(&gap);
                if follows && last.seen & SEEN == mark.seen {
                    last.span_ms = (mark.at_ms - last.first_ms()).clamp(0, u32::MAX as i64) as u32;
                    last.rounds = last.rounds.saturating_add(1);
                    None
                } else {
                    Some(follows)
                }
            }
            None => Some(false),
        };
        if let Some(follows) = follows {
            if inner.runs.len() == RUNS_KEPT {
                inner.runs.pop_front();
            }
            inner.runs.push_back(Run::of(mark, follows));
        }
        let horizon = mark.at_ms - WINDOW.as_millis() as i64;
        while inner.runs.front().is_some_and(|r| r.last_ms() < horizon) {
            inner.runs.pop_front();
        }
    }

    /// The runs kept, oldest first.
    pub fn snapshot(&self) -> Vec<Run> {
        self.inner
            .lock()
            .expect("round log lock")
            .runs
            .iter()
            .copied()
            .collect()
    }

    /// Forgets every round (a new master to watch).
    pub fn clear(&self) {
        self.inner.lock().expect("round log lock").runs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(icmp: bool, tcp: bool, sip: bool) -> Observation {
        Observation { icmp, tcp, sip }
    }

    #[test]
    fn rounds_that_saw_the_same_are_one_run_whatever_the_round_length() {
        assert_eq!(std::mem::size_of::<Run>(), 16);
        let log = RoundLog::new(Duration::from_secs(1));
        let start: DateTime<Utc> = "2026-11-25T11:00:00.250Z".parse().unwrap();
        let at = |ms: i64| start + chrono::Duration::milliseconds(ms);
        // Ten minutes of 300 ms rounds, the master up: one run.
        for i in 0..2000 {
            log.push(Mark::of(at(i * 300), seen(true, true, true), None));
        }
        let runs = log.snapshot();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].rounds(), 2000);
        assert_eq!(runs[0].first(), start);
        assert_eq!(runs[0].last(), at(1999 * 300));
        assert_eq!(runs[0].period(), Some(chrono::Duration::milliseconds(300)));
        assert_eq!(runs[0].seen(ProbePath::Sip), Seen::Answered);
        assert_eq!(runs[0].seen(ProbePath::Witness), Seen::NotAsked);

        // SIP falls silent, the witness is asked and answers: each change is a run.
        let t = 2000 * 300;
        log.push(Mark::of(at(t), seen(true, true, false), None));
        log.push(Mark::of(at(t + 300), seen(true, true, false), Some(true)));
        log.push(Mark::of(at(t + 600), seen(true, true, false), Some(true)));
        log.push(Mark::of(
            at(t + 900),
            seen(false, false, false),
            Some(false),
        ));
        let runs = log.snapshot();
        assert_eq!(runs.len(), 4, "{runs:?}");
        assert_eq!(runs[1].seen(ProbePath::Sip), Seen::Silent);
        assert_eq!(runs[1].seen(ProbePath::Tcp), Seen::Answered);
        assert_eq!(runs[2].rounds(), 2);
        assert_eq!(runs[2].seen(ProbePath::Witness), Seen::Answered);
        assert_eq!(runs[3].seen(ProbePath::Witness), Seen::Silent);
        assert_eq!(runs[3].seen(ProbePath::Icmp), Seen::Silent);
        assert!(runs[1..].iter().all(Run::follows_previous));
        assert!(!runs[0].follows_previous());

        // A pause longer than the gap starts a run that does not follow, even seeing the same.
        log.push(Mark::of(
            at(t + 5000),
            seen(false, false, false),
            Some(false),
        ));
        let runs = log.snapshot();
        assert_eq!(runs.len(), 5);
        assert!(!runs[4].follows_previous());

        // Ten minutes on, the older runs are forgotten.
        log.push(Mark::of(
            at(t + 5000 + 601_000),
            seen(false, false, false),
            Some(false),
        ));
        assert_eq!(log.snapshot().len(), 1);
        log.clear();
        assert!(log.snapshot().is_empty());
    }

    #[test]
    fn a_master_flapping_every_round_keeps_a_bounded_log() {
        let log = RoundLog::default();
        let start: DateTime<Utc> = "2026-11-25T11:00:00Z".parse().unwrap();
        for i in 0..2000 {
            let up = i % 2 == 0;
            log.push(Mark::of(
                start + chrono::Duration::milliseconds(i * 300),
                seen(up, up, up),
                None,
            ));
        }
        let runs = log.snapshot();
        assert_eq!(runs.len(), RUNS_KEPT);
        assert_eq!(
            runs.last().unwrap().last(),
            start + chrono::Duration::milliseconds(1999 * 300)
        );
    }
}
