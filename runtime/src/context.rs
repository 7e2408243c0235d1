//! Request context: who (tenant), which conversation (correlation id), which trace — and the
//! header names that carry them over HTTP, gRPC metadata and NATS.
//!
//! | field | HTTP / gRPC metadata | NATS header |
//! |---|---|---|
//! | tenant | `x-tenant-id` | `tenant-id` |
//! | correlation | `x-correlation-id` | `x-correlation-id` and `correlation-id` |
//! | trace | `traceparent`, `tracestate` (with a valid `traceparent` only) | `traceparent`, `tracestate`, and `trace-id` (derived) |
//! | request id | `x-request-id` (optional) | — |
//! | dedupe | `idempotency-key` (HTTP/gRPC) | `Nats-Msg-Id` |
//!
//! Inbound values are validated once here: a tenant must be a valid subject token; a missing or
//! invalid correlation id or `traceparent` is replaced ([`normalize_correlation_id`],
//! [`incoming_trace`]), never propagated; a `tracestate` is kept only with a valid
//! `traceparent` and only when it is valid itself (W3C Trace Context; see [`crate::trace`]).
//!
//! ```
//! use cloudlysis_runtime::context::{RequestContext, TenantId};
//!
//! let ctx = RequestContext::new(TenantId::new("acme").unwrap());
//! let mut headers = http::HeaderMap::new();
//! ctx.inject(&mut headers);
//! let back = RequestContext::extract(&headers).unwrap();
//! assert_eq!(back.tenant, ctx.tenant);
//! assert_eq!(back.correlation_id, ctx.correlation_id);
//! assert_eq!(back.traceparent.trace_id(), ctx.traceparent.trace_id());
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::subject::{SubjectToken, SubjectTokenError};
use crate::trace::{TraceParent, TraceState, decode_hex_exact, encode_hex};

/// Header names. HTTP and gRPC metadata share one set (lowercase, as both normalise them);
/// NATS has its own.
pub mod headers {
    /// Tenant id over HTTP and gRPC metadata.
    pub const TENANT_ID: &str = "x-tenant-id";
    /// Correlation id over HTTP, gRPC metadata and NATS.
    pub const CORRELATION_ID: &str = "x-correlation-id";
    /// W3C trace context parent over HTTP, gRPC metadata and NATS.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C vendor trace state, passed through unchanged.
    pub const TRACESTATE: &str = "tracestate";
    /// Optional client request id over HTTP and gRPC metadata.
    pub const REQUEST_ID: &str = "x-request-id";
    /// Idempotency key over HTTP and gRPC metadata.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// Who asked (the authenticated subject of the token), for audit records: gRPC metadata
    /// only, set by the Gateway.
    pub const ACTOR: &str = "x-actor";
    /// The node credential (a signed JWT; see [`crate::credential`]) on every call to a node.
    pub const NODE_CREDENTIAL: &str = "x-cloudlysis-credential";
    /// A client's shorter deadline for an API request, in milliseconds (HTTP only).
    pub const REQUEST_TIMEOUT_MS: &str = "x-request-timeout-ms";

    /// Tenant id on NATS messages.
    pub const NATS_TENANT_ID: &str = "tenant-id";
    /// Second correlation header on NATS messages (both are written).
    pub const NATS_CORRELATION_ID: &str = "correlation-id";
    /// Trace id derived from `traceparent`, on NATS messages.
    pub const NATS_TRACE_ID: &str = "trace-id";
    /// JetStream de-duplication id.
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    /// JetStream optimistic concurrency check on the last sequence of the subject.
    pub const NATS_EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
    /// On a commit made with an idempotency key: the fingerprint of the command that made it
    /// (hex SHA-256 of aggregate type, id, command type and canonical payload), so a replay of
    /// the key with a different command is recognised even when only the stream remembers it.
    pub const NATS_REQUEST_FINGERPRINT: &str = "Cloudlysis-Request-Fingerprint";
}

/// The HTTP and gRPC [`headers`] as parsed names. A lookup or insert by a string parses and
/// checks the name every time (≈ 3 % of a command's instructions, docs/performance.md); these are
/// made once, at compile time.
pub mod header_names {
    use super::headers;
    use http::HeaderName;

