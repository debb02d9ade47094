//! The monitor's recent probe rounds, kept in memory for the dashboard's timeline: a bounded
//! ring of [`CAPACITY`] marks (10 minutes of the default 200 ms rounds), each a timestamp and a
//! bitset of the paths answering in that round, 8 bytes a round (24 KB in all). The monitor's loop pushes each round; the HTTP
//! endpoint reads a copy. Nothing is written to disk: after a restart the timeline starts empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};

use super::verdict::Observation;

/// Rounds kept: 10 minutes at the default 200 ms interval (fewer minutes at shorter intervals).
pub const CAPACITY: usize = 3000;

/// A probe path, as a row of the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbePath {
    Icmp,
    Tcp,
    Sip,
}

impl ProbePath {
    /// Every path, in the timeline's row order. (The witness, once the monitor probes one,
    /// is one more variant here with its bit, and one more line in [`Mark::of`].)
    pub const ALL: [ProbePath; 3] = [ProbePath::Icmp, ProbePath::Tcp, ProbePath::Sip];

    pub fn name(self) -> &'static str {
        match self {
            ProbePath::Icmp => "icmp",
            ProbePath::Tcp => "tcp",
            ProbePath::Sip => "sip",
        }
    }

    fn bit(self) -> u8 {
        match self {
            ProbePath::Icmp => 1,
            ProbePath::Tcp => 2,
            ProbePath::Sip => 4,
        }
    }
}

/// One round: when it ended and which paths answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    secs: u32,
    millis: u16,
    answered: u8,
}

impl Mark {
    /// The round `observation` saw, ended at `at`.
    pub fn of(at: DateTime<Utc>, observation: Observation) -> Mark {
        let mut answered = 0;
        for (path, ok) in [
            (ProbePath::Icmp, observation.icmp),
            (ProbePath::Tcp, observation.tcp),
            (ProbePath::Sip, observation.sip),
        ] {
            if ok {
                answered |= path.bit();
            }
        }
        Mark {
            secs: at.timestamp().clamp(0, u32::MAX as i64) as u32,
            millis: at.timestamp_subsec_millis().min(999) as u16,
            answered,
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.secs as i64, self.millis as u32 * 1_000_000)
            .single()
            .unwrap_or_default()
    }

    pub fn answered(&self, path: ProbePath) -> bool {
        self.answered & path.bit() != 0
    }
}

/// The shared ring (cloning shares it).
#[derive(Clone, Debug, Default)]
pub struct RoundLog {
    marks: Arc<Mutex<VecDeque<Mark>>>,
}

impl RoundLog {
    pub fn push(&self, mark: Mark) {
        let mut marks = self.marks.lock().expect("round log lock");
        if marks.len() == CAPACITY {
            marks.pop_front();
        }
        marks.push_back(mark);
    }

    /// The rounds kept, oldest first.
    pub fn snapshot(&self) -> Vec<Mark> {
        self.marks
            .lock()
            .expect("round log lock")
            .iter()
            .copied()
            .collect()
    }

    /// Forgets every round (a new master to watch).
    pub fn clear(&self) {
        self.marks.lock().expect("round log lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_rounds_in_a_few_kilobytes() {
        assert_eq!(std::mem::size_of::<Mark>(), 8);
        let log = RoundLog::default();
        let start: DateTime<Utc> = "2026-11-25T11:00:00.250Z".parse().unwrap();
        for i in 0..(CAPACITY + 5) {
            let seen = Observation {
                icmp: true,
                tcp: i % 2 == 0,
                sip: false,
            };
            log.push(Mark::of(start + chrono::Duration::seconds(i as i64), seen));
        }
        let marks = log.snapshot();
        assert_eq!(marks.len(), CAPACITY);
        assert_eq!(marks[0].at(), start + chrono::Duration::seconds(5));
        assert!(marks[0].answered(ProbePath::Icmp));
        assert!(!marks[0].answered(ProbePath::Tcp), "round 5 is odd");
        assert!(marks[1].answered(ProbePath::Tcp));
        assert!(!marks[1].answered(ProbePath::Sip));
        log.clear();
        assert!(log.snapshot().is_empty());
    }
}
