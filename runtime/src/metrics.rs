//! Prometheus metrics: the process-wide recorder and every metric name Cloudlysis emits.
//!
//! Names follow Prometheus conventions (`cloudlysis_` prefix, base units, `_total` counters);
//! labels are bounded (actor kind, stream, consumer, route, status) — never tenant, entity or
//! message ids.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Every metric name, in one place.
pub mod names {
    /// Gauge, always 1, labelled with `version` and `role`.
    pub const BUILD_INFO: &str = "cloudlysis_build_info";
    /// Counter of NATS connection events, labelled `event`.
    pub const NATS_CONNECTION_EVENTS: &str = "cloudlysis_nats_connection_events_total";
    /// Counter of failed readiness checks, labelled `check`.
    pub const READINESS_CHECK_FAILURES: &str = "cloudlysis_readiness_check_failures_total";
    /// Counter of HTTP requests served by the service endpoints, labelled `route`, `status`.
    pub const HTTP_REQUESTS: &str = "cloudlysis_http_requests_total";
}

/// The metrics recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle; later (and
/// concurrent) calls return the same handle. Registers the descriptions of the runtime's metrics.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| MetricsError(e.to_string()))?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(
        names::BUILD_INFO,
        "Cloudlysis build information (always 1)."
    );
    metrics::describe_counter!(
        names::NATS_CONNECTION_EVENTS,
        "NATS connection events (connected, disconnected, ...)."
    );
    metrics::describe_counter!(
        names::READINESS_CHECK_FAILURES,
        "Readiness checks that failed or timed out."
    );
    metrics::describe_counter!(
        names::HTTP_REQUESTS,
        "HTTP requests served by the node's service endpoints."
    );
}

/// Sets `cloudlysis_build_info{version, role} 1`.
pub fn record_build_info(role: &'static str) {
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "role" => role)
        .set(1.0);
}
