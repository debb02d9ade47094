//! The Elasticsearch client (the `elasticsearch` crate over reqwest with rustls) and the two
//! calls DB Replic makes: `PUT _index_template/<name>` at start, and `_bulk` with the answer
//! parsed item by item.

use std::time::Duration;

use bytes::Bytes;
use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::{BulkParts, Elasticsearch};
use serde::Deserialize;
use serde_json::Value;

use super::retry::classify_status;
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

#[derive(Debug, Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    errors: bool,
    items: Vec<std::collections::HashMap<String, BulkItem>>,
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
            .map(|mut item| {
                item.remove("index").unwrap_or(BulkItem {
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
}
