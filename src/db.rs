//! Connections to PostgreSQL with tokio-postgres. A URL (`postgresql://user@host/db`) or a
//! libpq key/value string (`host=/var/run/postgresql user=postgres dbname=asterisk`) names the
//! database; `sslmode=require` turns on TLS (rustls, verified against the web PKI roots plus
//! the CA file in `XIVO_HA_PG_CA_FILE`). Passwords never reach a log line or an error message.

use std::str::FromStr;
use std::sync::Arc;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};

/// XiVO's configuration database, as XiVO's own tools reach it.
pub const DEFAULT_CONFIG_DB: &str = "host=/var/run/postgresql user=postgres dbname=asterisk";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "the {purpose} database setting is not a valid PostgreSQL URL or key=value string: {reason}"
    )]
    BadUrl { purpose: String, reason: String },
    #[error("cannot connect to the {purpose} database ({target}): {reason}{}", hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    Connect {
        purpose: String,
        target: String,
        reason: String,
        /// What to do, when the cause says it ([`connect_hint`]); else the caller's own hint.
        hint: Option<String>,
    },
    #[error("cannot read the CA file {path} given by XIVO_HA_PG_CA_FILE: {reason}")]
    CaFile { path: String, reason: String },
    #[error("{purpose} database ({target}): {reason}")]
    Query {
        purpose: String,
        target: String,
        reason: String,
    },
}

/// A parsed database setting and a name for it in messages.
#[derive(Clone, Debug)]
pub struct DbTarget {
    pub purpose: String,
    pub config: Config,
}

impl DbTarget {
    pub fn parse(purpose: &str, url: &str) -> Result<DbTarget, DbError> {
        let config = Config::from_str(url).map_err(|e| DbError::BadUrl {
            purpose: purpose.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(DbTarget {
            purpose: purpose.to_owned(),
            config,
        })
    }

    /// `user@host:port/dbname`, without the password: safe for messages and logs.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let host = match c.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            c.get_user().unwrap_or("postgres"),
            c.get_dbname().unwrap_or("postgres")
        )
    }

    /// An error about a query on this database.
    pub fn query_error(&self, reason: impl std::fmt::Display) -> DbError {
        DbError::Query {
            purpose: self.purpose.clone(),
            target: self.describe(),
            reason: reason.to_string(),
        }
    }

    /// Opens a connection; its driver task runs on the current tokio runtime.
    pub async fn connect(&self) -> Result<Client, DbError> {
        let connect_error = |e: tokio_postgres::Error| DbError::Connect {
            purpose: self.purpose.clone(),
            target: self.describe(),
            reason: error_reason(&e),
            hint: connect_hint(&e, &self.config),
        };
        let client = if self.config.get_ssl_mode() == SslMode::Require {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config()?);
            let (client, connection) = self.config.connect(tls).await.map_err(connect_error)?;
            spawn_driver(connection, self.describe());
            client
        } else {
            let (client, connection) = self.config.connect(NoTls).await.map_err(connect_error)?;
            spawn_driver(connection, self.describe());
            client
        };
        Ok(client)
    }
}

fn spawn_driver<F>(connection: F, target: String)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%target, error = %e, "database connection closed");
        }
    });
}

impl DbError {
    /// The specific hint of a failed connection, when its cause gave one.
    pub fn connect_hint(&self) -> Option<&str> {
        match self {
            DbError::Connect { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

/// What to do about a failed connection when its cause says it: no route to the address, or a
/// role without CONNECT on the database. `None` for the others (refused, timed out, refused by
/// pg_hba.conf, ...), where the caller's hint about the address and pg_hba.conf applies.
fn connect_hint(error: &tokio_postgres::Error, config: &Config) -> Option<String> {
    if let Some(db) = error.as_db_error() {
        if *db.code() != tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE {
            return None;
        }
        let user = config.get_user().unwrap_or("postgres");
        let dbname = config.get_dbname().unwrap_or(user);
        return Some(format!(
            "the role `{user}` lacks the CONNECT privilege on database `{dbname}`: on that server, \
             GRANT CONNECT ON DATABASE \"{dbname}\" TO \"{user}\""
        ));
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{HostUnreachable, NetworkUnreachable};
            if matches!(io.kind(), NetworkUnreachable | HostUnreachable) {
                return Some(
                    "this node has no route to that address: check the address and this node's \
                     routes (`ip route get <address>`)"
                        .to_owned(),
                );
            }
        }
        source = cause.source();
    }
    None
}

/// The most specific reason tokio-postgres gives: the server's message when there is one.
pub fn error_reason(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db.message().to_owned();
    }
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    reason
}

/// `XIVO_HA_PG_CA_FILE` as the command resolved it (environment over site file), set once at
/// start-up by the command line.
static CA_FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Trusts `path`'s certificates (PEM) for PostgreSQL over TLS, in addition to the web roots.
/// The first call wins; without one, `XIVO_HA_PG_CA_FILE` is read from the environment.
pub fn trust_ca_file(path: Option<std::path::PathBuf>) {
    let _ = CA_FILE.set(path);
}

fn ca_file() -> Option<String> {
    match CA_FILE.get() {
        Some(path) => path.as_ref().map(|p| p.display().to_string()),
        None => std::env::var("XIVO_HA_PG_CA_FILE").ok(),
    }
}

fn tls_config() -> Result<rustls::ClientConfig, DbError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file() {
        let ca_error = |reason: String| DbError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(&path).map_err(|e| ca_error(e.to_string()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_never_show_the_password() {
        let target = DbTarget::parse(
            "slave",
            "postgresql://replicator:s3cret@10.0.0.2:5433/asterisk",
        )
        .unwrap();
        assert_eq!(target.describe(), "replicator@10.0.0.2:5433/asterisk");
        let error = DbTarget::parse("slave", "postgresql://u:s3cret@host:notaport/db").unwrap_err();
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn the_default_is_xivos_local_socket() {
        let target = DbTarget::parse("configuration", DEFAULT_CONFIG_DB).unwrap();
        assert_eq!(
            target.describe(),
            "postgres@/var/run/postgresql:5432/asterisk"
        );
    }
}
