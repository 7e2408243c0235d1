//! Errors of the supervision crate.

use std::time::Duration;

/// A supervisor operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// A child could not be started.
    #[error("supervisor `{supervisor}`: child `{child}` failed to start: {reason}")]
    StartFailed {
        /// Supervisor name.
        supervisor: String,
        /// Child name.
        child: String,
        /// Why.
        reason: String,
    },
    /// A child with this name already exists.
    #[error("supervisor `{supervisor}` already has a child named `{child}`")]
    DuplicateChild {
        /// Supervisor name.
        supervisor: String,
        /// Child name.
        child: String,
    },
    /// No child with this name.
    #[error("supervisor `{supervisor}` has no child named `{child}`")]
    NoSuchChild {
        /// Supervisor name.
        supervisor: String,
        /// Child name.
        child: String,
    },
    /// The supervisor is not running.
    #[error("supervisor `{supervisor}` is not running")]
    NotRunning {
        /// Supervisor name.
        supervisor: String,
    },
    /// The supervisor did not answer in time.
    #[error("supervisor `{supervisor}` did not answer within {timeout:?}")]
    Timeout {
        /// Supervisor name.
        supervisor: String,
        /// The deadline.
        timeout: Duration,
    },
}
