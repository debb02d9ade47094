//! The monitor's HTTP endpoint: `GET /status` (the JSON of `xivo-ha status --json`),
//! `GET /metrics` (Prometheus text format) and `GET /healthz` (200 while the monitor's loop
//! ticks). Everything it shows comes from the same state documents `status` reads, so the
//! figures survive a restart of the sidecar and never disagree with `status`.

mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;

use crate::paths::Paths;
use crate::status::Status;

/// Default listening address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9660";

/// `XIVO_HA_HTTP_LISTEN`: where the endpoint listens; empty turns it off.
#[derive(Clone, Debug, Deserialize)]
pub struct HttpSettings {
    #[serde(default = "default_listen")]
    pub http_listen: String,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            http_listen: default_listen(),
        }
    }
}

/// The monitor loop's proof of life: it calls [`Heartbeat::beat`] on every round.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    last_beat_ms: Arc<AtomicI64>,
    max_silence: Duration,
}

impl Heartbeat {
    /// A heartbeat that counts as alive while it beat less than `max_silence` ago.
    pub fn new(max_silence: Duration) -> Heartbeat {
        let heartbeat = Heartbeat {
            last_beat_ms: Arc::new(AtomicI64::new(0)),
            max_silence,
        };
        heartbeat.beat();
        heartbeat
    }

    pub fn beat(&self) {
        self.last_beat_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Milliseconds since the last beat.
    pub fn silence_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() - self.last_beat_ms.load(Ordering::Relaxed)
    }

    pub fn alive(&self) -> bool {
        self.silence_ms() <= self.max_silence.as_millis() as i64
    }
}

#[derive(Clone)]
struct AppState {
    paths: Paths,
    heartbeat: Heartbeat,
}

/// The router, for tests and for [`serve`].
pub fn router(paths: Paths, heartbeat: Heartbeat) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState { paths, heartbeat })
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    paths: Paths,
    heartbeat: Heartbeat,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(paths, heartbeat))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn status(State(state): State<AppState>) -> impl IntoResponse {
    match Status::gather(&state.paths) {
        Ok(status) => (StatusCode::OK, axum::Json(serde_json::to_value(status).expect("status serialises"))),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": e.to_string() })),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = metrics::render(&state.paths, &state.heartbeat);
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        body,
    )
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.heartbeat.alive() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the monitor loop has not run for {} ms\n", state.heartbeat.silence_ms()),
        )
    }
}
