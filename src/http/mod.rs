//! The monitor's HTTP endpoint: `GET /` (the dashboard page, [`dashboard`], headline in
//! [`headline`]), `GET /status` (the JSON of `xivo-ha status --json`),
//! `GET /metrics` (Prometheus text format) and `GET /healthz` (200 while the monitor's loop
//! ticks). Everything it shows comes from the same state documents `status` reads, so the
//! figures survive a restart of the sidecar and never disagree with `status`; the page adds
//! the monitor's recent probe rounds, held in memory ([`RoundLog`]).

pub mod dashboard;
pub mod headline;
mod metrics;
pub mod problems;
pub mod timeline;

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

use crate::monitor::rounds::RoundLog;
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
    rounds: RoundLog,
}

/// The router, for tests and for [`serve`]; `rounds` is the monitor's (see
/// [`crate::monitor::Monitor::with_rounds`]).
pub fn router(paths: Paths, heartbeat: Heartbeat, rounds: RoundLog) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState {
            paths,
            heartbeat,
            rounds,
        })
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    paths: Paths,
    heartbeat: Heartbeat,
    rounds: RoundLog,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(paths, heartbeat, rounds))
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
    #[error(
        "XIVO_HA_HTTP_LISTEN: `{0}` is not an address:port (e.g. 127.0.0.1:9660), nor empty to turn the endpoint off"
    )]
    BadAddress(String),
    #[error(
        "cannot listen on {address} (XIVO_HA_HTTP_LISTEN): {source}: pick a free port or leave it empty"
    )]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The running endpoint.
pub struct Running {
    pub address: std::net::SocketAddr,
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Ok(Err(e)) = self.task.await {
            tracing::warn!("HTTP endpoint: {e}");
        }
    }
}

/// Starts the endpoint where `XIVO_HA_HTTP_LISTEN` says (default loopback); `None` when empty
/// or when the address cannot be bound (logged).
pub async fn start(
    env: &crate::settings::EnvFile,
    paths: &Paths,
    heartbeat: Heartbeat,
    rounds: RoundLog,
) -> Result<Option<Running>, HttpError> {
    let settings: HttpSettings = crate::settings::from_env("XIVO_HA_", env)?;
    let listen = settings.http_listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let address: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| HttpError::BadAddress(listen.to_owned()))?;
    // A busy port must not keep the monitor from protecting the telephony: say it, go on.
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(source) => {
            tracing::error!(
                "{}; the monitor runs without it",
                HttpError::Bind { address, source }
            );
            return Ok(None);
        }
    };
    let address = listener.local_addr().unwrap_or(address);
    let cancel = tokio_util::sync::CancellationToken::new();
    let stopped = cancel.clone();
    let paths = paths.clone();
    let task = tokio::spawn(async move {
        serve(listener, paths, heartbeat, rounds, async move {
            stopped.cancelled().await
        })
        .await
    });
    tracing::info!(
        "HTTP dashboard, status and metrics on http://{address}/ (/, /status, /metrics, /healthz)"
    );
    Ok(Some(Running {
        address,
        cancel,
        task,
    }))
}

async fn page(State(state): State<AppState>) -> impl IntoResponse {
    let now = chrono::Utc::now();
    let (code, body) = match Status::gather(&state.paths) {
        Ok(status) => (
            StatusCode::OK,
            dashboard::render(&status, &state.rounds.snapshot(), now),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            dashboard::render_error(&e.error.to_string()),
        ),
    };
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

async fn status(State(state): State<AppState>) -> impl IntoResponse {
    match Status::gather(&state.paths) {
        Ok(status) => (
            StatusCode::OK,
            axum::Json(serde_json::to_value(status).expect("status serialises")),
        ),
        Err(unreadable) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::to_value(unreadable).expect("status serialises")),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = metrics::render(&state.paths, &state.heartbeat);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.heartbeat.alive() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the monitor loop has not run for {} ms\n",
                state.heartbeat.silence_ms()
            ),
        )
    }
}
