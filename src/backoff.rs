//! The one backoff between retries of the whole program (the slave's services keeper, DB
//! Replic's sinks and source): `initial` doubling at each attempt, capped at 30 s, minus up to
//! 20 % jitter so that retries do not run in lockstep. The jitter is taken off the capped value,
//! so that no wait ever exceeds the cap.

use std::time::Duration;

/// The cap on any wait between attempts, jitter included.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The share of the wait that jitter may take off.
const JITTER: f64 = 0.2;

/// The wait before attempt `attempt + 1` (attempt 0 is the first retry): `initial · 2^attempt`
/// capped at [`MAX_BACKOFF`], times a random factor in [0.8, 1.0].
pub fn backoff(initial: Duration, attempt: u32) -> Duration {
    let factor: f64 = rand::random_range((1.0 - JITTER)..=1.0);
    jittered(initial, attempt, factor)
}

/// [`backoff`] with the jitter factor given (the decision, apart from the randomness).
fn jittered(initial: Duration, attempt: u32, factor: f64) -> Duration {
    let doubled = initial.saturating_mul(2u32.saturating_pow(attempt.min(20)));
    doubled
        .min(MAX_BACKOFF)
        .mul_f64(factor.clamp(1.0 - JITTER, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF_SECOND: Duration = Duration::from_millis(500);

    #[test]
    fn doubles_from_the_initial_wait() {
        assert_eq!(jittered(HALF_SECOND, 0, 1.0), HALF_SECOND);
        assert_eq!(jittered(HALF_SECOND, 1, 1.0), Duration::from_secs(1));
        assert_eq!(jittered(HALF_SECOND, 2, 1.0), Duration::from_secs(2));
        assert_eq!(jittered(HALF_SECOND, 5, 1.0), Duration::from_secs(16));
    }

    #[test]
    fn jitter_only_shortens_the_wait() {
        assert_eq!(jittered(HALF_SECOND, 0, 0.8), Duration::from_millis(400));
        assert_eq!(jittered(HALF_SECOND, 0, 0.5), Duration::from_millis(400));
        assert_eq!(jittered(HALF_SECOND, 0, 1.5), HALF_SECOND);
        for _ in 0..100 {
            let wait = backoff(HALF_SECOND, 2);
            assert!(
                wait >= Duration::from_millis(1600) && wait <= Duration::from_secs(2),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn never_more_than_thirty_seconds_jitter_included() {
        assert_eq!(jittered(HALF_SECOND, 6, 1.0), MAX_BACKOFF);
        assert_eq!(jittered(HALF_SECOND, u32::MAX, 1.0), MAX_BACKOFF);
        assert_eq!(jittered(Duration::MAX, 3, 1.0), MAX_BACKOFF);
        assert_eq!(jittered(HALF_SECOND, 40, 0.8), Duration::from_secs(24));
        for attempt in 0..64 {
            assert!(backoff(HALF_SECOND, attempt) <= MAX_BACKOFF);
        }
    }
}
