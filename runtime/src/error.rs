//! Every error type of the runtime, re-exported in one place. Each names what failed (the
//! setting, stream, field, subject or header) and keeps its source.

pub use crate::config::ConfigError;
pub use crate::consumer::ConsumerError;
pub use crate::context::{ContextError, InvalidCorrelationId, InvalidTraceId};
pub use crate::metrics::MetricsError;
pub use crate::nats::NatsError;
pub use crate::nats_server::NatsServerError;
pub use crate::stream::{Incompatibility, StreamError};
pub use crate::subject::SubjectTokenError;
pub use crate::trace::TraceParentError;
