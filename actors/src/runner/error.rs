//! Errors of the runner role, mapped to a gRPC status once, at the node's edge.

use std::time::Duration;

/// Why a workflow call or input failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunnerError {
    /// Malformed input: bad token, input that does not decode.
    #[error("{0}")]
    InvalidArgument(String),
    /// No workflow of that name on this node.
    #[error("unknown workflow `{name}` (this runner runs: {})", runs_list(.runs))]
    UnknownWorkflow {
        /// The name asked for.
        name: String,
        /// The workflows this node runs.
        runs: Vec<String>,
    },
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
    /// A record does not decode, or cannot be written however often it is tried (over the
    /// server's max payload): a fault in the runner's data that no retry cures (gRPC
    /// `DATA_LOSS`; 502 at the Gateway, without `Retry-After`). An input meeting it fails
    /// towards poison.
    #[error("{0}")]
    Corrupt(String),
    /// A store (the instances bucket, the outbox index) did not answer a read or write — a
    /// timeout, no leader, the connection down: it passes. An input is held and tried again
    /// ([`HandlerError::unavailable`](crate::handler::HandlerError::unavailable)), never
    /// quarantined for it.
    #[error("{0}")]
    StoreUnavailable(String),
    /// No answer in time; the input may still be applied (inputs are idempotent).
    #[error("no answer within {0:?}; the input may still be applied")]
    Timeout(Duration),
}

/// `` `a`, `b` ``, or `none`.
fn runs_list(runs: &[String]) -> String {
    if runs.is_empty() {
        return "none".into();
    }
    let quoted: Vec<String> = runs.iter().map(|r| format!("`{r}`")).collect();
    quoted.join(", ")
}

impl From<crate::store::StoreError> for RunnerError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(m) => Self::StoreUnavailable(m),
            crate::store::StoreError::Broken(m) => Self::Corrupt(m),
        }
    }
}

impl RunnerError {
    /// The gRPC status for this error.
    pub fn to_status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            Self::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Self::UnknownWorkflow { .. } | Self::NotFound(_) => tonic::Status::not_found(msg),
            Self::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Self::Rejected(_) => tonic::Status::failed_precondition(msg),
            Self::Conflict(_) => tonic::Status::aborted(msg),
            Self::Busy(_) => tonic::Status::resource_exhausted(msg),
            Self::Unavailable(_) | Self::StoreUnavailable(_) => tonic::Status::unavailable(msg),
            Self::Timeout(_) => tonic::Status::deadline_exceeded(msg),
            Self::Corrupt(_) => tonic::Status::data_loss(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_workflow_names_what_the_runner_runs_in_a_closed_sentence() {
        let e = RunnerError::UnknownWorkflow {
            name: "nosuch".into(),
            runs: vec!["transfer".into(), "payout".into()],
        };
        assert_eq!(
            e.to_string(),
            "unknown workflow `nosuch` (this runner runs: `transfer`, `payout`)"
        );
        assert_eq!(e.to_status().code(), tonic::Code::NotFound);
        let none = RunnerError::UnknownWorkflow {
            name: "x".into(),
            runs: vec![],
        };
        assert_eq!(
            none.to_string(),
            "unknown workflow `x` (this runner runs: none)"
        );
    }
}
