//! The Elasticsearch client (the `elasticsearch` crate over reqwest with rustls) and the calls
//! DB Replic makes: `PUT _index_template/<name>` at start, `_bulk` with the answer parsed item
//! by item; for the reconciliation, `_search` with a histogram aggregation and `_mget` without
//! sources; and the origin's claim document (`_create`, then `GET _doc` on a 409 conflict; see
//! `dbreplic::claim`).

use std::time::Duration;

use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::{
    BulkParts, CreateParts, Elasticsearch, GetParts, IndexParts, MgetParts, SearchParts,
};
use serde::Deserialize;
use serde_json::Value;

use super::retry::classify_status;
use crate::dbreplic::claim::{self, Claim, Claimant};
use crate::dbreplic::retry::ErrorKind;
use crate::dbreplic::settings;
use crate::dbreplic::sink::SinkError;

pub struct EsService {
    client: Elasticsearch,
    url: String,
}

/// One item of a `_bulk` answer.
#[derive(Debug, Deserialize)]
pub struct BulkItem {
    pub status: u16,
    #[serde(default)]
    pub error: Option<Value>,
}

/// An item of a `_bulk` answer: the result of its `index` action (other fields skipped).
#[derive(Debug, Deserialize)]
struct BulkResult {
    index: Option<BulkItem>,
}

#[derive(Debug, Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    errors: bool,
    items: Vec<BulkResult>,
}

impl EsService {
    pub fn new(settings: &settings::Elasticsearch) -> Result<EsService, SinkError> {
        let pool = SingleNodeConnectionPool::new(settings.url.clone());
        // No proxy: XiVO CC's Elasticsearch is on the local network, and a proxy taken from the
        // environment would send the reporting data somewhere else.
        let mut builder = TransportBuilder::new(pool)
            .disable_proxy()
            .timeout(Duration::from_secs(60));
        if let Some(user) = &settings.user {
            let password = settings
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            builder = builder.auth(Credentials::Basic(user.clone(), password));
        }
        let transport = builder.build().map_err(|e| {
            SinkError::new(
                ErrorKind::Rejected,
                format!(
                    "cannot set up the Elasticsearch client for {}: {e}",
                    settings.url
                ),
            )
        })?;
        Ok(EsService {
            client: Elasticsearch::new(transport),
            url: settings.url.to_string(),
        })
    }

    pub fn describe(&self) -> &str {
        &self.url
    }

    fn transport_error(&self, what: &str, e: elasticsearch::Error) -> SinkError {
        let kind = match e.status_code() {
            Some(status) => classify_status(status.as_u16()),
            None => ErrorKind::Unavailable,
        };
        SinkError::new(kind, format!("Elasticsearch {}: {what}: {e}", self.url))
    }

    async fn refused(
        &self,
        what: &str,
        response: elasticsearch::http::response::Response,
    ) -> SinkError {
        let status = response.status_code().as_u16();
        let mut body = response.text().await.unwrap_or_default();
        body.truncate(300);
        let kind = classify_status(status);
        let hint = match (kind, status) {
            (_, 401 | 403) => " (check ELASTICSEARCH_USER and ELASTICSEARCH_PASSWORD)",
            (ErrorKind::Rejected, _) => " (check ELASTICSEARCH and the index names)",
            _ => "",
        };
        SinkError::new(
            kind,
            format!(
                "Elasticsearch {}: {what}: HTTP {status}{hint}: {body}",
                self.url
            ),
        )
    }

