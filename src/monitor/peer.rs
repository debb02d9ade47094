//! What the slave is doing, seen from the master: a pure state machine over the master's probe
//! rounds of its slave (one [`Prober`](super::probe::Prober) round of ICMP, TCP and SIP every
//! [`ROUND_EVERY`], whatever the slave's own cadence). The slave's Asterisk answers SIP only
//! while the slave serves, so:
//! - a round where SIP answered counts towards `active` (a failover is in progress);
//! - a round where the host answered (ICMP or TCP) but SIP did not counts towards `standby`;
//! - a round where nothing answered (slave down, network cut) counts towards neither and breaks
//!   both streaks: an unreachable slave keeps its last known state, so that a master cut off
//!   from an active slave never takes it for standby.
//!
//! The slave is `active` after `active_after` consecutive answering rounds and `standby` after
//! `standby_after` consecutive silent rounds on a live host ([`PeerRules::spanning`]: as many
//! rounds as the slave's `XIVO_HA_MONITOR_DOWN_AFTER_MS` and `_UP_AFTER_MS` hold). `active` → `standby` is the
//! failback: the master counts it, and its job runner acts on it. No I/O and no clock: the
//! caller passes each round's observation and time.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::verdict::{Observation, RoundClass};

/// The slave's state as the master sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Not enough rounds yet (or the slave was unreachable since the monitor started).
    #[default]
    Unknown,
    /// The slave's Asterisk is silent: the master serves, the slave waits.
    Standby,
    /// The slave's Asterisk answers: the slave serves calls.
    Active,
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerState::Unknown => "unknown",
            PeerState::Standby => "standby",
            PeerState::Active => "active",
        })
    }
}

/// Time between the starts of two of the master's rounds of its slave: telling standby from
/// active needs no 200 ms rounds, and each round connects to the slave's PostgreSQL.
pub const ROUND_EVERY: Duration = Duration::from_secs(1);

/// The hysteresis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRules {
    pub active_after: u32,
    pub standby_after: u32,
}

impl PeerRules {
    /// `active` once SIP answered for `active` (the slave's own failover decision,
    /// `XIVO_HA_MONITOR_DOWN_AFTER_MS`) and `standby` once it was silent for `standby`
    /// (`XIVO_HA_MONITOR_UP_AFTER_MS`), in rounds of [`ROUND_EVERY`] rounded up, at least one.
    pub fn spanning(active: Duration, standby: Duration) -> PeerRules {
        let rounds = |span: Duration| {
            let rounds = span.as_millis().div_ceil(ROUND_EVERY.as_millis());
            u32::try_from(rounds).unwrap_or(u32::MAX).max(1)
        };
        PeerRules {
            active_after: rounds(active),
            standby_after: rounds(standby),
        }
    }
}

/// What the master knows of its slave, for its state document (`peer` in `monitor.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub state: PeerState,
    /// When the current state was decided (`None` while unknown).
    pub since: Option<DateTime<Utc>>,
    /// The last round where the slave's SIP answered, and the last where it was silent.
    pub last_answer_at: Option<DateTime<Utc>>,
    pub last_silence_at: Option<DateTime<Utc>>,
    /// Whether the last round reached the slave's host at all.
    pub reachable: bool,
    /// Failbacks seen (active → standby) since the monitor started.
    pub failbacks: u64,
}

/// A change of the slave's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerChange {
    pub from: PeerState,
    pub to: PeerState,
    pub streak: u32,
}

impl PeerChange {
    /// The slave went back to standby after serving: the failback is done.
    pub fn is_failback(&self) -> bool {
        self.from == PeerState::Active && self.to == PeerState::Standby
    }
}

/// The state machine.
#[derive(Clone, Debug)]
pub struct PeerWatch {
    rules: PeerRules,
    status: PeerStatus,
    answers: u32,
    silences: u32,
}

impl PeerWatch {
    pub fn new(address: IpAddr, rules: PeerRules) -> PeerWatch {
        PeerWatch {
            rules,
            status: PeerStatus {
                address,
                state: PeerState::Unknown,
                since: None,
                last_answer_at: None,
                last_silence_at: None,
                reachable: false,
                failbacks: 0,
            },
            answers: 0,
            silences: 0,
        }
    }

    pub fn state(&self) -> PeerState {
        self.status.state
    }

    pub fn status(&self) -> &PeerStatus {
        &self.status
    }

