//! The poison-record contract: a message that failed `max_deliver - 1` times, or could not be
//! decoded, is recorded here and then terminated (`AckKind::Term`).
//!
//! Records live in the KV bucket [`POISON_BUCKET`] under [`key`]`(consumer, stream_sequence)`
//! (or [`view_key`]`(consumer, view, stream_sequence)` for one view of a consumer that feeds
//! several, with the `view` field set) as JSON:
//!
//! ```json
//! {"schema_version":1,"stream":"AGGREGATE_EVENTS","consumer":"cloudlysis-projection-all",
//!  "sequence":42,"subject":"tenant.acme.aggregate.account.a-1",
//!  "headers":{"tenant-id":["acme"]},"error":"apply failed: ...","attempts":4,
//!  "time":"2026-11-26T23:40:00Z"}
//! ```
//!
//! The payload stays in the stream (found by `sequence`), so a redrive re-reads it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// KV bucket of poison records.
pub const POISON_BUCKET: &str = "cloudlysis_poison";
/// Current record schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// One quarantined message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoisonRecord {
    /// Record schema version.
    pub schema_version: u32,
    /// Stream the message came from.
    pub stream: String,
    /// Durable consumer that gave up on it.
    pub consumer: String,
    /// Stream sequence of the message.
    pub sequence: u64,
    /// Subject of the message.
    pub subject: String,
    /// The message's headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Why it failed (the last error).
    pub error: String,
    /// Deliveries attempted.
    pub attempts: u64,
    /// When it was quarantined (RFC 3339 UTC).
    pub time: String,
    /// The one view that failed it, when the consumer feeds several (Single mode): the other
    /// views applied the message. Absent: the message failed for the consumer as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
}

impl PoisonRecord {
    /// A record of `message`'s failure, stamped now.
    pub fn new(
        stream: &str,
        consumer: &str,
        sequence: u64,
        subject: &str,
        headers: Option<&async_nats::HeaderMap>,
        error: impl Into<String>,
        attempts: u64,
    ) -> Self {
        let headers = headers
            .map(|h| {
                h.iter()
                    .map(|(k, vs)| {
                        (
                            k.to_string(),
                            vs.iter().map(|v| v.as_str().to_string()).collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            schema_version: SCHEMA_VERSION,
            stream: stream.to_string(),
            consumer: consumer.to_string(),
            sequence,
            subject: subject.to_string(),
            headers,
            error: error.into(),
            attempts,
            time: crate::time::rfc3339(SystemTime::now()),
            view: None,
        }
    }

    /// The same record, for the one view `view` of a consumer that feeds several.
    pub fn for_view(mut self, view: &str) -> Self {
        self.view = Some(view.to_string());
        self
    }

    /// Its KV key.
    pub fn key(&self) -> String {
        match &self.view {
            Some(view) => view_key(&self.consumer, view, self.sequence),
            None => key(&self.consumer, self.sequence),
        }
    }
}

/// The KV key of a record: `<consumer>.<stream_sequence>`.
pub fn key(consumer: &str, sequence: u64) -> String {
    format!("{consumer}.{sequence}")
}

/// The parts of a record key: consumer, view (records of one view of a consumer that feeds
/// several) and stream sequence. `None` for a key that is not a record key.
pub fn parse_key(key: &str) -> Option<(&str, Option<&str>, u64)> {
    let mut parts = key.split('.');
    let consumer = parts.next()?;
    let second = parts.next()?;
    match parts.next() {
        None => Some((consumer, None, second.parse().ok()?)),
        Some(seq) if parts.next().is_none() => Some((consumer, Some(second), seq.parse().ok()?)),
        Some(_) => None,
    }
}

/// What a record belongs to, from its consumer (and view): `("view", <view>)`,
/// `("effect", <effect type>)`, `("workflow", <name>)`, `("timers", "timers")`, or
/// `("consumer", <consumer>)` for any other durable.
pub fn source(consumer: &str, view: Option<&str>) -> (&'static str, String) {
    if let Some(view) = view {
        return ("view", view.to_string());
    }
    if let Some(rest) = consumer.strip_prefix("cloudlysis-projection-view-") {
        // Generation n of a view is `<view>=g<n>`.
        let name = rest.split('=').next().unwrap_or(rest);
        return ("view", name.to_string());
    }
    if let Some(t) = consumer.strip_prefix("cloudlysis-runner-effect-") {
        return ("effect", t.to_string());
    }
    if let Some(w) = consumer.strip_prefix("cloudlysis-runner-workflow-") {
        return ("workflow", w.to_string());
    }
    if consumer == "cloudlysis-runner-timers" {
        return ("timers", "timers".to_string());
    }
    ("consumer", consumer.to_string())
}

/// The KV key of one view's record on a consumer that feeds several:
/// `<consumer>.<view>.<stream_sequence>`.
pub fn view_key(consumer: &str, view: &str, sequence: u64) -> String {
    format!("{consumer}.{view}.{sequence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_name_their_source() {
        assert_eq!(
            parse_key("cloudlysis-projection-view-balances=g2.42"),
            Some(("cloudlysis-projection-view-balances=g2", None, 42))
        );
        assert_eq!(
            parse_key("cloudlysis-projection-all.balances.7"),
            Some(("cloudlysis-projection-all", Some("balances"), 7))
        );
        assert_eq!(parse_key("nope"), None);
        assert_eq!(parse_key("a.b.c.d"), None);
        assert_eq!(
            source("cloudlysis-projection-view-balances=g2", None),
            ("view", "balances".to_string())
        );
        assert_eq!(
            source("cloudlysis-projection-all", Some("balances")),
            ("view", "balances".to_string())
        );
        assert_eq!(
            source("cloudlysis-runner-effect-deposit", None),
            ("effect", "deposit".to_string())
        );
        assert_eq!(
            source("cloudlysis-runner-workflow-transfer", None),
            ("workflow", "transfer".to_string())
        );
        assert_eq!(source("other", None), ("consumer", "other".to_string()));
    }

    #[test]
    fn records_serialize_with_every_contract_field() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("tenant-id", "acme");
        let r = PoisonRecord::new("S", "c", 7, "a.b", Some(&h), "boom", 4);
        let v = serde_json::to_value(&r).unwrap();
        for f in [
            "schema_version",
            "stream",
            "consumer",
            "sequence",
            "subject",
            "headers",
            "error",
            "attempts",
            "time",
        ] {
            assert!(v.get(f).is_some(), "{f}");
        }
        assert_eq!(v["headers"]["tenant-id"][0], "acme");
        assert_eq!(key("c", 7), "c.7");
        let back: PoisonRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn decoders_ignore_unknown_fields_and_accept_missing_headers() {
        let json = r#"{"schema_version":1,"stream":"S","consumer":"c","sequence":1,"subject":"s",
            "error":"e","attempts":1,"time":"t","future":true}"#;
        let r: PoisonRecord = serde_json::from_str(json).unwrap();
        assert!(r.headers.is_empty());
    }
}
