//! An Elasticsearch stand-in for tests and the bench (no real cluster can run here): an HTTP
//! server on 127.0.0.1 that speaks the parts of the real protocol DB Replic uses, `_bulk`
//! (NDJSON action/source line pairs, `index` and `create` actions, per-item results with
//! `items[].index.status`/`error` and the top-level `errors` flag),
//! `PUT _index_template/<name>`, `<index>/_mget` (`ids` or `docs`, answering `found`) and
//! `<index>/_search` with a `bool` filter of `term`/`range` clauses and a `histogram`
//! aggregation (with an optional `sum` under it), which is what DB Replic's reconciliation
//! sends, and the single-document APIs (`PUT <index>/_create/<id>`, answered 409
//! `version_conflict_engine_exception` when the document exists; `PUT <index>/_doc/<id>`;
//! `GET <index>/_doc/<id>`, 404 with `found: false`, or `index_not_found_exception` without the
//! index); stores documents by `_index`/`_id`, and can be told to fail: `_bulk` requests with
//! 429 or 500, chosen items with an error status, slow answers, or "down" (every `_bulk` and
//! document request answered 503) until told otherwise.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

/// What the next `_bulk` request meets (one fault per request, in order).
#[derive(Clone, Debug)]
pub enum Fault {
    /// The whole request fails with this HTTP status.
    Status(u16),
    /// Every `every`-th item (1st, 1+every, ...) fails with `status`; the others are stored.
    ItemErrors { status: u16, every: usize },
    /// The answer comes after this delay (then the request is handled normally).
    Delay(Duration),
}

#[derive(Default)]
struct Index {
    /// `_id` → source (kept only when the server keeps sources).
    docs: HashMap<String, Option<Box<str>>>,
    /// Highest `id` field seen in a stored document (for lag measurements).
    max_id: i64,
}

struct Inner {
    keep_sources: bool,
    indices: Mutex<BTreeMap<String, Index>>,
    templates: Mutex<BTreeMap<String, Value>>,
    faults: Mutex<VecDeque<Fault>>,
    down: AtomicBool,
    /// Stored `index` operations, counting overwrites.
    index_ops: AtomicU64,
    bulk_requests: AtomicU64,
    failed_requests: AtomicU64,
    failed_items: AtomicU64,
}

pub struct EsServer {
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EsServer {
    /// Starts a server that keeps every document's source.
    pub async fn start() -> EsServer {
        EsServer::start_with(true).await
    }

    /// `keep_sources: false` keeps only the ids (for a million-document bench).
    pub async fn start_with(keep_sources: bool) -> EsServer {
        let inner = Arc::new(Inner {
            keep_sources,
            indices: Mutex::default(),
            templates: Mutex::default(),
            faults: Mutex::default(),
            down: AtomicBool::new(false),
            index_ops: AtomicU64::new(0),
            bulk_requests: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            failed_items: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/", axum::routing::get(info))
            .route("/_bulk", post(bulk).put(bulk))
            .route("/{index}/_bulk", post(bulk_in_index).put(bulk_in_index))
            .route("/{index}/_mget", post(mget).get(mget))
            .route("/{index}/_search", post(search).get(search))
            .route(
                "/_index_template/{name}",
                put(put_template).post(put_template),
            )
            .route(
                "/{index}/_create/{id}",
                put(put_document::<true>).post(put_document::<true>),
            )
            .route(
                "/{index}/_doc/{id}",
                get(get_document)
                    .put(put_document::<false>)
                    .post(put_document::<false>),
            )
            .layer(DefaultBodyLimit::max(200 * 1024 * 1024))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("test ES server runs");
        });
        EsServer { url, inner, task }
    }

    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.faults.lock().unwrap().extend(faults);
    }

