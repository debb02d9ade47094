//! The retry policy of DB Replic, as ONE table from error kind to decision, and the backoff
//! (exponential, with jitter, capped at 30 s). `pg/retry.rs` and `es/retry.rs` only classify
//! their errors into an [`ErrorKind`]; what happens next is decided here.

use std::time::Duration;

/// What went wrong, independent of the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The local XiVO database cannot be read (down, restarting).
    Source,
    /// Cannot connect, connection lost, timeout: the other side may come back.
    Unavailable,
    /// The other side says "too many requests" (HTTP 429, PostgreSQL too_many_connections).
    Throttled,
    /// A server-side failure that may pass (HTTP 5xx, PostgreSQL serialization or deadlock).
    Server,
    /// Some items of a `_bulk` request failed with a transient status (429, 5xx).
    ItemsFailed,
    /// The other side refuses the request itself (HTTP 4xx other than 429, a PostgreSQL
    /// permission or schema error): sending it again cannot succeed.
    Rejected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send again after the backoff.
    Retry,
    /// Stop this sink with the error; the other sink goes on.
    Stop,
}

/// The policy. Every kind appears once; `decide` reads it.
pub const POLICY: &[(ErrorKind, Decision)] = &[
    (ErrorKind::Source, Decision::Retry),
    (ErrorKind::Unavailable, Decision::Retry),
    (ErrorKind::Throttled, Decision::Retry),
    (ErrorKind::Server, Decision::Retry),
    (ErrorKind::ItemsFailed, Decision::Retry),
    (ErrorKind::Rejected, Decision::Stop),
];

pub fn decide(kind: ErrorKind) -> Decision {
    POLICY
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, d)| *d)
        .expect("every error kind is in the policy table")
}

/// The cap on any wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before attempt `attempt + 1` (attempt 0 is the first retry): `initial · 2^attempt`,
/// capped at 30 s, minus up to 20 % jitter so that the sinks do not retry in lockstep.
pub fn backoff(initial: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    let base = initial.saturating_mul(factor).min(MAX_BACKOFF);
    let jitter: f64 = rand::random_range(0.8..=1.0);
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_decision() {
        for kind in [
            ErrorKind::Source,
            ErrorKind::Unavailable,
            ErrorKind::Throttled,
            ErrorKind::Server,
            ErrorKind::ItemsFailed,
            ErrorKind::Rejected,
        ] {
            assert_eq!(POLICY.iter().filter(|(k, _)| *k == kind).count(), 1);
        }
        assert_eq!(decide(ErrorKind::Throttled), Decision::Retry);
        assert_eq!(decide(ErrorKind::Rejected), Decision::Stop);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let initial = Duration::from_millis(500);
        let first = backoff(initial, 0);
        assert!(
            first <= initial && first >= initial.mul_f64(0.8),
            "{first:?}"
        );
        let third = backoff(initial, 2);
        assert!(third >= Duration::from_millis(1600) && third <= Duration::from_secs(2));
        assert!(backoff(initial, 40) <= MAX_BACKOFF);
        assert!(backoff(initial, 40) >= MAX_BACKOFF.mul_f64(0.8));
    }
}