    /// [`headers::TENANT_ID`].
    pub const TENANT_ID: HeaderName = HeaderName::from_static(headers::TENANT_ID);
    /// [`headers::CORRELATION_ID`].
    pub const CORRELATION_ID: HeaderName = HeaderName::from_static(headers::CORRELATION_ID);
    /// [`headers::TRACEPARENT`].
    pub const TRACEPARENT: HeaderName = HeaderName::from_static(headers::TRACEPARENT);
    /// [`headers::TRACESTATE`].
    pub const TRACESTATE: HeaderName = HeaderName::from_static(headers::TRACESTATE);
    /// [`headers::REQUEST_ID`].
    pub const REQUEST_ID: HeaderName = HeaderName::from_static(headers::REQUEST_ID);
    /// [`headers::IDEMPOTENCY_KEY`].
    pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(headers::IDEMPOTENCY_KEY);
    /// [`headers::ACTOR`].
    pub const ACTOR: HeaderName = HeaderName::from_static(headers::ACTOR);
    /// [`headers::NODE_CREDENTIAL`].
    pub const NODE_CREDENTIAL: HeaderName = HeaderName::from_static(headers::NODE_CREDENTIAL);
    /// [`headers::REQUEST_TIMEOUT_MS`].
    pub const REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static(headers::REQUEST_TIMEOUT_MS);

    /// The parsed name of one of the contract's HTTP/gRPC headers, `None` for any other name.
    pub fn of(name: &str) -> Option<HeaderName> {
        Some(match name {
            headers::TENANT_ID => TENANT_ID,
            headers::CORRELATION_ID => CORRELATION_ID,
            headers::TRACEPARENT => TRACEPARENT,
            headers::TRACESTATE => TRACESTATE,
            headers::REQUEST_ID => REQUEST_ID,
            headers::IDEMPOTENCY_KEY => IDEMPOTENCY_KEY,
            headers::ACTOR => ACTOR,
            headers::NODE_CREDENTIAL => NODE_CREDENTIAL,
            headers::REQUEST_TIMEOUT_MS => REQUEST_TIMEOUT_MS,
            _ => return None,
        })
    }
}

/// Longest accepted correlation id, in bytes.
pub const MAX_CORRELATION_ID_LEN: usize = 128;
/// Longest accepted `tracestate`, in bytes (the spec allows 32 members of at most 256 bytes each;
/// 512 is the length a vendor must propagate at least).
pub const MAX_TRACESTATE_LEN: usize = crate::trace::state::MAX_HEADER_LEN;

/// Why an inbound context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// No tenant header.
    #[error("missing tenant header `{0}`")]
    MissingTenant(&'static str),
    /// The tenant header is not a valid subject token.
    #[error("invalid tenant id: {0}")]
    InvalidTenant(#[from] SubjectTokenError),
    /// A header value is not visible ASCII.
    #[error("header `{0}` is not valid ASCII text")]
    NotText(&'static str),
}

/// A tenant id: a validated NATS subject token. Serialises as a plain string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(SubjectToken);

impl TenantId {
    /// Validates `value` as a tenant id.
    pub fn new(value: impl Into<String>) -> Result<Self, SubjectTokenError> {
        SubjectToken::new(value).map(Self)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The id as a subject token.
    pub fn token(&self) -> &SubjectToken {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = SubjectTokenError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0.into()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.as_str())
    }
}

/// A correlation id: 1..=128 visible ASCII characters. Serialises as a plain string.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CorrelationId(String);

/// Why a correlation id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid correlation id: must be 1..={MAX_CORRELATION_ID_LEN} visible ASCII characters")]
pub struct InvalidCorrelationId;

impl CorrelationId {
    /// Validates `value`.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidCorrelationId> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= MAX_CORRELATION_ID_LEN
            && value.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(value))
        } else {
            Err(InvalidCorrelationId)
        }
    }

    /// A new random id (UUIDv7, time ordered).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CorrelationId {
    type Error = InvalidCorrelationId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<CorrelationId> for String {
    fn from(value: CorrelationId) -> Self {
        value.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({})", self.0)
    }
}

/// Keeps a valid incoming correlation id, or makes a new one.
pub fn normalize_correlation_id(incoming: Option<&str>) -> CorrelationId {
    incoming
        .and_then(|v| CorrelationId::new(v.trim()).ok())
        .unwrap_or_else(CorrelationId::generate)
}

/// A W3C trace id: 32 lowercase hex characters, not all zero. Serialises as a plain string.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceId(String);

/// Why a trace id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trace id: must be 32 lowercase hex characters, not all zero")]
pub struct InvalidTraceId;

impl TraceId {
    /// Validates `value`.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidTraceId> {
        let value = value.into();
        match decode_hex_exact::<16>(&value) {
            Some(bytes) if bytes != [0; 16] => Ok(Self(value)),
            _ => Err(InvalidTraceId),
        }
    }

    /// A new random trace id.
    pub fn generate() -> Self {
        // A v4 UUID is 122 random bits, never all zero.
        Self::from_bytes(uuid::Uuid::new_v4().into_bytes())
    }

    pub(crate) fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(encode_hex(&bytes))
    }

    pub(crate) fn to_bytes(&self) -> [u8; 16] {
        // Invariant: constructed only from 32 valid hex characters.
        decode_hex_exact::<16>(&self.0).unwrap_or([0; 16])
    }

    /// The id as 32 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TraceId {
    type Error = InvalidTraceId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TraceId> for String {
    fn from(value: TraceId) -> Self {
        value.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.0)
    }
}

