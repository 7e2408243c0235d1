//! Traces: OTLP export (gRPC) of one span per hop — the Gateway's request, a node's handling,
//! a publish, a consumer's handling of a message — all of one trace, linked through the
//! `traceparent` every hop already carries (HTTP headers, gRPC metadata, NATS headers).
//!
//! Off by default. On when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, or `OTEL_TRACES_EXPORTER=otlp` (then the endpoint defaults to
//! `http://localhost:4317`); `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true` turn it
//! off. `OTEL_SERVICE_NAME` names the service (default `cloudlysis-<role>`). Spans are batched
//! (a bounded queue of 2 048; more are dropped, never waited for) and exported from a tokio
//! task; [`Telemetry`] flushes what is queued when dropped.
//!
//! Each hop's span id is the span id of the `traceparent` it sends on, and its parent is the
//! span id it received ([`TraceParent::parent_span`]), so spans link across processes without
//! an in-process context: a hop records its span when it finishes ([`record`]).

use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, KeyValue};

use crate::trace::TraceParent;

/// What a span stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request received (HTTP or gRPC).
    Server,
    /// A message published.
    Producer,
    /// A message consumed.
    Consumer,
}

/// True while an exporter is installed: [`record`] does nothing (builds nothing) otherwise.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when this process exports spans (after [`init`] turned export on).
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The exporter of this process, while it runs; flushes on drop.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            EXPORTING.store(false, std::sync::atomic::Ordering::Relaxed);
            let _ = p.shutdown();
        }
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("OTLP trace export ({setting}): {reason}")]
pub struct TelemetryError {
    /// The setting at fault.
    pub setting: &'static str,
    /// Why.
    pub reason: String,
}

/// The OTLP endpoint the environment asks for, if export is on.
fn endpoint(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let off = |v: Option<String>| v.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if off(get("OTEL_SDK_DISABLED")) {
        return None;
    }
    match get("OTEL_TRACES_EXPORTER").as_deref() {
        Some(e) if e.eq_ignore_ascii_case("none") => return None,
        _ => {}
    }
    get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .filter(|e| !e.is_empty())
        .or_else(|| {
            get("OTEL_TRACES_EXPORTER")
                .filter(|e| e.eq_ignore_ascii_case("otlp"))
                .map(|_| "http://localhost:4317".to_string())
        })
}

/// Starts span export for a process of `role` when the environment asks for it (see the module
/// docs); must run inside a tokio runtime.
pub fn init(role: &str) -> Result<Telemetry, TelemetryError> {
    let get = |k: &str| std::env::var(k).ok();
    let Some(endpoint) = endpoint(get) else {
        return Ok(Telemetry { provider: None });
    };
    let exporter = {
        use opentelemetry_otlp::WithExportConfig;
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| TelemetryError {
                setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
                reason: format!("{endpoint}: {e}"),
            })?
    };
    let service = get("OTEL_SERVICE_NAME").unwrap_or_else(|| format!("cloudlysis-{role}"));
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_max_queue_size(2048)
                .build(),
        )
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .with_attribute(KeyValue::new("cloudlysis.role", role.to_string()))
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(%endpoint, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Records a finished span of this hop: its id is `tp`'s span id, its parent the span id `tp`
/// continued ([`TraceParent::parent_span`]; none for a trace this hop started), named and
/// described by `describe`. A no-op unless [`init`] turned export on — `describe` is not even
/// called, so a process that exports nothing pays nothing per hop.
pub fn record<N>(
    kind: Kind,
    tp: &TraceParent,
    start: SystemTime,
    describe: impl FnOnce() -> (N, Vec<KeyValue>),
) where
    N: Into<std::borrow::Cow<'static, str>>,
{
    if !exporting() {
        return;
    }
    let (name, attributes) = describe();
    let tracer = opentelemetry::global::tracer_provider().tracer("cloudlysis");
    let trace_id = TraceId::from_bytes(tp.trace_id_bytes());
    let flags = if tp.sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let parent = match tp.parent_span() {
        Some(p) => Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            SpanId::from_bytes(p),
            flags,
            true,
            TraceState::default(),
        )),
        None => Context::new(),
    };
    let mut builder = tracer
        .span_builder(name)
        .with_kind(match kind {
            Kind::Server => SpanKind::Server,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
        })
        .with_start_time(start)
        .with_attributes(attributes);
    builder.trace_id = Some(trace_id);
    builder.span_id = Some(SpanId::from_bytes(tp.span_bytes()));
    let span = builder.start_with_context(&tracer, &parent);
    drop(span);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_unless_the_environment_names_an_endpoint() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(endpoint(env(&[])), None);
        assert_eq!(
            endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])).as_deref(),
            Some("http://c:4317")
        );
        assert_eq!(
            endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317")
            ]))
            .as_deref(),
            Some("http://t:4317")
        );
        assert_eq!(
            endpoint(env(&[("OTEL_TRACES_EXPORTER", "otlp")])).as_deref(),
            Some("http://localhost:4317")
        );
        assert_eq!(
            endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_EXPORTER", "none")
            ])),
            None
        );
        assert_eq!(
            endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_SDK_DISABLED", "true")
            ])),
            None
        );
    }
}
