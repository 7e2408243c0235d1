//! What a failed call did: the contract by which a node tells its caller whether a failed
//! command may have committed, and by which a caller judges a transport failure.
//!
//! A gRPC code alone cannot say it: `DEADLINE_EXCEEDED` is true both of a command that never
//! reached the store and of one whose commit was acknowledged a moment too late. So a node marks
//! a failed call with the trailing metadata key [`ERROR_KIND`] (one of [`ErrorKind`]), and a
//! caller that got no such mark judges by where the call failed ([`not_taken`]):
//!
//! | what happened | mark | Gateway answer |
//! |---|---|---|
//! | the deadline passed before any publish started | `not-committed` | 504 `timeout` + `Retry-After` (nothing was committed) |
//! | a publish had started when the deadline passed, or its ack never came | `outcome-unknown` | 504 `outcome-unknown` (with the command's `Idempotency-Key`: retry with it; without one: read the aggregate first) |
//! | an idempotency key reused with a different command | `idempotency-key-reused` | 422 `idempotency-key-reused` |
//! | no connection to the node could be made, or the node refused the call at the HTTP/2 layer (GOAWAY below its stream, `REFUSED_STREAM`: not processed) | — | 503 `unavailable` + `Retry-After` (nothing was done there) |
//! | the connection failed after the request was sent, or the caller's own deadline passed | — | 502 / 504 `outcome-unknown` |

use std::fmt;

/// Trailing gRPC metadata key carrying an [`ErrorKind`] on a failed call.
pub const ERROR_KIND: &str = "x-cloudlysis-error";

/// What a node knows about a failed call, beyond its gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Nothing was committed: no publish had started. A retry is safe.
    NotCommitted,
    /// A commit may have landed: a publish had started and its outcome is not known.
    OutcomeUnknown,
    /// The idempotency key was used before with a different command.
    IdempotencyKeyReused,
}

impl ErrorKind {
    /// The metadata value (also the problem slug at the Gateway).
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::NotCommitted => "not-committed",
            ErrorKind::OutcomeUnknown => "outcome-unknown",
            ErrorKind::IdempotencyKeyReused => "idempotency-key-reused",
        }
    }

    /// Parses a metadata value; unknown values are `None`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "not-committed" => Some(ErrorKind::NotCommitted),
            "outcome-unknown" => Some(ErrorKind::OutcomeUnknown),
            "idempotency-key-reused" => Some(ErrorKind::IdempotencyKeyReused),
            _ => None,
        }
    }

    /// Marks `status` with this kind.
    pub fn mark(self, mut status: tonic::Status) -> tonic::Status {
        status.metadata_mut().insert(
            ERROR_KIND,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }

    /// The kind a node marked `status` with, if any.
    pub fn of(status: &tonic::Status) -> Option<Self> {
        status
            .metadata()
            .get(ERROR_KIND)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a failed call certainly did not reach the node's handler, so that repeating it (here or
/// on another node) cannot do anything twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTaken {
    /// No connection could be made: refused, DNS, connect timeout, a TLS handshake whose
    /// certificate was not trusted. The request was never sent.
    NoConnection,
    /// The node was closing the connection: its HTTP/2 GOAWAY named a last stream below this
    /// call's, and a server processes no stream above it (RFC 9113 §6.8) — a node shutting down
    /// while the call was on the wire.
    GoingAway,
    /// The node refused the call's stream with HTTP/2 `REFUSED_STREAM`, which says it was not
    /// processed (RFC 9113 §8.7).
    RefusedStream,
    /// The connection closed while the request waited to be sent on it (hyper's "operation
    /// was canceled"): it was never written.
    ConnectionClosed,
}

impl NotTaken {
    /// Every kind, for pre-registering metric series.
    pub const ALL: [NotTaken; 4] = [
        NotTaken::NoConnection,
        NotTaken::GoingAway,
        NotTaken::RefusedStream,
        NotTaken::ConnectionClosed,
    ];

    /// The `reason` label of `cloudlysis_gateway_node_unreachable_total`.
    pub fn label(&self) -> &'static str {
        match self {
            NotTaken::NoConnection => "no_connection",
            NotTaken::GoingAway => "going_away",
            NotTaken::RefusedStream => "refused_stream",
            NotTaken::ConnectionClosed => "connection_closed",
        }
    }

    /// What happened, for a problem's detail or a log line.
    pub fn as_str(&self) -> &'static str {
        match self {
            NotTaken::NoConnection => "no connection could be made",
            NotTaken::GoingAway => {
                "the node was closing its connection and did not take the call (HTTP/2 GOAWAY)"
            }
            NotTaken::RefusedStream => {
                "the node refused the call before processing it (HTTP/2 REFUSED_STREAM)"
            }
            NotTaken::ConnectionClosed => "the connection closed before the call was sent on it",
        }
    }
}

