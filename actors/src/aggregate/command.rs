//! Commands as an entity receives them: the aggregate type as a subject token, a command's
//! payload decoded into the aggregate's `Command`, its fingerprint for idempotency keys, and
//! the split of an encoded tagged event into its type and payload.

use super::*;
use cloudlysis_runtime::SubjectToken;

/// An aggregate type (or other registered name) as a subject token.
pub(crate) fn token(s: &str) -> SubjectToken {
    // Aggregate types are checked when registered; see `AggregateNode::register`.
    SubjectToken::new(s)
        .unwrap_or_else(|_| unreachable!("aggregate type validated at registration"))
}

/// The fingerprint of a command: hex SHA-256 over the aggregate type, id, command type and the
/// payload in canonical form (object keys sorted, no insignificant whitespace), so the same
/// command sent again with its keys reordered still matches.
pub(crate) fn fingerprint(
    aggregate_type: &str,
    id: &str,
    command_type: &str,
    payload: &[u8],
) -> String {
    use sha2::Digest;
    let canonical = match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(v) => canonical_json(&v),
        Err(_) => String::from_utf8_lossy(payload).into_owned(),
    };
    let mut h = sha2::Sha256::new();
    for part in [aggregate_type, id, command_type, canonical.as_str()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// `value` as JSON with every object's keys sorted.
fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        canonical_json(v)
                    )
                })
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        serde_json::Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// Decodes `{"type": command_type, "payload": payload}` into the aggregate's command enum.
pub(crate) fn decode_command<A: Aggregate>(
    command_type: &str,
    payload: &[u8],
) -> Result<A::Command, CommandError> {
    // One pass: the payload is checked to be JSON (borrowed, no tree), then the adjacently
    // tagged document `{"type": …, "payload": …}` is written around its bytes and decoded
    // into the aggregate's command directly.
    let payload: &[u8] = if payload.is_empty() {
        b"null"
    } else {
        serde_json::from_slice::<&serde_json::value::RawValue>(payload)
            .map_err(|e| CommandError::InvalidArgument(format!("payload is not valid JSON: {e}")))?
            .get()
            .as_bytes()
    };
    let mut tagged = Vec::with_capacity(command_type.len() + payload.len() + 24);
    tagged.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut tagged, command_type)
        .map_err(|e| CommandError::InvalidArgument(format!("command type: {e}")))?;
    tagged.extend_from_slice(b",\"payload\":");
    tagged.extend_from_slice(payload);
    tagged.push(b'}');
    serde_json::from_slice(&tagged).map_err(|e| {
        CommandError::InvalidArgument(format!(
            "invalid `{command_type}` command for aggregate `{}`: {}",
            A::TYPE,
            without_position(&e)
        ))
    })
}

/// A decoding error's message without serde_json's "at line L column C" (which would point
/// into the document written around the payload, not into anything the client sent).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) if e.line() > 0 => text[..at].to_string(),
        _ => text,
    }
}

/// An event serialised as `{"type": t, "payload": p}` (the adjacently tagged enums aggregates
/// use), read in place.
#[derive(serde::Deserialize)]
struct Tagged<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    payload: Option<&'a serde_json::value::RawValue>,
}

/// Splits an encoded event `{"type": t, "payload": p}` into `(t, p)` without building its
/// tree (a missing or null payload is `null`); any other shape is an `event` whose payload is
/// the whole document.
pub(crate) fn tagged_parts(
    json: &[u8],
) -> Result<(std::borrow::Cow<'_, str>, &serde_json::value::RawValue), serde_json::Error> {
    match serde_json::from_slice::<Tagged<'_>>(json) {
        Ok(t) => Ok((t.ty, t.payload.unwrap_or(serde_json::value::RawValue::NULL))),
        Err(_) => Ok(("event".into(), serde_json::from_slice(json)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{CommandContext, Rejection};
    use serde::{Deserialize, Serialize};

    struct Till;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", content = "payload")]
    enum TillCommand {
        Open,
        Add { amount: u64, note: Option<String> },
    }

    #[derive(Serialize, Deserialize)]
    struct Added;

    impl Aggregate for Till {
        const TYPE: &'static str = "till";
        const SCHEMA_VERSION: u32 = 1;
        type State = ();
        type Command = TillCommand;
        type Event = Added;
        fn handle(_: &(), _: TillCommand, _: &CommandContext) -> Result<Vec<Added>, Rejection> {
            Ok(vec![Added])
        }
        fn apply(_: &mut (), _: &Added) {}
    }

    #[test]
    fn a_tagged_event_is_split_in_place_and_other_shapes_are_whole() {
        let parts = |j: &str| {
            let (t, p) = tagged_parts(j.as_bytes()).unwrap();
            (t.into_owned(), p.get().to_string())
        };
        assert_eq!(
            parts(r#"{"type":"Deposited","payload":{"amount":5}}"#),
            ("Deposited".into(), r#"{"amount":5}"#.into())
        );
        assert_eq!(
            parts(r#"{"type":"Closed"}"#),
            ("Closed".into(), "null".into())
        );
        assert_eq!(
            parts(r#"{"type":"Closed","payload":null}"#),
            ("Closed".into(), "null".into())
        );
        assert_eq!(
            parts(r#"{"type":"caf\u00e9","payload":[1]}"#),
            ("café".into(), "[1]".into())
        );
        assert_eq!(
            parts(r#"{"amount":5}"#),
            ("event".into(), r#"{"amount":5}"#.into())
        );
        assert_eq!(parts("7"), ("event".into(), "7".into()));
        assert!(tagged_parts(b"{").is_err());
    }

    #[test]
    fn a_command_decodes_from_its_type_and_the_payload_bytes() {
        assert_eq!(
            decode_command::<Till>("Add", br#" { "note": "caf\u00e9 \"x\"", "amount": 7 } "#)
                .unwrap(),
            TillCommand::Add {
                amount: 7,
                note: Some("café \"x\"".into())
            }
        );
        assert_eq!(
            decode_command::<Till>("Open", b"").unwrap(),
            TillCommand::Open
        );
        assert_eq!(
            decode_command::<Till>("Open", b"null").unwrap(),
            TillCommand::Open
        );
    }

    #[test]
    fn bad_payloads_and_types_are_invalid_arguments_that_say_why() {
        let message = |r: Result<TillCommand, CommandError>| match r {
            Err(CommandError::InvalidArgument(m)) => m,
            other => panic!("expected an invalid argument, got {other:?}"),
        };
        let m = message(decode_command::<Till>("Add", b"{\"amount\":"));
        assert!(m.starts_with("payload is not valid JSON"), "{m}");
        let m = message(decode_command::<Till>("Add", br#"{"amount":"seven"}"#));
        assert!(
            m.starts_with("invalid `Add` command for aggregate `till`"),
            "{m}"
        );
        assert!(
            !m.contains(" at line "),
            "no position in a document the client never sent: {m}"
        );
        // A type cannot break out of its string: it is one unknown variant.
        let m = message(decode_command::<Till>(
            r#"Open","payload":null,"x":"#,
            b"null",
        ));
        assert!(m.contains("unknown variant"), "{m}");
        // Trailing data after the payload is not JSON.
        let m = message(decode_command::<Till>("Open", b"null} {"));
        assert!(m.starts_with("payload is not valid JSON"), "{m}");
    }
}