    /// `GET /`: the cluster answers; returns its version.
    pub async fn info(&self) -> Result<String, SinkError> {
        let response = self
            .client
            .info()
            .send()
            .await
            .map_err(|e| self.transport_error("GET /", e))?;
        if !response.status_code().is_success() {
            return Err(self.refused("GET /", response).await);
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| self.transport_error("GET /", e))?;
        Ok(body
            .pointer("/version/number")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    /// Where the claim is kept, for messages.
    pub fn claim_store(&self) -> String {
        format!("Elasticsearch {} (index {})", self.url, claim::ES_INDEX)
    }

    fn claim_body(origin: &str, me: &Claimant) -> Value {
        serde_json::json!({
            "origin": origin,
            "node_id": me.node_id.as_str(),
            "hostname": me.hostname,
            "claimed_at": chrono::Utc::now(),
        })
    }

    /// The claim document of `origin` (`None`: none yet). Writes nothing.
    pub async fn read_claim(&self, origin: &str) -> Result<Option<Claim>, SinkError> {
        let what = format!("read the claim of origin {origin}");
        let id = claim::es_document_id(origin);
        let response = self
            .client
            .get(GetParts::IndexId(claim::ES_INDEX, &id))
            .send()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        match response.status_code().as_u16() {
            // No such document, or no claims index yet.
            404 => return Ok(None),
            200..=299 => {}
            _ => return Err(self.refused(&what, response).await),
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        if body.get("found") == Some(&Value::Bool(false)) {
            return Ok(None);
        }
        let source = body.get("_source").cloned().unwrap_or(Value::Null);
        serde_json::from_value(source).map(Some).map_err(|e| {
            SinkError::new(
                ErrorKind::Rejected,
                format!(
                    "{}: document {id} is not an origin claim ({e}): delete it, or run \
                     `xivo-ha db-replic --take-over-origin` on the node that owns the origin",
                    self.claim_store()
                ),
            )
        })
    }

    /// Claims `origin` for `me` unless it is claimed (`_create` only creates), then judges
    /// the claim that is there.
    pub async fn claim(&self, origin: &str, me: &Claimant) -> Result<(), SinkError> {
        if self.write_claim(origin, me, false).await? {
            return Ok(());
        }
        match self.read_claim(origin).await? {
            Some(found) => claim::judge(origin, &self.claim_store(), me, &found),
            None => Err(SinkError::new(
                ErrorKind::Server,
                format!(
                    "{}: origin {origin} was claimed, but its claim is gone",
                    self.claim_store()
                ),
            )),
        }
    }

    /// `--take-over-origin`: the claim document says `me`, whatever it said before.
    pub async fn take_over_claim(&self, origin: &str, me: &Claimant) -> Result<(), SinkError> {
        self.write_claim(origin, me, true).await.map(|_| ())
    }

    /// Writes `me`'s claim document: `_create` (false when it exists: 409
    /// `version_conflict_engine_exception`), or, to take over, `_doc` (replaces any).
    async fn write_claim(
        &self,
        origin: &str,
        me: &Claimant,
        take_over: bool,
    ) -> Result<bool, SinkError> {
        let what = format!("claim origin {origin}");
        let id = claim::es_document_id(origin);
        let body = Self::claim_body(origin, me);
        let request = if take_over {
            self.client
                .index(IndexParts::IndexId(claim::ES_INDEX, &id))
                .body(body)
                .send()
                .await
        } else {
            self.client
                .create(CreateParts::IndexId(claim::ES_INDEX, &id))
                .body(body)
                .send()
                .await
        };
        let response = request.map_err(|e| self.transport_error(&what, e))?;
        match response.status_code().as_u16() {
            200..=299 => Ok(true),
            409 if !take_over => Ok(false),
            _ => Err(self.refused(&what, response).await),
        }
    }

    pub async fn put_template(&self, name: &str, body: Value) -> Result<(), SinkError> {
        let what = format!("create index template {name}");
        let response = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(name))
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        if !response.status_code().is_success() {
            return Err(self.refused(&what, response).await);
        }
        Ok(())
    }

    /// Sends one `_bulk` request (`body` is NDJSON) and returns the status of each item, in
    /// request order; `expected` is the number of actions sent.
    pub async fn bulk(&self, body: Bytes, expected: usize) -> Result<Vec<BulkItem>, SinkError> {
        let response = self
            .client
            .bulk(BulkParts::None)
            .body(vec![body])
            .send()
            .await
            .map_err(|e| self.transport_error("_bulk", e))?;
        if !response.status_code().is_success() {
            return Err(self.refused("_bulk", response).await);
        }
        let answer: BulkAnswer = response.json().await.map_err(|e| {
            SinkError::new(
                ErrorKind::Server,
                format!("Elasticsearch {}: _bulk answer unreadable: {e}", self.url),
            )
        })?;
        if answer.items.len() != expected {
            return Err(SinkError::new(
                ErrorKind::Server,
                format!(
                    "Elasticsearch {}: _bulk answered {} items for {expected} actions",
                    self.url,
                    answer.items.len()
                ),
            ));
        }
        let items: Vec<BulkItem> = answer
            .items
            .into_iter()
            .map(|item| {
                item.index.unwrap_or(BulkItem {
                    status: 500,
                    error: Some(Value::String("no `index` result for this item".into())),
                })
            })
            .collect();
        if !answer.errors && items.iter().any(|i| i.status >= 300) {
            tracing::debug!("_bulk said errors=false but some items failed");
        }
        Ok(items)
    }

    /// This origin's documents in `index` with `id` ≤ `upto`, per bucket `id / width`:
    /// (documents, sum of ids). A missing index is empty.
    pub async fn id_histogram(
        &self,
        index: &str,
        origin: &str,
        width: i64,
        upto: i64,
    ) -> Result<crate::dbreplic::sink::Digest, SinkError> {
        let what = format!("count the documents of index {index}");
        let body = serde_json::json!({
            "size": 0,
            "query": {"bool": {"filter": [
                {"term": {"origin": origin}},
                {"range": {"id": {"lte": upto}}}
            ]}},
            "aggs": {"ids": {
                "histogram": {"field": "id", "interval": width, "min_doc_count": 1},
                "aggs": {"sum": {"sum": {"field": "id"}}}
            }}
        });
        let response = self
            .client
            .search(SearchParts::Index(&[index]))
            .ignore_unavailable(true)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        if response.status_code().as_u16() == 404 {
            return Ok(Default::default());
        }
        if !response.status_code().is_success() {
            return Err(self.refused(&what, response).await);
        }
        let answer: Value = response
            .json()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        let Some(buckets) = answer
            .pointer("/aggregations/ids/buckets")
            .and_then(Value::as_array)
        else {
            return Ok(Default::default());
        };
        let mut digest = crate::dbreplic::sink::Digest::new();
        for bucket in buckets {
            let key = bucket["key"].as_f64().unwrap_or(0.0);
            let count = bucket["doc_count"].as_i64().unwrap_or(0);
            let sum = bucket
                .pointer("/sum/value")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            digest.insert((key / width as f64).floor() as i64, (count, sum));
        }
        Ok(digest)
    }

    /// Whether each of the documents `ids` of `index` exists (real-time, unlike a search).
    pub async fn found(&self, index: &str, ids: &[String]) -> Result<Vec<bool>, SinkError> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            found: bool,
        }
        #[derive(Deserialize)]
        struct Answer {
            docs: Vec<Doc>,
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let what = format!("look up documents of index {index}");
        let response = self
            .client
            .mget(MgetParts::Index(index))
            ._source(&["false"])
            .body(serde_json::json!({"ids": ids}))
            .send()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        if response.status_code().as_u16() == 404 {
            return Ok(vec![false; ids.len()]);
        }
        if !response.status_code().is_success() {
            return Err(self.refused(&what, response).await);
        }
        let answer: Answer = response
            .json()
            .await
            .map_err(|e| self.transport_error(&what, e))?;
        if answer.docs.len() != ids.len() {
            return Err(SinkError::new(
                ErrorKind::Server,
                format!(
                    "Elasticsearch {}: {what}: {} answers for {} ids",
                    self.url,
                    answer.docs.len(),
                    ids.len()
                ),
            ));
        }
        Ok(answer.docs.into_iter().map(|d| d.found).collect())
    }
}
