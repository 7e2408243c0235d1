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
    // Only an object is a tagged event (serde would also fill `Tagged` from an array).
    if json.first() == Some(&b'{')
        && let Ok(t) = serde_json::from_slice::<Tagged<'_>>(json)
    {
        return Ok((t.ty, t.payload.unwrap_or(serde_json::value::RawValue::NULL)));
    }
    Ok(("event".into(), serde_json::from_slice(json)?))
}

/// True when every integer in the JSON document `json` fits in 64 bits (`i64` or `u64`). The
/// stream's readers decode a wider one as a float, so an event carrying one is refused before
/// it is committed — as encoding it through a `serde_json::Value` refused it.
pub(crate) fn integers_fit_64_bits(json: &[u8]) -> bool {
    // An integer outside the 64-bit range has at least 19 digits; most documents have no such
    // run of digits at all (inside strings or not), so most are answered by this pass alone.
    let mut run = 0usize;
    let mut long_run = false;
    for &b in json {
        run = if b.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 19 {
            long_run = true;
            break;
        }
    }
    if !long_run {
        return true;
    }
    let mut i = 0;
    let mut in_string = false;
    while i < json.len() {
        let b = json[i];
        i += 1;
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'-' | b'0'..=b'9' => {
                let start = i - 1;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &json[start..i];
                // Up to 19 characters always fits; only longer integers are parsed.
                if token.len() > 19 && !token.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                    let fits = std::str::from_utf8(token)
                        .ok()
                        .and_then(|t| t.parse::<i128>().ok())
                        .is_some_and(|n| n >= i128::from(i64::MIN) && n <= i128::from(u64::MAX));
                    if !fits {
                        return false;
                    }
                }
            }
            _ => {}
        }
    }
    true
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
        // An array is never a tagged event, whatever its first element.
        assert_eq!(
            parts(r#"["Deposited",{"amount":5}]"#),
            ("event".into(), r#"["Deposited",{"amount":5}]"#.into())
        );
        assert!(tagged_parts(b"{").is_err());
    }

    #[test]
    fn integers_wider_than_64_bits_are_found_outside_strings_only() {
        for fits in [
            r#"{"a":18446744073709551615,"b":-9223372036854775808}"#,
            r#"{"a":1.5e300,"b":123456789012345678901234.5,"c":-0.0000000000000000000001}"#,
            r#"{"s":"123456789012345678901234567890","e":"\\\"99999999999999999999999"}"#,
            r#"[1,2,3]"#,
        ] {
            assert!(integers_fit_64_bits(fits.as_bytes()), "{fits}");
        }
        for wide in [
            r#"{"a":18446744073709551616}"#,
            r#"{"a":-9223372036854775809}"#,
            r#"[0,{"b":[1234567890123456789012345678901234567890123]}]"#,
        ] {
            assert!(!integers_fit_64_bits(wide.as_bytes()), "{wide}");
        }
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
