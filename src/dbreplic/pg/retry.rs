//! Which [`ErrorKind`] a PostgreSQL error is, by SQLSTATE class: the decision itself is in
//! `dbreplic::retry`.

use crate::dbreplic::retry::ErrorKind;

pub fn classify(error: &tokio_postgres::Error) -> ErrorKind {
    let Some(db) = error.as_db_error() else {
        // I/O, closed connection, timeout: no answer from the server.
        return ErrorKind::Unavailable;
    };
    classify_sqlstate(db.code().code())
}

pub fn classify_sqlstate(code: &str) -> ErrorKind {
    match code {
        // too_many_connections
        "53300" => ErrorKind::Throttled,
        // admin_shutdown, crash_shutdown, cannot_connect_now: a restart is under way
        "57P01" | "57P02" | "57P03" => ErrorKind::Unavailable,
        _ => match &code[..2.min(code.len())] {
            // connection exceptions
            "08" => ErrorKind::Unavailable,
            // transaction rollback (serialization, deadlock), insufficient resources,
            // operator intervention, system errors
            "40" | "53" | "57" | "58" | "XX" => ErrorKind::Server,
            // data, integrity, authorisation, syntax or access (schema), invalid catalog:
            // the same statement would fail again
            "22" | "23" | "28" | "3D" | "42" => ErrorKind::Rejected,
            _ => ErrorKind::Server,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds() {
        assert_eq!(classify_sqlstate("57P01"), ErrorKind::Unavailable);
        assert_eq!(classify_sqlstate("08006"), ErrorKind::Unavailable);
        assert_eq!(classify_sqlstate("53300"), ErrorKind::Throttled);
        assert_eq!(classify_sqlstate("40001"), ErrorKind::Server);
        assert_eq!(classify_sqlstate("42501"), ErrorKind::Rejected);
        assert_eq!(classify_sqlstate("42P01"), ErrorKind::Rejected);
    }
}
