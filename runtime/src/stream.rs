//! Stream policies: one authoritative config per stream, and [`ensure_stream`], which creates a
//! missing stream or validates an existing one — it never updates, replaces or deletes a stream.
//!
//! | stream | subjects | storage | retention | max age | duplicate window (min) |
//! |---|---|---|---|---|---|
//! | `AGGREGATE_EVENTS` | `tenant.*.aggregate.*.*` | file | limits | none (event store) | 5 min (2 min) |
//! | `WORKFLOW_COMMANDS` | `tenant.*.effect.*` | file | limits | 7 days (≥ 1 day or none) | 5 min (2 min) |
//! | `WORKFLOW_EVENTS` | `tenant.*.effect_result.*`, `tenant.*.workflow.*.*` | file | limits | 30 days (≥ 7 days or none) | 5 min (2 min) |
//!
//! An existing stream is compatible when its subjects cover the required ones (a superset is
//! fine), it is file-stored with limits retention, its limits (messages, bytes, age, message
//! size) are unlimited or at least the minimums, its duplicate window is at least the minimum,
//! and it accepts publishes (not sealed, not a mirror, acks on), with at least the replicas the
//! deployment asks for ([`set_replicas`], `nats.replicas`). `AGGREGATE_EVENTS` must keep every
//! message: no max age, no per-subject limit.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::{CreateStreamErrorKind, GetStreamErrorKind},
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::subject::{covers, filter};

/// Name of the event store stream.
pub const AGGREGATE_EVENTS: &str = "AGGREGATE_EVENTS";
/// Name of the effect command stream.
pub const WORKFLOW_COMMANDS: &str = "WORKFLOW_COMMANDS";
/// Name of the effect result and workflow event stream.
pub const WORKFLOW_EVENTS: &str = "WORKFLOW_EVENTS";

/// Replicas of the streams and KV buckets this process creates: 1 until [`set_replicas`].
static REPLICAS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Sets the replicas (1..=5) of every stream and KV bucket this process creates, and the least
/// an existing stream must have. A property of the deployment (1 on one server, 3 on a
/// cluster): set once at start, from `nats.replicas` ([`crate::nats::connect`] does).
pub fn set_replicas(n: usize) {
    REPLICAS.store(n.clamp(1, 5), std::sync::atomic::Ordering::Relaxed);
}

/// The replicas set with [`set_replicas`] (1 by default).
pub fn replicas() -> usize {
    REPLICAS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Smallest accepted per-message size limit of an existing stream (1 MiB).
pub const MIN_MAX_MESSAGE_SIZE: i32 = 1024 * 1024;

/// The authoritative config of one stream and the minimums an existing stream must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPolicy {
    /// Stream name.
    pub name: &'static str,
    /// What the stream is for (stored as the stream description).
    pub description: &'static str,
    /// Subjects the stream must capture.
    pub subjects: Vec<String>,
    /// Max age when creating; `Duration::ZERO` means never expire.
    pub max_age: Duration,
    /// Smallest accepted max age of an existing stream (`None`: only "never expire" is accepted).
    pub min_max_age: Option<Duration>,
    /// Duplicate window when creating.
    pub duplicate_window: Duration,
    /// Smallest accepted duplicate window of an existing stream.
    pub min_duplicate_window: Duration,
}

/// The policy of `AGGREGATE_EVENTS`, the event store: nothing ever expires.
pub fn aggregate_events() -> StreamPolicy {
    StreamPolicy {
        name: AGGREGATE_EVENTS,
        description: "Cloudlysis event store: one message per aggregate commit",
        subjects: vec![filter::all_aggregate_events()],
        max_age: Duration::ZERO,
        min_max_age: None,
        duplicate_window: Duration::from_secs(300),
        min_duplicate_window: Duration::from_secs(120),
    }
}

/// The policy of `WORKFLOW_COMMANDS`: effect commands, kept 7 days.
pub fn workflow_commands() -> StreamPolicy {
    StreamPolicy {
        name: WORKFLOW_COMMANDS,
        description: "Cloudlysis effect commands published by the outbox relay",
        subjects: vec![filter::all_effect_commands()],
        max_age: Duration::from_secs(7 * 24 * 3600),
        min_max_age: Some(Duration::from_secs(24 * 3600)),
        duplicate_window: Duration::from_secs(300),
        min_duplicate_window: Duration::from_secs(120),
    }
}