impl fmt::Display for NotTaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether, and why, a failed call certainly did not reach the node's handler: connecting
/// failed, the connection closed before the request was written, or the node refused the call
/// at the HTTP/2 layer (GOAWAY below its stream, `REFUSED_STREAM`). Everything else that fails
/// after connecting may have reached it.
///
/// The HTTP/2 refusals are read from the `h2` error tonic keeps as the status's source: tonic's
/// code for them (`INTERNAL` for a graceful GOAWAY, `UNAVAILABLE` for `REFUSED_STREAM`) and its
/// message ("h2 protocol error: http2 error") do not tell them from a connection that broke
/// after the node took the call. Only frames the node sent count (`is_remote`): an error h2
/// raised itself says nothing about what the node did.
pub fn not_taken(status: &tonic::Status) -> Option<NotTaken> {
    if !matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Cancelled
    ) {
        return None;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut text = status.message().to_ascii_lowercase();
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return Some(NotTaken::ConnectionClosed);
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.is_remote() && h2.is_go_away() {
                return Some(NotTaken::GoingAway);
            }
            if h2.is_remote() && h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(NotTaken::RefusedStream);
            }
        }
        text.push(' ');
        text.push_str(&e.to_string().to_ascii_lowercase());
        source = e.source();
    }
    let no_connection = status.code() == tonic::Code::Unavailable
        && [
            "tcp connect error",
            "connection refused",
            "error trying to connect",
            "dns error",
            // rustls refused the node's certificate: the handshake, before any request, failed.
            "invalid peer certificate",
        ]
        .iter()
        .any(|m| text.contains(m));
    no_connection.then_some(NotTaken::NoConnection)
}

/// True when a failed call certainly did not reach the node's handler ([`not_taken`]), so it
/// is safe to repeat.
pub fn never_sent(status: &tonic::Status) -> bool {
    not_taken(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_survives_the_round_trip_and_unknown_values_are_ignored() {
        for kind in [
            ErrorKind::NotCommitted,
            ErrorKind::OutcomeUnknown,
            ErrorKind::IdempotencyKeyReused,
        ] {
            let status = kind.mark(tonic::Status::deadline_exceeded("x"));
            assert_eq!(ErrorKind::of(&status), Some(kind));
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ErrorKind::of(&tonic::Status::deadline_exceeded("x")), None);
        assert_eq!(ErrorKind::parse("maybe"), None);
    }

    #[test]
    fn only_a_failed_connect_counts_as_never_sent() {
        let refused =
            tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert!(never_sent(&refused));
        assert!(never_sent(&tonic::Status::unavailable(
            "invalid peer certificate: UnknownIssuer"
        )));
        assert!(!never_sent(&tonic::Status::unavailable(
            "transport error: connection reset"
        )));
        assert!(!never_sent(&tonic::Status::deadline_exceeded(
            "tcp connect error"
        )));
        assert_eq!(not_taken(&refused), Some(NotTaken::NoConnection));
    }

    #[test]
    fn an_http2_error_the_node_did_not_send_does_not_count() {
        // h2 raised these itself (no frame from the node): they say nothing about what the node
        // did. The node's own GOAWAY and REFUSED_STREAM are exercised against a real HTTP/2
        // connection by `tests/a_call_a_closing_node_refused_is_retried_or_answered_503.rs`.
        for reason in [h2::Reason::REFUSED_STREAM, h2::Reason::NO_ERROR] {
            let status = tonic::Status::from_error(Box::new(h2::Error::from(reason)));
            assert!(
                matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Internal
                ),
                "{status:?}"
            );
            assert_eq!(not_taken(&status), None, "{status:?}");
        }
    }
}
