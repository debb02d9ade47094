//! [`Throttle`]: a warning that would repeat on every round of a loop (a state file that cannot
//! be written) logged the first time, then at most once per interval, saying how many times it
//! recurred meanwhile. Time is tokio's, so that tests can pause it.

use std::fmt::Display;
use std::time::Duration;

use tokio::time::Instant;

/// One recurring warning and when it was last logged.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    /// Occurrences not logged since the last line.
    quiet: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            quiet: 0,
        }
    }

    /// One more occurrence at `now`: `Some(n)` when it is to be logged, `n` being the
    /// occurrences left unlogged since the previous line; `None` to stay quiet.
    pub fn occurred(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.quiet += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.quiet))
            }
        }
    }

    /// Logs `message` as a WARN the first time and then at most once per interval.
    pub fn warn(&mut self, message: impl Display) {
        match self.occurred(Instant::now()) {
            Some(0) => tracing::warn!("{message}"),
            Some(quiet) => tracing::warn!("{message} ({quiet} more times since the last warning)"),
            None => {}
        }
    }

    /// The condition is gone: its next occurrence is logged at once.
    pub fn clear(&mut self) {
        self.last = None;
        self.quiet = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_then_at_most_once_per_interval() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut throttle = Throttle::new(Duration::from_secs(600));
        assert_eq!(throttle.occurred(at(0)), Some(0));
        assert_eq!(throttle.occurred(at(1)), None);
        assert_eq!(throttle.occurred(at(599)), None);
        assert_eq!(throttle.occurred(at(600)), Some(2));
        assert_eq!(throttle.occurred(at(601)), None);
        throttle.clear();
        assert_eq!(throttle.occurred(at(602)), Some(0));
    }
}