/// The policy of `WORKFLOW_EVENTS`: effect results and workflow events, kept 30 days.
pub fn workflow_events() -> StreamPolicy {
    StreamPolicy {
        name: WORKFLOW_EVENTS,
        description: "Cloudlysis effect results and workflow events",
        subjects: vec![filter::all_effect_results(), filter::all_workflow_events()],
        max_age: Duration::from_secs(30 * 24 * 3600),
        min_max_age: Some(Duration::from_secs(7 * 24 * 3600)),
        duplicate_window: Duration::from_secs(300),
        min_duplicate_window: Duration::from_secs(120),
    }
}

/// Every stream Cloudlysis uses, in the order services ensure them.
pub fn all() -> Vec<StreamPolicy> {
    vec![aggregate_events(), workflow_commands(), workflow_events()]
}

/// Why an existing stream cannot be used: the stream, and every field that does not meet the
/// policy with its reason (the first in `field` and `reason`, the rest in `more`), so one look
/// names all that an operator has to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Stream name.
    pub stream: String,
    /// The first offending config field, as NATS names it.
    pub field: &'static str,
    /// What is wrong with it and what is required.
    pub reason: String,
    /// The other offending fields and their reasons, in the order they are checked.
    pub more: Vec<(&'static str, String)>,
}

impl Incompatibility {
    /// Every offending field, in the order they are checked.
    pub fn fields(&self) -> Vec<&'static str> {
        std::iter::once(self.field)
            .chain(self.more.iter().map(|(f, _)| *f))
            .collect()
    }
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {} is incompatible: field `{}`: {}",
            self.stream, self.field, self.reason
        )?;
        for (field, reason) in &self.more {
            write!(f, "; field `{field}`: {reason}")?;
        }
        Ok(())
    }
}

/// What [`ensure_stream`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The stream was missing and was created from the policy.
    Created,
    /// The stream existed and is compatible; it was left unchanged.
    Compatible,
}