/// The context every hop carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The authenticated tenant.
    pub tenant: TenantId,
    /// Correlation id (generated when the caller sent none).
    pub correlation_id: CorrelationId,
    /// Trace context for the next hop.
    pub traceparent: TraceParent,
    /// Vendor trace state of the trace, passed on unchanged (none when the trace restarted).
    pub tracestate: Option<TraceState>,
    /// Optional client request id (HTTP and gRPC only).
    pub request_id: Option<String>,
    /// Optional idempotency key (HTTP and gRPC; becomes `Nats-Msg-Id` material downstream).
    pub idempotency_key: Option<String>,
}

impl RequestContext {
    /// A fresh context for `tenant`: new correlation id, new trace.
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            correlation_id: CorrelationId::generate(),
            traceparent: TraceParent::generate(),
            tracestate: None,
            request_id: None,
            idempotency_key: None,
        }
    }

    /// The trace id of this context.
    pub fn trace_id(&self) -> TraceId {
        self.traceparent.trace_id()
    }

    /// Writes the context into an HTTP header map or gRPC metadata map.
    pub fn inject<C: Carrier>(&self, carrier: &mut C) {
        carrier.set(headers::TENANT_ID, self.tenant.as_str());
        carrier.set(headers::CORRELATION_ID, self.correlation_id.as_str());
        carrier.set(headers::TRACEPARENT, &self.traceparent.to_string());
        if let Some(ts) = &self.tracestate {
            carrier.set(headers::TRACESTATE, &ts.to_string());
        }
        if let Some(id) = &self.request_id {
            carrier.set(headers::REQUEST_ID, id);
        }
        if let Some(key) = &self.idempotency_key {
            carrier.set(headers::IDEMPOTENCY_KEY, key);
        }
    }

    /// Reads a context from an HTTP header map or gRPC metadata map. The tenant is required;
    /// correlation id and trace are normalised (kept when valid, generated otherwise; the
    /// `traceparent` gets a new span id for the next hop).
    pub fn extract<C: Carrier>(carrier: &C) -> Result<Self, ContextError> {
        let tenant = carrier
            .get(headers::TENANT_ID)
            .ok_or(ContextError::MissingTenant(headers::TENANT_ID))?;
        Self::extract_with_tenant(carrier, TenantId::new(tenant)?)
    }

    /// Like [`extract`](Self::extract), but with a tenant the caller already established (the
    /// Gateway uses the authenticated tenant, never the client's header).
    pub fn extract_with_tenant<C: Carrier>(
        carrier: &C,
        tenant: TenantId,
    ) -> Result<Self, ContextError> {
        let text = |name: &'static str| -> Result<Option<String>, ContextError> {
            match carrier.get(name) {
                None => Ok(None),
                Some(v) if v.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => {
                    Ok(Some(v.to_string()))
                }
                Some(_) => Err(ContextError::NotText(name)),
            }
        };
        let (traceparent, tracestate) = incoming_trace(carrier);
        Ok(Self {
            tenant,
            correlation_id: normalize_correlation_id(carrier.get(headers::CORRELATION_ID)),
            traceparent,
            tracestate,
            request_id: text(headers::REQUEST_ID)?,
            idempotency_key: text(headers::IDEMPOTENCY_KEY)?,
        })
    }

    /// Writes the context into NATS headers: `tenant-id`, both correlation headers,
    /// `traceparent`, the derived `trace-id`, and `tracestate` when present. `Nats-Msg-Id` is the
    /// publisher's to set (see [`crate::nats::publish_headers`]).
    pub fn inject_nats(&self, map: &mut async_nats::HeaderMap) {
        map.insert(nats_name(headers::NATS_TENANT_ID), self.tenant.as_str());
        map.insert(
            nats_name(headers::CORRELATION_ID),
            self.correlation_id.as_str(),
        );
        map.insert(
            nats_name(headers::NATS_CORRELATION_ID),
            self.correlation_id.as_str(),
        );
        map.insert(
            nats_name(headers::TRACEPARENT),
            self.traceparent.to_string(),
        );
        map.insert(nats_name(headers::NATS_TRACE_ID), self.trace_id().as_str());
        if let Some(ts) = &self.tracestate {
            map.insert(nats_name(headers::TRACESTATE), ts.to_string());
        }
    }

    /// Hydrates a context from a consumed NATS message's headers. Missing correlation or trace
    /// values are generated; the consumer continues the producer's trace with a new span.
    pub fn extract_nats(map: &async_nats::HeaderMap) -> Result<Self, ContextError> {
        let get = |name: &'static str| map.get(nats_name(name)).map(|v| v.as_str());
        let tenant = get(headers::NATS_TENANT_ID)
            .ok_or(ContextError::MissingTenant(headers::NATS_TENANT_ID))?;
        let correlation = get(headers::CORRELATION_ID).or(get(headers::NATS_CORRELATION_ID));
        // Prefer the full traceparent (and its tracestate); fall back to the bare trace id.
        let (traceparents, tracestates) = (
            nats_lines(map, headers::TRACEPARENT),
            nats_lines(map, headers::TRACESTATE),
        );
        let (traceparent, tracestate) = if traceparents.is_empty() {
            match get(headers::NATS_TRACE_ID).map(TraceId::new) {
                Some(Ok(id)) => (TraceParent::from_trace_id(&id), None),
                _ => (TraceParent::generate(), None),
            }
        } else {
            crate::trace::incoming(&traceparents, &tracestates)
        };
        Ok(Self {
            tenant: TenantId::new(tenant)?,
            correlation_id: normalize_correlation_id(correlation),
            traceparent,
            tracestate,
            request_id: None,
            idempotency_key: None,
        })
    }
}

