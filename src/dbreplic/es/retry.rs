//! Which [`ErrorKind`] an Elasticsearch answer is: by HTTP status for a whole request, by item
//! status for the items of a `_bulk` answer. The decision itself is in `dbreplic::retry`.

use crate::dbreplic::retry::ErrorKind;

/// A whole request's status (only called for non-2xx).
pub fn classify_status(status: u16) -> ErrorKind {
    match status {
        429 => ErrorKind::Throttled,
        500..=599 => ErrorKind::Server,
        _ => ErrorKind::Rejected,
    }
}

/// One `_bulk` item's status (only called for failed items): 429 (queue full) and 5xx pass,
/// anything else (a mapping error, a 400) would fail again.
pub fn classify_item(status: u16) -> ErrorKind {
    match status {
        429 | 500..=599 => ErrorKind::ItemsFailed,
        _ => ErrorKind::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(classify_status(429), ErrorKind::Throttled);
        assert_eq!(classify_status(503), ErrorKind::Server);
        assert_eq!(classify_status(401), ErrorKind::Rejected);
        assert_eq!(classify_item(429), ErrorKind::ItemsFailed);
        assert_eq!(classify_item(400), ErrorKind::Rejected);
    }
}