    pub fn faults_left(&self) -> usize {
        self.inner.faults.lock().unwrap().len()
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// The indices holding documents.
    pub fn indices(&self) -> Vec<String> {
        self.inner.indices.lock().unwrap().keys().cloned().collect()
    }

    /// The `_id`s stored in `index`.
    pub fn ids(&self, index: &str) -> Vec<String> {
        let indices = self.inner.indices.lock().unwrap();
        indices
            .get(index)
            .map(|i| i.docs.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn count(&self, index: &str) -> usize {
        let indices = self.inner.indices.lock().unwrap();
        indices.get(index).map(|i| i.docs.len()).unwrap_or(0)
    }

    /// Deletes a document (a sink that lost one).
    pub fn remove(&self, index: &str, id: &str) -> bool {
        let mut indices = self.inner.indices.lock().unwrap();
        indices
            .get_mut(index)
            .is_some_and(|i| i.docs.remove(id).is_some())
    }

    pub fn max_id(&self, index: &str) -> i64 {
        let indices = self.inner.indices.lock().unwrap();
        indices.get(index).map(|i| i.max_id).unwrap_or(0)
    }

    pub fn source(&self, index: &str, id: &str) -> Option<Value> {
        let indices = self.inner.indices.lock().unwrap();
        let doc = indices.get(index)?.docs.get(id)?.as_deref()?;
        serde_json::from_str(doc).ok()
    }

    pub fn template(&self, name: &str) -> Option<Value> {
        self.inner.templates.lock().unwrap().get(name).cloned()
    }

    pub fn index_ops(&self) -> u64 {
        self.inner.index_ops.load(Ordering::SeqCst)
    }

    pub fn bulk_requests(&self) -> u64 {
        self.inner.bulk_requests.load(Ordering::SeqCst)
    }

    pub fn failed_requests(&self) -> u64 {
        self.inner.failed_requests.load(Ordering::SeqCst)
    }

    pub fn failed_items(&self) -> u64 {
        self.inner.failed_items.load(Ordering::SeqCst)
    }
}

async fn info() -> Response {
    axum::Json(json!({
        "name": "xivo-ha-test",
        "cluster_name": "test",
        "version": {"number": "8.19.0"},
        "tagline": "You Know, for Search"
    }))
    .into_response()
}

fn error(status: u16, kind: &str, reason: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(json!({
            "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
            "status": status.as_u16()
        })),
    )
        .into_response()
}

async fn put_template(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "parse_exception", "request body is not JSON");
    };
    if value.get("index_patterns").is_none() {
        return error(
            400,
            "action_request_validation_exception",
            "index patterns are missing",
        );
    }
    inner.templates.lock().unwrap().insert(name, value);
    axum::Json(json!({"acknowledged": true})).into_response()
}

/// 503 while the server is "down", as a cluster whose state is not recovered answers.
fn unavailable(inner: &Inner) -> Option<Response> {
    inner.down.load(Ordering::SeqCst).then(|| {
        error(
            503,
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered]",
        )
    })
}

/// `PUT <index>/_create/<id>` (`create_only`) and `PUT <index>/_doc/<id>`.
fn write_document(
    inner: &Inner,
    index: String,
    id: String,
    body: &Bytes,
    create_only: bool,
) -> Response {
    if let Some(down) = unavailable(inner) {
        return down;
    }
    let Some(text) = std::str::from_utf8(body)
        .ok()
        .filter(|t| serde_json::from_str::<serde_json::Map<String, Value>>(t).is_ok())
    else {
        return error(
            400,
            "mapper_parsing_exception",
            "failed to parse: the document is not a JSON object",
        );
    };
    let mut indices = inner.indices.lock().unwrap();
    let stored = indices.entry(index.clone()).or_default();
    if create_only && stored.docs.contains_key(&id) {
        return error(
            409,
            "version_conflict_engine_exception",
            &format!("[{id}]: version conflict, document already exists (current version [1])"),
        );
    }
    // Single documents keep their source even in a server that keeps only ids.
    let created = stored.docs.insert(id.clone(), Some(text.into())).is_none();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        axum::Json(json!({
            "_index": index, "_id": id, "_version": 1,
            "result": if created { "created" } else { "updated" },
            "_shards": {"total": 1, "successful": 1, "failed": 0}
        })),
    )
        .into_response()
}

/// `_create/{id}` (`CREATE_ONLY`: refused when the document exists) and `_doc/{id}`.
async fn put_document<const CREATE_ONLY: bool>(
    State(inner): State<Arc<Inner>>,
    Path((index, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    write_document(&inner, index, id, &body, CREATE_ONLY)
}

async fn get_document(
    State(inner): State<Arc<Inner>>,
    Path((index, id)): Path<(String, String)>,
) -> Response {
    if let Some(down) = unavailable(&inner) {
        return down;
    }
    let indices = inner.indices.lock().unwrap();
    let Some(stored) = indices.get(&index) else {
        return error(
            404,
            "index_not_found_exception",
            &format!("no such index [{index}]"),
        );
    };
    match stored.docs.get(&id) {
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"_index": index, "_id": id, "found": false})),
        )
            .into_response(),
        Some(source) => {
            let source: Value = source
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null);
            axum::Json(json!({
                "_index": index, "_id": id, "_version": 1, "_seq_no": 0, "_primary_term": 1,
                "found": true, "_source": source
            }))
            .into_response()
        }
    }
}

/// What the server reads of a `_bulk` document: its `id` (for lag measurements). The rest is
/// only checked to be a JSON object, without building it (the sources are stored as sent).
#[derive(serde::Deserialize)]
struct DocumentHead {
    #[serde(default)]
    id: Option<Value>,
}

