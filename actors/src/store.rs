//! What a failed read or write of a NATS store (a KV bucket, a stream) means for the message
//! being handled: an outage that passes ([`StoreError::Unavailable`] — a timeout, no leader
//! during an election, no stream, the connection down, a full store, writers racing) or a
//! record that can never be written ([`StoreError::Broken`] — it does not decode, or is over
//! the server's max payload). Handlers hold a message through the first
//! ([`HandlerError::unavailable`](crate::handler::HandlerError::unavailable), the views'
//! [`outage`](crate::projection::outage)) and fail it towards poison only for the second.

/// Why a record could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer, or refused for a reason that passes: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The record cannot be read or written however often it is tried.
    #[error("{0}")]
    Broken(String),
}

impl StoreError {
    /// Classifies a failed write of `key` (see [`write_cannot_succeed`]).
    pub(crate) fn of_write(key: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        if write_cannot_succeed(error) {
            Self::Broken(format!("writing {key}: {error}"))
        } else {
            Self::Unavailable(format!("writing {key}: {error}"))
        }
    }

    /// The message, whichever kind.
    pub fn message(&self) -> &str {
        match self {
            Self::Unavailable(m) | Self::Broken(m) => m,
        }
    }
}

/// True when a failed NATS write can never succeed however often it is tried: the message is
/// over the server's max payload, or the key is not a valid KV key. Everything else a write
/// meets (a timeout, no responders, no leader, a lost connection, a full store) passes.
pub(crate) fn write_cannot_succeed(error: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    use async_nats::jetstream::kv::{
        CreateError, CreateErrorKind, PutError, PutErrorKind, UpdateError, UpdateErrorKind,
    };
    let mut cause = Some(error);
    while let Some(e) = cause {
        let never = e
            .downcast_ref::<PublishError>()
            .is_some_and(|p| p.kind() == PublishErrorKind::MaxPayloadExceeded)
            || e.downcast_ref::<UpdateError>()
                .is_some_and(|u| u.kind() == UpdateErrorKind::InvalidKey)
            || e.downcast_ref::<CreateError>()
                .is_some_and(|c| c.kind() == CreateErrorKind::InvalidKey)
            || e.downcast_ref::<PutError>()
                .is_some_and(|p| p.kind() == PutErrorKind::InvalidKey);
        if never {
            return true;
        }
        cause = e.source();
    }
    false
}

impl From<StoreError> for crate::handler::HandlerError {
    /// An outage holds the message ([`HandlerError::unavailable`](crate::handler::HandlerError::unavailable)); a broken record fails it.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::unavailable(m),
            StoreError::Broken(m) => Self::new(m),
        }
    }
}
