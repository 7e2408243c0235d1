//! The event wire format on `AGGREGATE_EVENTS`: one message per **commit**, carrying the events
//! a command produced, so a command's events commit atomically under one optimistic-concurrency
//! check (`Nats-Expected-Last-Subject-Sequence`).
//!
//! ```json
//! {"schema_version":1,"commit_id":"0193…","events":[
//!   {"event_id":"0193…","tenant_id":"acme","aggregate_type":"account","aggregate_id":"a-1",
//!    "sequence":3,"event_type":"Deposited","schema_version":1,
//!    "occurred_at":"2026-11-26T23:40:00Z","payload":{"amount":100},
//!    "correlation_id":"…","traceparent":"00-…-…-01"}]}
//! ```
//!
//! * `commit_id` is the first event's id. It is also the message's `Nats-Msg-Id` (JetStream
//!   de-duplication), except for commands with an idempotency key: their `Nats-Msg-Id` is the
//!   key's record name `<tenant>.<type>.<id>.<key>`, so a retried command is recognised by the
//!   stream as well as by the idempotency bucket (ADR 0005).
//! * `sequence` is the aggregate version after that event: versions count events, 1-based.
//! * Decoders ignore unknown fields and accept missing optional ones; `schema_version` changes
//!   only with the wire format.

use serde::{Deserialize, Serialize};

/// Version of the commit format.
pub const COMMIT_SCHEMA_VERSION: u32 = 1;

/// One domain event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// UUIDv7 of the event.
    pub event_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Aggregate type.
    pub aggregate_type: String,
    /// Aggregate id.
    pub aggregate_id: String,
    /// Aggregate version after this event (1-based).
    pub sequence: u64,
    /// Event type name (the event enum's variant).
    pub event_type: String,
    /// The aggregate's event schema version.
    pub schema_version: u32,
    /// When the command ran (RFC 3339 UTC).
    pub occurred_at: String,
    /// Event payload.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Correlation id of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Trace context of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// The events of one command, committed as one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// Commit format version ([`COMMIT_SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The first event's id; also `Nats-Msg-Id` unless the command had an idempotency key.
    pub commit_id: String,
    /// The events, in order.
    pub events: Vec<EventEnvelope>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders_ignore_unknown_fields_and_accept_missing_optionals() {
        let json = r#"{"schema_version":1,"commit_id":"c","future":1,"events":[
            {"event_id":"e","tenant_id":"t","aggregate_type":"a","aggregate_id":"i","sequence":1,
             "event_type":"X","schema_version":1,"occurred_at":"now","extra":true}]}"#;
        let c: Commit = serde_json::from_str(json).unwrap();
        assert_eq!(c.events[0].payload, serde_json::Value::Null);
        assert!(c.events[0].correlation_id.is_none());
        let back = serde_json::to_value(&c).unwrap();
        assert!(back["events"][0].get("correlation_id").is_none());
    }
}
