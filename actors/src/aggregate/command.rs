//! Commands as an entity receives them: the aggregate type as a subject token, a command's
//! payload decoded into the aggregate's `Command`, its fingerprint for idempotency keys, and
//! the split of a tagged event into its type and payload.

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
    let payload: serde_json::Value = if payload.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(payload)
            .map_err(|e| CommandError::InvalidArgument(format!("payload is not valid JSON: {e}")))?
    };
    let tagged = serde_json::json!({ "type": command_type, "payload": payload });
    serde_json::from_value(tagged).map_err(|e| {
        CommandError::InvalidArgument(format!(
            "invalid `{command_type}` command for aggregate `{}`: {e}",
            A::TYPE
        ))
    })
}

/// Splits `{"type": t, "payload": p}` into `(t, p)`; other shapes keep the whole value.
pub(crate) fn split_tagged(value: serde_json::Value) -> (String, serde_json::Value) {
    if let serde_json::Value::Object(mut map) = value {
        if let Some(serde_json::Value::String(t)) = map.remove("type") {
            let payload = map.remove("payload").unwrap_or(serde_json::Value::Null);
            return (t, payload);
        }
        return ("event".into(), serde_json::Value::Object(map));
    }
    ("event".into(), value)
}
