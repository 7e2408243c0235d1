//! W3C Trace Context (`traceparent`, `tracestate`) parsing, validation and normalisation.
//!
//! Implements the rules of <https://www.w3.org/TR/trace-context/#traceparent-header>:
//!
//! | input | result |
//! |---|---|
//! | version `00`, exactly `00-<32 hex>-<16 hex>-<2 hex>` (lowercase) | valid |
//! | a higher version (`01`..`fe`) | parsed by its first four fields; a longer header must continue with `-` |
//! | version `ff`, uppercase hex, wrong field lengths, all-zero trace or parent id | invalid |
//!
//! Invalid or all-zero ids are replaced, never propagated: [`normalize_traceparent`] keeps a valid
//! incoming trace id and makes a new span (parent) id for the next hop, or starts a new trace.
//! Spaces and tabs around the value are ignored; more than one `traceparent` is invalid.
//!
//! `tracestate` ([`state`]) belongs to the trace of its `traceparent`: [`incoming`] parses it
//! only when the `traceparent` is valid — a restarted trace carries none — and drops an invalid
//! `tracestate` whole without touching the `traceparent`. A valid one is propagated unchanged.

use std::fmt;

use crate::context::TraceId;

pub mod state;

pub use state::{TraceState, TraceStateError};

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// The value does not have the `version-traceid-parentid-flags` shape or its field lengths.
    #[error("traceparent is malformed: {0}")]
    Malformed(&'static str),
    /// A field holds characters other than lowercase hex digits.
    #[error("traceparent field `{0}` is not lowercase hex")]
    NotLowercaseHex(&'static str),
    /// Version `ff` is forbidden by the spec.
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// The trace id is all zeros.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// The parent (span) id is all zeros.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
}

/// A validated W3C `traceparent`.
///
/// Always rendered in version `00` form: a header of a higher version is understood by its first
/// four fields and re-emitted as version `00`, as the spec asks of a version-00 implementation.
#[derive(Clone, Copy)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
    /// The span id this hop continued from (the received `parent_id`), when it continued one:
    /// the parent of this hop's span in exported traces. Not part of the header value.
    remote_parent: Option<[u8; 8]>,
}

/// Equality and hashing are the header value's: where a hop came from is not part of it.
impl PartialEq for TraceParent {
    fn eq(&self, other: &Self) -> bool {
        (self.trace_id, self.parent_id, self.flags)
            == (other.trace_id, other.parent_id, other.flags)
    }
}

impl Eq for TraceParent {}

impl std::hash::Hash for TraceParent {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.trace_id, self.parent_id, self.flags).hash(state);
    }
}

impl TraceParent {
    /// Parses and validates a `traceparent` header value.
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        if !value.is_ascii() {
            // Also keeps the byte-offset slicing below on character boundaries.
            return Err(TraceParentError::Malformed("contains non-ASCII characters"));
        }
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return Err(TraceParentError::Malformed("shorter than 55 characters"));
        }
        let version = &value[..2];
        check_hex("version", version)?;
        if version == "ff" {
            return Err(TraceParentError::ForbiddenVersion);
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(TraceParentError::Malformed(
                "fields are not separated by '-'",
            ));
        }
        if version == "00" {
            if bytes.len() != 55 {
                return Err(TraceParentError::Malformed(
                    "version 00 must be exactly 55 characters",
                ));
            }
        } else if bytes.len() > 55 && bytes[55] != b'-' {
            // A future version may append fields, but only after a '-'.
            return Err(TraceParentError::Malformed(
                "a higher version must continue with '-' after the flags",
            ));
        }
        let trace_hex = &value[3..35];
        let parent_hex = &value[36..52];
        let flags_hex = &value[53..55];
        check_hex("trace-id", trace_hex)?;
        check_hex("parent-id", parent_hex)?;
        check_hex("trace-flags", flags_hex)?;
        let mut trace_id = [0u8; 16];
        decode_hex(trace_hex, &mut trace_id);
        let mut parent_id = [0u8; 8];
        decode_hex(parent_hex, &mut parent_id);
        let mut flags = [0u8; 1];
        decode_hex(flags_hex, &mut flags);
        if trace_id == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags: flags[0],
            remote_parent: None,
        })
    }

    /// Starts a new trace: random trace and parent ids, sampled flag set.
    pub fn generate() -> Self {
        Self::from_trace_id(&TraceId::generate())
    }

    /// Builds a `traceparent` for an existing trace with a new random parent (span) id.
    pub fn from_trace_id(trace_id: &TraceId) -> Self {
        Self {
            trace_id: trace_id.to_bytes(),
            parent_id: random_span_id(),
            flags: 0x01,
            remote_parent: None,
        }
    }

    /// The same trace with a new parent (span) id: what this hop sends to the next one. The
    /// received span id is kept as [`parent_span`](Self::parent_span).
    pub fn next_hop(&self) -> Self {
        Self {
            parent_id: random_span_id(),
            remote_parent: Some(self.parent_id),
            ..*self
        }
    }

    /// The span id this hop continued from, when it continued a trace (`None` for a trace it
    /// started).
    pub fn parent_span(&self) -> Option<[u8; 8]> {
        self.remote_parent
    }

    /// This hop's span id (the `parent-id` it sends on).
    pub fn span_bytes(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace id's bytes.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        TraceId::from_bytes(self.trace_id)
    }

    /// The parent (span) id as 16 lowercase hex characters.
    pub fn parent_id_hex(&self) -> String {
        encode_hex(&self.parent_id)
    }

    /// The trace flags byte (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// True when the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 0x01
    }
}