async fn bulk(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    handle_bulk(inner, None, body).await
}

async fn bulk_in_index(
    State(inner): State<Arc<Inner>>,
    Path(index): Path<String>,
    body: Bytes,
) -> Response {
    handle_bulk(inner, Some(index), body).await
}

async fn handle_bulk(inner: Arc<Inner>, default_index: Option<String>, body: Bytes) -> Response {
    inner.bulk_requests.fetch_add(1, Ordering::SeqCst);
    let fault = inner.faults.lock().unwrap().pop_front();
    let mut item_fault = None;
    match fault {
        Some(Fault::Status(status)) => {
            inner.failed_requests.fetch_add(1, Ordering::SeqCst);
            return match status {
                429 => error(
                    429,
                    "es_rejected_execution_exception",
                    "rejected execution (queue capacity reached)",
                ),
                s => error(s, "test_fault", "injected failure"),
            };
        }
        Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::ItemErrors { status, every }) => item_fault = Some((status, every.max(1))),
        None => {}
    }
    if let Some(down) = unavailable(&inner) {
        inner.failed_requests.fetch_add(1, Ordering::SeqCst);
        return down;
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(400, "parse_exception", "body is not UTF-8");
    };
    if !text.is_empty() && !text.ends_with('\n') {
        return error(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    // Parsed before the lock is taken, so that concurrent requests parse side by side, as a
    // real cluster's nodes do.
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let mut actions = Vec::new();
    while let Some(action_line) = lines.next() {
        let Ok(action) = serde_json::from_str::<Value>(action_line) else {
            return error(400, "x_content_parse_exception", "malformed action line");
        };
        let Some((op, meta)) = action.as_object().and_then(|o| o.iter().next()) else {
            return error(400, "illegal_argument_exception", "empty action");
        };
        if op != "index" && op != "create" {
            return error(
                400,
                "illegal_argument_exception",
                &format!("action [{op}] is not supported by the test server"),
            );
        }
        let Some(source_line) = lines.next() else {
            return error(
                400,
                "illegal_argument_exception",
                "the bulk request must end with a source line",
            );
        };
        let Ok(source) = serde_json::from_str::<DocumentHead>(source_line) else {
            return error(400, "x_content_parse_exception", "malformed source line");
        };
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| default_index.clone());
        let (Some(index), Some(id)) = (index, meta.get("_id").and_then(Value::as_str)) else {
            return error(
                400,
                "action_request_validation_exception",
                "index and _id are required by the test server",
            );
        };
        let number = source.id.as_ref().and_then(Value::as_i64);
        actions.push((op.clone(), index, id.to_owned(), number, source_line));
    }
    let mut items = Vec::new();
    let mut errors = false;
    let mut indices = inner.indices.lock().unwrap();
    for (position, (op, index, id, number, source_line)) in actions.into_iter().enumerate() {
        let failing = item_fault.filter(|(_, every)| position.is_multiple_of(*every));
        if let Some((status, _)) = failing {
            errors = true;
            inner.failed_items.fetch_add(1, Ordering::SeqCst);
            items.push(json!({op: {
                "_index": index, "_id": id, "status": status,
                "error": {"type": "es_rejected_execution_exception", "reason": "injected item failure"}
            }}));
            continue;
        }
        let stored = indices.entry(index.clone()).or_default();
        if op == "create" && stored.docs.contains_key(&id) {
            errors = true;
            items.push(json!({op: {
                "_index": index, "_id": id, "status": 409,
                "error": {"type": "version_conflict_engine_exception", "reason": "document already exists"}
            }}));
            continue;
        }
        if let Some(n) = number {
            stored.max_id = stored.max_id.max(n);
        }
        let doc = inner.keep_sources.then(|| source_line.into());
        let created = stored.docs.insert(id.clone(), doc).is_none();
        inner.index_ops.fetch_add(1, Ordering::SeqCst);
        items.push(json!({op: {
            "_index": index, "_id": id, "_version": 1,
            "result": if created { "created" } else { "updated" },
            "status": if created { 201 } else { 200 }
        }}));
    }
    drop(indices);
    axum::Json(json!({"took": 1, "errors": errors, "items": items})).into_response()
}

async fn mget(State(inner): State<Arc<Inner>>, Path(index): Path<String>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "parse_exception", "request body is not JSON");
    };
    let ids: Vec<String> = match (request.get("ids"), request.get("docs")) {
        (Some(Value::Array(ids)), _) => ids
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        (_, Some(Value::Array(docs))) => docs
            .iter()
            .filter_map(|d| d.get("_id").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        _ => {
            return error(
                400,
                "action_request_validation_exception",
                "no documents to get",
            );
        }
    };
    let indices = inner.indices.lock().unwrap();
    let stored = indices.get(&index);
    let docs: Vec<Value> = ids
        .iter()
        .map(|id| {
            let found = stored.is_some_and(|i| i.docs.contains_key(id));
            json!({"_index": index, "_id": id, "found": found})
        })
        .collect();
    axum::Json(json!({ "docs": docs })).into_response()
}

