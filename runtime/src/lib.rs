//! The Cloudlysis runtime: the transport contract every node and the Gateway share, and the
//! service plumbing every process mounts.
//!
//! Contracts are code: header names, subjects, stream and consumer policies and metric names
//! live here and nowhere else.
//!
//! Layout:
//! - [`context`] — `TenantId`, `CorrelationId`, `TraceId`, [`context::RequestContext`], header
//!   names and inject/extract for HTTP headers, gRPC metadata and NATS headers.
//! - [`trace`] — W3C `traceparent` parsing, validation and normalisation.
//! - [`subject`] — subject-token validation, subject builders and consumer filter subjects.
//! - [`envelope`] — the commit/event wire format on `AGGREGATE_EVENTS`.
//! - [`workflow`] — the Runner's wire formats: effect commands, effect results, workflow
//!   events, timers.
//! - [`stream`] — stream policies and [`stream::ensure_stream`] (create or validate, never
//!   update).
//! - [`consumer`] — durable pull-consumer policy, derived durable names, env overrides.
//! - [`config`] — layered configuration (flags over env over TOML file) with errors that name
//!   the setting.
//! - [`mailbox`] — bounded mailboxes: [`mailbox::BoundedRef`] with backpressure, load shedding
//!   and request/reply over ractor actors.
//! - [`nats`] — bounded connect with reconnect, publishing with every required header.
//! - [`nats_server`] — finding (≥ 2.10) and launching a local `nats-server`.
//! - [`kv`] — KV bucket policies and `ensure_bucket` (create or validate).
//! - [`outcome`] — whether a failed command may have committed: the error-kind mark on gRPC
//!   statuses and the "never sent" test for transport failures.
//! - [`poison`] — the poison record contract (bucket, key, fields).
//! - [`audit`] — the audit trail of operator actions (bucket, key, fields).
//! - [`time`] — RFC 3339 formatting.
//! - [`metrics`] — the Prometheus recorder and every metric name.
//! - [`telemetry`] — OTLP trace export (off by default; `OTEL_*` settings) and one span per hop.
//! - [`service`] — `GET /health`, `GET /ready`, `GET /metrics`.
//! - [`error`] — the crate's error types in one place.

pub mod abandon;
pub mod admission;
pub mod audit;
pub mod config;
pub mod consumer;
pub mod context;
pub mod credential;
pub mod envelope;
pub mod error;
pub mod kv;
pub mod local;
pub mod mailbox;
pub mod metrics;
pub mod nats;
pub mod nats_server;
pub mod outcome;
pub mod poison;
pub mod registry;
pub mod service;
pub mod stream;
pub mod subject;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod trace;
pub mod workflow;

pub use context::{CorrelationId, RequestContext, TenantId, TraceId};
pub use subject::SubjectToken;
pub use trace::TraceParent;
