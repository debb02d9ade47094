//! The retry policy of DB Replic, as ONE exhaustive `match` from error kind to decision (the
//! wait itself is [`crate::backoff`]). `pg/retry.rs` and `es/retry.rs` only classify their
//! errors into an [`ErrorKind`]; what happens next is decided here.

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
    /// The origin belongs to another node (see `dbreplic::claim`): DB Replic must write
    /// nothing under it, in either sink.
    OriginClaimed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send again after the backoff.
    Retry,
    /// Stop this sink with the error; the other sink goes on.
    Stop,
    /// Stop DB Replic altogether: no sink may write.
    StopAll,
}

/// The policy: an exhaustive `match`, so that a new kind does not compile until it is given
/// a decision.
pub fn decide(kind: ErrorKind) -> Decision {
    match kind {
        ErrorKind::Source
        | ErrorKind::Unavailable
        | ErrorKind::Throttled
        | ErrorKind::Server
        | ErrorKind::ItemsFailed => Decision::Retry,
        ErrorKind::Rejected => Decision::Stop,
        ErrorKind::OriginClaimed => Decision::StopAll,
    }
}

/// The wait between attempts: the program's one backoff.
pub use crate::backoff::backoff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_rejection_or_a_claim_stops() {
        assert_eq!(decide(ErrorKind::Throttled), Decision::Retry);
        assert_eq!(decide(ErrorKind::ItemsFailed), Decision::Retry);
        assert_eq!(decide(ErrorKind::Rejected), Decision::Stop);
        assert_eq!(decide(ErrorKind::OriginClaimed), Decision::StopAll);
    }
}