impl fmt::Display for TraceParent {
    /// `00-<trace id>-<parent id>-<flags>`, written from a buffer on the stack (a hop formats
    /// its traceparent several times: into gRPC metadata, NATS headers, a response header).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        hex_into(&mut out[3..35], &self.trace_id);
        hex_into(&mut out[36..52], &self.parent_id);
        hex_into(&mut out[53..55], &[self.flags]);
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceParentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The trace id of a valid `traceparent` (the NATS `trace-id` header is derived with this).
pub fn trace_id_from_traceparent(traceparent: &str) -> Result<TraceId, TraceParentError> {
    TraceParent::parse(traceparent).map(|tp| tp.trace_id())
}

/// A `traceparent` for `trace_id` with a new parent (span) id and the sampled flag.
pub fn traceparent_from_trace_id(trace_id: &TraceId) -> String {
    TraceParent::from_trace_id(trace_id).to_string()
}

/// The `traceparent` to send on: a valid incoming value keeps its trace id and flags and gets a
/// new span id for the next hop; a missing or invalid one is replaced by a new trace.
pub fn normalize_traceparent(incoming: Option<&str>) -> TraceParent {
    match incoming.map(|v| TraceParent::parse(v.trim_matches([' ', '\t']))) {
        Some(Ok(tp)) => tp.next_hop(),
        _ => TraceParent::generate(),
    }
}

/// The trace a hop continues, from the `traceparent` and `tracestate` header lines it received:
///
/// | received | continues with |
/// |---|---|
/// | one valid `traceparent` (spaces and tabs around it ignored) | its trace id and flags, a new span id; the `tracestate` lines combined, when valid and not empty |
/// | a valid `traceparent` and an invalid `tracestate` | the trace; no `tracestate` |
/// | no `traceparent`, an invalid one, or more than one | a new trace; no `tracestate` (it belonged to the discarded trace) |
pub fn incoming(traceparents: &[&str], tracestates: &[&str]) -> (TraceParent, Option<TraceState>) {
    let parsed = match traceparents {
        [one] => TraceParent::parse(one.trim_matches([' ', '\t'])).ok(),
        _ => None,
    };
    match parsed {
        None => (TraceParent::generate(), None),
        Some(tp) => (
            tp.next_hop(),
            TraceState::from_lines(tracestates.iter().copied())
                .ok()
                .filter(|ts| !ts.is_empty()),
        ),
    }
}

fn check_hex(field: &'static str, s: &str) -> Result<(), TraceParentError> {
    if s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(TraceParentError::NotLowercaseHex(field))
    }
}

/// Decodes lowercase hex already checked by [`check_hex`]; `out.len() * 2 == s.len()`.
fn decode_hex(s: &str, out: &mut [u8]) {
    let nibble = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        _ => b - b'a' + 10,
    };
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

pub(crate) fn decode_hex_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || check_hex("id", s).is_err() {
        return None;
    }
    let mut out = [0u8; N];
    decode_hex(s, &mut out);
    Some(out)
}

/// A random non-zero 8-byte span id (random bits from a v4 UUID).
fn random_span_id() -> [u8; 8] {
    loop {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[8..16]);
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests;