    /// Takes one round's observation at `now`; returns the change it caused, if any.
    pub fn observe(&mut self, now: DateTime<Utc>, observation: Observation) -> Option<PeerChange> {
        let class = observation.class();
        self.status.reachable = class != RoundClass::HostDown;
        match class {
            RoundClass::Good => {
                self.answers = self.answers.saturating_add(1);
                self.silences = 0;
                self.status.last_answer_at = Some(now);
            }
            RoundClass::SipDead => {
                self.silences = self.silences.saturating_add(1);
                self.answers = 0;
                self.status.last_silence_at = Some(now);
            }
            RoundClass::HostDown => {
                self.answers = 0;
                self.silences = 0;
            }
        }
        let (to, streak) = if self.answers >= self.rules.active_after {
            (PeerState::Active, self.answers)
        } else if self.silences >= self.rules.standby_after {
            (PeerState::Standby, self.silences)
        } else {
            return None;
        };
        let from = self.status.state;
        if from == to {
            return None;
        }
        self.status.state = to;
        self.status.since = Some(now);
        let change = PeerChange { from, to, streak };
        if change.is_failback() {
            self.status.failbacks += 1;
        }
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: PeerRules = PeerRules {
        active_after: 3,
        standby_after: 5,
    };

    fn round(sip: bool, host: bool) -> Observation {
        Observation {
            icmp: host,
            tcp: host,
            sip,
        }
    }

    /// Feeds `rounds` [`ROUND_EVERY`] apart from `start`; returns the changes with their round
    /// index.
    fn feed(watch: &mut PeerWatch, start: i64, rounds: &[Observation]) -> Vec<(i64, PeerChange)> {
        let t0: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        rounds
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let at = start + i as i64;
                let every = chrono::Duration::from_std(ROUND_EVERY).unwrap();
                watch.observe(t0 + every * at as i32, *o).map(|c| (at, c))
            })
            .collect()
    }

    #[test]
    fn the_rules_are_the_slaves_windows_in_rounds_of_a_second() {
        let ms = Duration::from_millis;
        // The defaults: 1.2 s of answers, 3 s of silence.
        assert_eq!(
            PeerRules::spanning(ms(1200), ms(3000)),
            PeerRules {
                active_after: 2,
                standby_after: 3
            }
        );
        // The windows of 3 and 5 rounds of a second, before they were times.
        assert_eq!(PeerRules::spanning(ms(3000), ms(5000)), RULES);
        // Shorter than a round: one round.
        assert_eq!(
            PeerRules::spanning(ms(400), ms(600)),
            PeerRules {
                active_after: 1,
                standby_after: 1
            }
        );
    }

    #[test]
    fn answers_make_it_active_silences_on_a_live_host_standby_and_that_is_the_failback() {
        let mut watch = PeerWatch::new("127.0.0.1".parse().unwrap(), RULES);
        let silent = round(false, true);
        let answering = round(true, true);
        let changes = feed(&mut watch, 0, &[silent; 5]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, 4, "standby after the fifth silent round");
        assert_eq!(changes[0].1.from, PeerState::Unknown);
        assert!(
            !changes[0].1.is_failback(),
            "a first decision is no failback"
        );

        // Two answers, then a silence: a blip, not a failover.
        assert!(feed(&mut watch, 5, &[answering, answering, silent]).is_empty());
        let changes = feed(&mut watch, 8, &[answering; 3]);
        assert_eq!(changes[0].0, 10);
        assert_eq!(changes[0].1.to, PeerState::Active);
        assert_eq!(watch.status().last_answer_at.unwrap().timestamp() % 100, 10);

        // Four silences are not enough; the fifth is the failback.
        let changes = feed(&mut watch, 11, &[silent; 5]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, 15);
        assert!(changes[0].1.is_failback());
        assert_eq!(watch.status().failbacks, 1);
        assert_eq!(watch.state(), PeerState::Standby);
    }

    #[test]
    fn an_unreachable_slave_keeps_its_last_state() {
        let mut watch = PeerWatch::new("127.0.0.1".parse().unwrap(), RULES);
        let down = round(false, false);
        assert!(feed(&mut watch, 0, &[down; 20]).is_empty());
        assert_eq!(watch.state(), PeerState::Unknown);
        assert!(!watch.status().reachable);
        feed(&mut watch, 20, &[round(true, true); 3]);
        assert_eq!(watch.state(), PeerState::Active);
        // The network is cut: silence everywhere is no failback.
        assert!(feed(&mut watch, 23, &[down; 50]).is_empty());
        assert_eq!(watch.state(), PeerState::Active);
        // Unreachable rounds break a streak of silences.
        let mixed = [
            round(false, true),
            round(false, true),
            down,
            round(false, true),
        ];
        assert!(feed(&mut watch, 73, &mixed).is_empty());
        assert_eq!(watch.state(), PeerState::Active);
    }
}
