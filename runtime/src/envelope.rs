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

/// An [`EventEnvelope`] to encode, borrowing its parts, with its payload already encoded: it
/// encodes to the same document as the owned envelope (the payload's keys in the order they were
/// written) without building the payload's `Value` tree. What a node encodes a commit with.
#[derive(Debug, Clone, Serialize)]
pub struct EventEnvelopeRef<'a> {
    /// [`EventEnvelope::event_id`].
    pub event_id: &'a str,
    /// [`EventEnvelope::tenant_id`].
    pub tenant_id: &'a str,
    /// [`EventEnvelope::aggregate_type`].
    pub aggregate_type: &'a str,
    /// [`EventEnvelope::aggregate_id`].
    pub aggregate_id: &'a str,
    /// [`EventEnvelope::sequence`].
    pub sequence: u64,
    /// [`EventEnvelope::event_type`].
    pub event_type: &'a str,
    /// [`EventEnvelope::schema_version`].
    pub schema_version: u32,
    /// [`EventEnvelope::occurred_at`].
    pub occurred_at: &'a str,
    /// [`EventEnvelope::payload`], as JSON.
    pub payload: &'a serde_json::value::RawValue,
    /// [`EventEnvelope::correlation_id`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<&'a str>,
    /// [`EventEnvelope::traceparent`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<&'a str>,
}

/// A [`Commit`] to encode, borrowing its events ([`EventEnvelopeRef`]).
#[derive(Debug, Clone, Serialize)]
pub struct CommitRef<'a> {
    /// [`Commit::schema_version`].
    pub schema_version: u32,
    /// [`Commit::commit_id`].
    pub commit_id: &'a str,
    /// [`Commit::events`].
    pub events: &'a [EventEnvelopeRef<'a>],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_commit_encodes_to_what_the_owned_one_decodes_from() {
        let payload =
            serde_json::value::RawValue::from_string(r#"{"b":1,"a":"x\"y"}"#.into()).unwrap();
        let event = EventEnvelopeRef {
            event_id: "e1",
            tenant_id: "acme",
            aggregate_type: "account",
            aggregate_id: "a-1",
            sequence: 3,
            event_type: "Deposited",
            schema_version: 2,
            occurred_at: "2026-11-26T23:40:00Z",
            payload: &payload,
            correlation_id: Some("c"),
            traceparent: None,
        };
        let bytes = serde_json::to_vec(&CommitRef {
            schema_version: COMMIT_SCHEMA_VERSION,
            commit_id: "e1",
            events: std::slice::from_ref(&event),
        })
        .unwrap();
        let decoded: Commit = serde_json::from_slice(&bytes).unwrap();
        let owned = Commit {
            schema_version: COMMIT_SCHEMA_VERSION,
            commit_id: "e1".into(),
            events: vec![EventEnvelope {
                event_id: "e1".into(),
                tenant_id: "acme".into(),
                aggregate_type: "account".into(),
                aggregate_id: "a-1".into(),
                sequence: 3,
                event_type: "Deposited".into(),
                schema_version: 2,
                occurred_at: "2026-11-26T23:40:00Z".into(),
                payload: serde_json::json!({"a": "x\"y", "b": 1}),
                correlation_id: Some("c".into()),
                traceparent: None,
            }],
        };
        assert_eq!(decoded, owned);
        // The same fields as the owned envelope encodes, and no others.
        let again: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(again, serde_json::to_value(&owned).unwrap());
    }

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