/// `name` as a NATS header name, made without allocating or validating (a `&str` key makes an
/// owned name on every insert and lookup). `name` is one of [`headers`]' constants.
pub fn nats_name(name: &'static str) -> async_nats::header::HeaderName {
    async_nats::header::HeaderName::from_static(name)
}

/// Every value of header `name` in NATS headers, its exact spelling first, then other casings
/// (NATS header names are case-sensitive; W3C names are not).
fn nats_lines<'a>(map: &'a async_nats::HeaderMap, name: &'static str) -> Vec<&'a str> {
    let mut lines: Vec<&str> = map.get_all(nats_name(name)).map(|v| v.as_str()).collect();
    let mut others: Vec<(&str, &Vec<async_nats::HeaderValue>)> = map
        .iter()
        .filter(|(k, _)| {
            let k: &str = k.as_ref();
            k != name && k.eq_ignore_ascii_case(name)
        })
        .map(|(k, v)| (k.as_ref(), v))
        .collect();
    others.sort_by(|a, b| a.0.cmp(b.0));
    for (_, values) in others {
        lines.extend(values.iter().map(|v| v.as_str()));
    }
    lines
}

/// The trace a request continues (W3C rules, see [`crate::trace::incoming`]): from every
/// `traceparent` and `tracestate` line of an HTTP header map or gRPC metadata map.
pub fn incoming_trace<C: Carrier>(carrier: &C) -> (TraceParent, Option<TraceState>) {
    crate::trace::incoming(
        &carrier.get_all(headers::TRACEPARENT),
        &carrier.get_all(headers::TRACESTATE),
    )
}

/// A string-keyed header carrier (HTTP headers or gRPC metadata).
pub trait Carrier {
    /// The value of `name`, when present and valid text.
    fn get(&self, name: &str) -> Option<&str>;
    /// Every value of `name`, in order (header lines that are not valid text are skipped).
    fn get_all(&self, name: &str) -> Vec<&str>;
    /// Sets `name` to `value`, replacing any earlier value. Values that the carrier cannot hold
    /// (non-visible ASCII) are skipped: every value set here was validated before.
    fn set(&mut self, name: &'static str, value: &str);
}

impl Carrier for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        match header_names::of(name) {
            Some(n) => http::HeaderMap::get(self, n),
            None => http::HeaderMap::get(self, name),
        }
        .and_then(|v| v.to_str().ok())
    }

    fn get_all(&self, name: &str) -> Vec<&str> {
        let all = match header_names::of(name) {
            Some(n) => http::HeaderMap::get_all(self, n),
            None => http::HeaderMap::get_all(self, name),
        };
        all.iter().filter_map(|v| v.to_str().ok()).collect()
    }

    fn set(&mut self, name: &'static str, value: &str) {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            let name =
                header_names::of(name).unwrap_or_else(|| http::HeaderName::from_static(name));
            self.insert(name, v);
        }
    }
}

impl Carrier for tonic::metadata::MetadataMap {
    // Reads go to the underlying header map by parsed name (the contract's headers are ASCII
    // metadata, so the values are the same).
    // `-bin` keys are binary metadata, never text (as `MetadataMap::get` answers).
    fn get(&self, name: &str) -> Option<&str> {
        if name.ends_with("-bin") {
            return None;
        }
        Carrier::get(self.as_ref(), name)
    }

    fn get_all(&self, name: &str) -> Vec<&str> {
        if name.ends_with("-bin") {
            return Vec::new();
        }
        Carrier::get_all(self.as_ref(), name)
    }

    fn set(&mut self, name: &'static str, value: &str) {
        if let Ok(v) = value.parse() {
            self.insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests;