/// A stream operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The existing stream does not meet the policy; it was left unchanged.
    #[error("{0}")]
    Incompatible(Incompatibility),
    /// The stream does not exist (from [`check_stream`]).
    #[error("stream {stream} does not exist")]
    Missing {
        /// Stream name.
        stream: String,
    },
    /// NATS failed or timed out.
    #[error("stream {stream}: {operation} failed: {source}")]
    Nats {
        /// Stream name.
        stream: String,
        /// What was attempted.
        operation: &'static str,
        /// The NATS error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StreamPolicy {
    /// The exact config [`ensure_stream`] creates.
    pub fn stream_config(&self) -> Config {
        Config {
            name: self.name.to_string(),
            description: Some(self.description.to_string()),
            subjects: self.subjects.clone(),
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: self.max_age,
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_message_size: -1,
            duplicate_window: self.duplicate_window,
            num_replicas: replicas(),
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Checks an existing stream's config against the policy: every field that does not meet
    /// it is named.
    pub fn check(&self, existing: &Config) -> Result<(), Incompatibility> {
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let mut fail = |field: &'static str, reason: String| problems.push((field, reason));
        let missing: Vec<&String> = self
            .subjects
            .iter()
            .filter(|required| !existing.subjects.iter().any(|s| covers(s, required)))
            .collect();
        if !missing.is_empty() {
            fail(
                "subjects",
                format!(
                    "required subjects {missing:?} are not captured (stream has {:?})",
                    existing.subjects
                ),
            );
        }
        if existing.storage != StorageType::File {
            fail(
                "storage",
                format!("must be file, found {:?}", existing.storage).to_lowercase(),
            );
        }
        if existing.retention != RetentionPolicy::Limits {
            fail(
                "retention",
                format!("must be limits, found {:?}", existing.retention).to_lowercase(),
            );
        }
        match self.min_max_age {
            None if !existing.max_age.is_zero() => {
                fail(
                    "max_age",
                    format!(
                        "must be unlimited (0): this stream is the event store and never expires \
                         messages; found {:?}",
                        existing.max_age
                    ),
                );
            }
            Some(min) if !existing.max_age.is_zero() && existing.max_age < min => {
                fail(
                    "max_age",
                    format!(
                        "must be unlimited (0) or at least {min:?}, found {:?}",
                        existing.max_age
                    ),
                );
            }
            _ => {}
        }
        if existing.max_messages_per_subject > 0 {
            fail(
                "max_msgs_per_subject",
                format!(
                    "must be unlimited (-1): a per-subject limit silently drops older events or \
                     commands of the same subject; found {}",
                    existing.max_messages_per_subject
                ),
            );
        }
        if self.min_max_age.is_none() && (existing.max_messages > 0 || existing.max_bytes > 0) {
            let field = if existing.max_messages > 0 {
                "max_msgs"
            } else {
                "max_bytes"
            };
            fail(
                field,
                "must be unlimited (-1): the event store keeps every event".to_string(),
            );
        }
        if existing.max_message_size > 0 && existing.max_message_size < MIN_MAX_MESSAGE_SIZE {
            fail(
                "max_msg_size",
                format!(
                    "must be unlimited (-1) or at least {MIN_MAX_MESSAGE_SIZE} bytes, found {}",
                    existing.max_message_size
                ),
            );
        }
        if existing.duplicate_window < self.min_duplicate_window {
            fail(
                "duplicate_window",
                format!(
                    "must be at least {:?} (Nats-Msg-Id de-duplication), found {:?}",
                    self.min_duplicate_window, existing.duplicate_window
                ),
            );
        }
        if existing.num_replicas < replicas() {
            fail(
                "num_replicas",
                format!(
                    "must be at least {} (nats.replicas), found {}",
                    replicas(),
                    existing.num_replicas
                ),
            );
        }
        if existing.sealed {
            fail(
                "sealed",
                "must be false: a sealed stream refuses publishes".into(),
            );
        }
        if existing.no_ack {
            fail("no_ack", "must be false: publishes need acks".into());
        }
        if existing.mirror.is_some() {
            fail("mirror", "must be unset: a mirror refuses publishes".into());
        }
        let mut problems = problems.into_iter();
        match problems.next() {
            None => Ok(()),
            Some((field, reason)) => Err(Incompatibility {
                stream: self.name.to_string(),
                field,
                reason,
                more: problems.collect(),
            }),
        }
    }
}

/// Creates the stream when missing, or validates the existing one. Never updates, replaces or
/// deletes a stream. Returns what happened and the stream's current info.
pub async fn ensure_stream(
    js: &jetstream::Context,
    policy: &StreamPolicy,
) -> Result<(EnsureOutcome, jetstream::stream::Info), StreamError> {
    match fetch(js, policy).await? {
        Some(info) => {
            policy
                .check(&info.config)
                .map_err(StreamError::Incompatible)?;
            Ok((EnsureOutcome::Compatible, info))
        }
        None => match js.create_stream(policy.stream_config()).await {
            Ok(mut stream) => {
                let info = stream.info().await.map_err(|e| nats(policy, "info", e))?;
                Ok((EnsureOutcome::Created, info.clone()))
            }
            // Another service created it between our lookup and our create: validate theirs.
            Err(e) if is_already_exists(&e.kind()) => {
                let info = fetch(js, policy)
                    .await?
                    .ok_or_else(|| StreamError::Missing {
                        stream: policy.name.to_string(),
                    })?;
                policy
                    .check(&info.config)
                    .map_err(StreamError::Incompatible)?;
                Ok((EnsureOutcome::Compatible, info))
            }
            Err(e) => Err(nats(policy, "create", e)),
        },
    }
}

/// Validates the existing stream without creating anything.
pub async fn check_stream(
    js: &jetstream::Context,
    policy: &StreamPolicy,
) -> Result<jetstream::stream::Info, StreamError> {
    let info = fetch(js, policy)
        .await?
        .ok_or_else(|| StreamError::Missing {
            stream: policy.name.to_string(),
        })?;
    policy
        .check(&info.config)
        .map_err(StreamError::Incompatible)?;
    Ok(info)
}

async fn fetch(
    js: &jetstream::Context,
    policy: &StreamPolicy,
) -> Result<Option<jetstream::stream::Info>, StreamError> {
    match js.get_stream(policy.name).await {
        Ok(stream) => Ok(Some(stream.cached_info().clone())),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js_err)
                if js_err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(nats(policy, "lookup", e)),
        },
    }
}

fn is_already_exists(kind: &CreateStreamErrorKind) -> bool {
    matches!(kind, CreateStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST)
}

fn nats(
    policy: &StreamPolicy,
    operation: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StreamError {
    StreamError::Nats {
        stream: policy.name.to_string(),
        operation,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests;
