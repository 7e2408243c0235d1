//! What a failed call did: the contract by which a node tells its caller whether a failed
//! command may have committed, and by which a caller judges a transport failure.
//!
//! A gRPC code alone cannot say it: `DEADLINE_EXCEEDED` is true both of a command that never
//! reached the store and of one whose commit was acknowledged a moment too late. So a node marks
//! a failed call with the trailing metadata key [`ERROR_KIND`] (one of [`ErrorKind`]), and a
//! caller that got no such mark judges by where the call failed ([`never_sent`]):
//!
//! | what happened | mark | Gateway answer |
//! |---|---|---|
//! | the deadline passed before any publish started | `not-committed` | 504 `timeout` + `Retry-After` (nothing was committed) |
//! | a publish had started when the deadline passed, or its ack never came | `outcome-unknown` | 504 `outcome-unknown` (retry with the same `Idempotency-Key`, or read the aggregate) |
//! | an idempotency key reused with a different command | `idempotency-key-reused` | 422 `idempotency-key-reused` |
//! | no connection to the node could be made (the request was never sent) | — | 503 `unavailable` + `Retry-After` |
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

/// True when a transport failure happened before the request could be sent (connecting
/// failed: refused, DNS, connect timeout, a TLS handshake whose certificate was not trusted),
/// so the call certainly did not reach the node.
/// Everything else that fails after connecting may have reached it.
pub fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut text = status.message().to_ascii_lowercase();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        text.push(' ');
        text.push_str(&e.to_string().to_ascii_lowercase());
        source = e.source();
    }
    [
        "tcp connect error",
        "connection refused",
        "error trying to connect",
        "dns error",
        // rustls refused the node's certificate: the handshake, before any request, failed.
        "invalid peer certificate",
    ]
    .iter()
    .any(|m| text.contains(m))
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
    }
}
