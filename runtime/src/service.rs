//! The HTTP endpoints every service mounts: `GET /health` (liveness), `GET /ready` (readiness
//! checks registered by the service), `GET /metrics` (Prometheus text exposition).
//!
//! | route | 200 | 503 |
//! |---|---|---|
//! | `/health` | the process runs | — |
//! | `/ready` | every registered check passed within its deadline | a check failed or timed out; the body names it |
//! | `/metrics` | Prometheus text format 0.0.4 | — |
//!
//! Nodes add their own routes by merging another `Router` into [`router`]'s result, and serve
//! them with [`serve`] (HTTP/1.1 with a header deadline and a connection bound).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::metrics::names;

/// Deadline of one readiness check.
pub const READINESS_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync;
type Checks = Vec<(&'static str, Arc<CheckFn>)>;

/// The readiness checks of one service. Cheap to clone; clones share the checks.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<RwLock<Checks>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.read().iter().map(|(name, _)| *name).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

/// A readiness flag the service flips (e.g. "streams validated", "not draining").
#[derive(Clone, Debug)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    /// Sets the flag.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Reads the flag.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    /// Check name.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of every check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadinessReport {
    /// True when every check passed.
    pub ready: bool,
    /// Each check's result, in registration order.
    pub checks: Vec<CheckReport>,
}

impl Readiness {
    /// An empty set of checks (ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an async check; it fails on `Err` or when it exceeds
    /// [`READINESS_CHECK_TIMEOUT`].
    pub fn register<F, Fut>(&self, name: &'static str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let f: Arc<CheckFn> = Arc::new(move || Box::pin(check()));
        // The failure counter exists (at 0) from the moment the check does.
        metrics::counter!(crate::metrics::names::READINESS_CHECK_FAILURES, "check" => name)
            .increment(0);
        self.write().push((name, f));
    }

    /// Registers a flag, initially `initial`; the check passes while the flag is set.
    pub fn flag(&self, name: &'static str, initial: bool) -> ReadyFlag {
        let flag = ReadyFlag(Arc::new(AtomicBool::new(initial)));
        let probe = flag.clone();
        self.register(name, move || {
            let ok = probe.get();
            async move { if ok { Ok(()) } else { Err("not set".into()) } }
        });
        flag
    }

    /// Registers "the NATS client is connected".
    pub fn nats(&self, client: async_nats::Client) {
        self.register("nats", move || {
            let state = client.connection_state();
            async move {
                match state {
                    async_nats::connection::State::Connected => Ok(()),
                    other => Err(format!("nats connection is {other}")),
                }
            }
        });
    }

    /// Registers "JetStream answers": an info request to each of `streams` (answered by the
    /// stream's leader), so a node whose server is frozen, restarting or without a stream
    /// leader is not ready even while its TCP connection is up — and is ready again only once
    /// it can append and consume. While the client knows its connection is down the check fails
    /// at once, without a request that would only wait out the check's deadline.
    pub fn jetstream(&self, js: async_nats::jetstream::Context, streams: &'static [&'static str]) {
        self.register("jetstream", move || {
            let js = js.clone();
            async move {
                if let Some(state) = crate::nats::not_connected(&js) {
                    return Err(format!("not asked: the nats connection is {state}"));
                }
                for name in streams {
                    js.get_stream(*name)
                        .await
                        .map_err(|e| format!("stream {name}: {e}"))?;
                }
                Ok(())
            }
        });
    }

    /// Runs every check concurrently, each under its deadline.
    pub async fn evaluate(&self) -> ReadinessReport {
        let checks: Vec<_> = self.read().clone();
        let results = futures::future::join_all(checks.into_iter().map(|(name, f)| async move {
            let outcome = match tokio::time::timeout(READINESS_CHECK_TIMEOUT, f()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("timed out after {READINESS_CHECK_TIMEOUT:?}")),
            };
            if outcome.is_some() {
                metrics::counter!(names::READINESS_CHECK_FAILURES, "check" => name).increment(1);
            }
            CheckReport {
                name,
                ok: outcome.is_none(),
                error: outcome,
            }
        }))
        .await;
        ReadinessReport {
            ready: results.iter().all(|c| c.ok),
            checks: results,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Checks> {
        // A poisoned lock only means a registering thread panicked; the list is still valid.
        self.checks.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Checks> {
        self.checks.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// State of the service endpoints.
#[derive(Clone)]
pub struct ServiceEndpoints {
    /// Readiness checks.
    pub readiness: Readiness,
    /// Prometheus handle from [`crate::metrics::install`].
    pub metrics: PrometheusHandle,
}

/// The `/health`, `/ready` and `/metrics` routes.
pub fn router(endpoints: ServiceEndpoints) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(endpoints)
}

async fn health() -> Response {
    count("/health", StatusCode::OK);
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn ready(State(s): State<ServiceEndpoints>) -> Response {
    let report = s.readiness.evaluate().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    count("/ready", status);
    (status, axum::Json(report)).into_response()
}

async fn metrics_text(State(s): State<ServiceEndpoints>) -> Response {
    count("/metrics", StatusCode::OK);
    s.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

fn count(route: &'static str, status: StatusCode) {
    metrics::counter!(names::HTTP_REQUESTS, "route" => route, "status" => status.as_str().to_string())
        .increment(1);
}

mod serve;
pub use serve::{DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, HttpLimits, serve};

#[cfg(test)]
mod tests;
