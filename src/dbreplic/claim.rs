//! Who owns an origin. Every row DB Replic forwards is keyed by (origin, id), so two nodes
//! forwarding under one `DB_REPLIC_ORIGIN` (a `custom.env` copied from the other node) would
//! destroy each other's data: the second reads the first one's checkpoint and its rows are
//! dropped as duplicates in PostgreSQL, its documents overwrite the first one's in
//! Elasticsearch. So an origin belongs to the node that first claimed it, by this node's
//! identity ([`crate::node_id`]), which travels neither with a copied file nor with the
//! replication.
//!
//! The claim is kept in both sinks, so that a site that has only one of them still enforces
//! it: the reporting database's `dbreplic_origin_claim` table (see `pg::config`) and a document
//! `origin-claim-<origin>` of Elasticsearch index [`ES_INDEX`]. Each sink claims the origin
//! (create-if-absent, then read back) every time it starts, before any write; a claim by
//! another node stops the whole run ([`ErrorKind::OriginClaimed`]) with one line naming the
//! origin, both nodes and the fix. Before any sink starts, [`check_before_start`] reads the
//! claim of every sink that answers, so that a node refused by one sink never leaves a claim
//! of its own in the other. `xivo-ha db-replic --take-over-origin` ([`take_over`]) gives the
//! origin to this node in both, for a node that really replaces the old one.
//!
//! This file owns the decision ([`judge`]) and the message; the statements and requests are
//! in `pg::service` and `es::service`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::es::service::EsService;
use super::pg::service::PgService;
use super::retry::ErrorKind;
use super::settings::DbReplicSettings;
use super::sink::SinkError;
use crate::node_id::NodeId;

/// The Elasticsearch index of the claim documents (one per origin).
pub const ES_INDEX: &str = "xivo-ha-dbreplic-claims";

/// How long [`check_before_start`] waits for each sink.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The claim document's `_id`.
pub fn es_document_id(origin: &str) -> String {
    format!("origin-claim-{origin}")
}

/// This node, as it claims an origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    pub node_id: NodeId,
    pub hostname: String,
}

impl Claimant {
    pub fn new(node_id: NodeId) -> Claimant {
        Claimant {
            node_id,
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        }
    }
}

impl std::fmt::Display for Claimant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} (host {})", self.node_id, self.hostname)
    }
}

/// A claim as a sink keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    pub node_id: String,
    pub hostname: String,
    pub claimed_at: DateTime<Utc>,
}

/// `Ok` when `found` (the claim `store` holds for `origin`) is this node's; otherwise the
/// error that stops DB Replic.
pub fn judge(origin: &str, store: &str, me: &Claimant, found: &Claim) -> Result<(), SinkError> {
    if found.node_id == me.node_id.as_str() {
        return Ok(());
    }
    Err(SinkError::new(
        ErrorKind::OriginClaimed,
        conflict(origin, store, found, &me.to_string()),
    ))
}

/// The one line that says `origin` is another node's: both identities and the fix. `this`
/// describes this node (its [`Claimant`]).
pub fn conflict(origin: &str, store: &str, found: &Claim, this: &str) -> String {
    format!(
        "origin `{origin}` belongs to node {} (host {}, since {}) in {store}, and this is {this}: \
         give this node its own DB_REPLIC_ORIGIN in custom.env, or, if it replaces that node, \
         run `xivo-ha db-replic --take-over-origin` on it once",
        found.node_id,
        found.hostname,
        found.claimed_at.format("%Y-%m-%d %H:%M:%S UTC"),
    )
}

/// The claim of `settings.origin` as each sink keeps it, read within a few seconds (an error
/// for a sink that does not answer). Writes nothing.
pub async fn read_all(
    settings: &DbReplicSettings,
) -> Vec<(String, Result<Option<Claim>, SinkError>)> {
    let origin = &settings.origin;
    let timed_out = |store: &str| {
        SinkError::new(
            ErrorKind::Unavailable,
            format!("{store}: no answer within {CHECK_TIMEOUT:?}"),
        )
    };
    let pg = async {
        let mut service = PgService::new(settings.reporting.target());
        let store = service.claim_store();
        let found = tokio::time::timeout(CHECK_TIMEOUT, service.read_claim(origin))
            .await
            .unwrap_or_else(|_| Err(timed_out(&store)));
        (store, found)
    };
    let es = async {
        let service = EsService::new(&settings.elasticsearch)?;
        let store = service.claim_store();
        let found = tokio::time::timeout(CHECK_TIMEOUT, service.read_claim(origin))
            .await
            .unwrap_or_else(|_| Err(timed_out(&store)));
        Ok::<_, SinkError>((store, found))
    };
    let (pg, es) = tokio::join!(pg, es);
    let mut all = vec![pg];
    match es {
        Ok(es) => all.push(es),
        Err(e) => all.push(("Elasticsearch".into(), Err(e))),
    }
    all
}

/// Reads the claim of every sink that answers ([`read_all`]), and refuses when one belongs to
/// another node. Writes nothing; a sink that does not answer is skipped (it claims the origin
/// itself before its first write).
pub async fn check_before_start(
    settings: &DbReplicSettings,
    me: &Claimant,
) -> Result<(), SinkError> {
    for (store, found) in read_all(settings).await {
        match found {
            Ok(Some(found)) => judge(&settings.origin, &store, me, &found)?,
            Ok(None) => {}
            Err(e) => tracing::debug!("origin claim not checked in advance: {e}"),
        }
    }
    Ok(())
}

/// Gives `settings.origin` to this node in both sinks (`--take-over-origin`); returns where.
/// Both must answer: a claim left to the old node in one of them would stop this node later.
pub async fn take_over(
    settings: &DbReplicSettings,
    me: &Claimant,
) -> Result<Vec<String>, SinkError> {
    let origin = &settings.origin;
    let mut pg = PgService::new(settings.reporting.target()).claiming(origin.clone(), me.clone());
    pg.claim_origin(true).await?;
    let es = EsService::new(&settings.elasticsearch)?;
    es.take_over_claim(origin, me).await?;
    Ok(vec![pg.claim_store(), es.claim_store()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Claimant {
        Claimant {
            node_id: NodeId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            hostname: "xivo-b".into(),
        }
    }

    #[test]
    fn only_this_nodes_claim_passes() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T11:00:00Z")
            .unwrap()
            .to_utc();
        let mine = Claim {
            node_id: me().node_id.to_string(),
            hostname: "renamed".into(),
            claimed_at: at,
        };
        assert!(judge("xivo", "the reporting database", &me(), &mine).is_ok());
        let theirs = Claim {
            node_id: "ffffffffffffffffffffffffffffffff".into(),
            hostname: "xivo-a".into(),
            claimed_at: at,
        };
        let e = judge("xivo", "the reporting database h:5443/x", &me(), &theirs).unwrap_err();
        assert_eq!(e.kind, ErrorKind::OriginClaimed);
        let m = e.message;
        for part in [
            "origin `xivo`",
            "node ffffffffffffffffffffffffffffffff (host xivo-a, since 2026-12-01 11:00:00 UTC)",
            "node 0123456789abcdef0123456789abcdef (host xivo-b)",
            "DB_REPLIC_ORIGIN",
            "--take-over-origin",
        ] {
            assert!(m.contains(part), "{part} not in {m}");
        }
        assert!(!m.contains('\n'));
    }
}
