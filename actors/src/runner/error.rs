//! Errors of the runner role, mapped to a gRPC status once, at the node's edge.

use std::time::Duration;

/// Why a workflow call or input failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerError {
    /// Malformed input: bad token, input that does not decode.
    #[error("{0}")]
    InvalidArgument(String),
    /// No workflow of that name on this node.
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    /// No such instance (for this tenant).
    #[error("{0}")]
    NotFound(String),
    /// The instance exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The workflow refused the input.
    #[error("{0}")]
    Rejected(String),
    /// Concurrent writers kept winning.
    #[error("{0}")]
    Conflict(String),
    /// The instance's mailbox, or the node's instance budget, is full.
    #[error("{0}")]
    Busy(String),
    /// NATS or the instance actor failed.
    #[error("{0}")]
    Unavailable(String),
    /// No answer in time; the input may still be applied (inputs are idempotent).
    #[error("no answer within {0:?}; the input may still be applied")]
    Timeout(Duration),
}

impl RunnerError {
    /// The gRPC status for this error.
    pub fn to_status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            Self::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Self::UnknownWorkflow(_) | Self::NotFound(_) => tonic::Status::not_found(msg),
            Self::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Self::Rejected(_) => tonic::Status::failed_precondition(msg),
            Self::Conflict(_) => tonic::Status::aborted(msg),
            Self::Busy(_) => tonic::Status::resource_exhausted(msg),
            Self::Unavailable(_) => tonic::Status::unavailable(msg),
            Self::Timeout(_) => tonic::Status::deadline_exceeded(msg),
        }
    }
}