/// Whether `doc` passes one `term` or `range` clause.
fn matches(clause: &Value, doc: &Value) -> Result<bool, String> {
    let (kind, spec) = clause
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or("empty clause")?;
    let (field, condition) = spec
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or("empty clause")?;
    let value = doc.get(field);
    match kind.as_str() {
        "term" => {
            let wanted = condition.get("value").unwrap_or(condition);
            Ok(value == Some(wanted))
        }
        "range" => {
            let Some(v) = value.and_then(Value::as_f64) else {
                return Ok(false);
            };
            let mut ok = true;
            for (op, bound) in condition.as_object().ok_or("bad range")? {
                let b = bound.as_f64().ok_or("range bounds must be numbers")?;
                ok &= match op.as_str() {
                    "lte" => v <= b,
                    "lt" => v < b,
                    "gte" => v >= b,
                    "gt" => v > b,
                    other => return Err(format!("range operator {other} is not supported")),
                };
            }
            Ok(ok)
        }
        other => Err(format!(
            "query [{other}] is not supported by the test server"
        )),
    }
}

async fn search(
    State(inner): State<Arc<Inner>>,
    Path(index): Path<String>,
    body: Bytes,
) -> Response {
    if !inner.keep_sources {
        return error(
            400,
            "illegal_argument_exception",
            "this test server keeps no sources: start it with EsServer::start() to search",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "parse_exception", "request body is not JSON");
    };
    let filters: Vec<Value> = match request.pointer("/query/bool/filter") {
        None => Vec::new(),
        Some(Value::Array(clauses)) => clauses.clone(),
        Some(clause) => vec![clause.clone()],
    };
    let indices = inner.indices.lock().unwrap();
    let mut hits = Vec::new();
    for doc in indices
        .get(&index)
        .into_iter()
        .flat_map(|i| i.docs.values())
    {
        let Some(doc) = doc
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
        else {
            continue;
        };
        let mut keep = true;
        for clause in &filters {
            match matches(clause, &doc) {
                Ok(ok) => keep &= ok,
                Err(reason) => return error(400, "parsing_exception", &reason),
            }
        }
        if keep {
            hits.push(doc);
        }
    }
    drop(indices);
    let mut aggregations = serde_json::Map::new();
    for (name, agg) in request
        .get("aggs")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(histogram) = agg.get("histogram") else {
            return error(
                400,
                "parsing_exception",
                "only histogram aggregations are supported by the test server",
            );
        };
        let (Some(field), Some(interval)) = (
            histogram.get("field").and_then(Value::as_str),
            histogram.get("interval").and_then(Value::as_f64),
        ) else {
            return error(
                400,
                "parsing_exception",
                "histogram needs field and interval",
            );
        };
        let sums: Vec<(String, String)> = agg
            .get("aggs")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(sub, spec)| {
                let field = spec.pointer("/sum/field")?.as_str()?;
                Some((sub.clone(), field.to_owned()))
            })
            .collect();
        // key → (documents, sums per sub-aggregation)
        let mut buckets: BTreeMap<i64, (u64, Vec<f64>)> = BTreeMap::new();
        for doc in &hits {
            let Some(v) = doc.get(field).and_then(Value::as_f64) else {
                continue;
            };
            let key = (v / interval).floor() as i64;
            let entry = buckets
                .entry(key)
                .or_insert_with(|| (0, vec![0.0; sums.len()]));
            entry.0 += 1;
            for (slot, (_, sum_field)) in entry.1.iter_mut().zip(&sums) {
                *slot += doc.get(sum_field).and_then(Value::as_f64).unwrap_or(0.0);
            }
        }
        let buckets: Vec<Value> = buckets
            .into_iter()
            .map(|(key, (count, values))| {
                let mut bucket = serde_json::Map::new();
                bucket.insert("key".into(), json!(key as f64 * interval));
                bucket.insert("doc_count".into(), json!(count));
                for ((sub, _), value) in sums.iter().zip(values) {
                    bucket.insert(sub.clone(), json!({ "value": value }));
                }
                Value::Object(bucket)
            })
            .collect();
        aggregations.insert(name.clone(), json!({ "buckets": buckets }));
    }
    axum::Json(json!({
        "took": 1,
        "timed_out": false,
        "hits": {"total": {"value": hits.len(), "relation": "eq"}, "hits": []},
        "aggregations": aggregations
    }))
    .into_response()
}
