//! The `Aggregate` behaviour and the entities (virtual actors) that run it.
//!
//! An aggregate is one file: its state, command and event types, `handle` (decide) and `apply`
//! (evolve). Register it on an [`AggregateNode`] with one
//! line. Commands and events are enums tagged as `{"type": "...", "payload": {...}}`:
//!
//! ```
//! use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default)]
//! pub struct Counter { value: u64 }
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "type", content = "payload")]
//! pub enum CounterCommand { Add { by: u64 } }
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(tag = "type", content = "payload")]
//! pub enum CounterEvent { Added { by: u64 } }
//!
//! pub struct CounterAggregate;
//!
//! impl Aggregate for CounterAggregate {
//!     const TYPE: &'static str = "counter";
//!     const SCHEMA_VERSION: u32 = 1;
//!     type State = Counter;
//!     type Command = CounterCommand;
//!     type Event = CounterEvent;
//!
//!     fn handle(state: &Counter, command: CounterCommand, _: &CommandContext) -> Result<Vec<CounterEvent>, Rejection> {
//!         match command {
//!             CounterCommand::Add { by: 0 } => Err(Rejection::new("by must be greater than 0")),
//!             CounterCommand::Add { by } if state.value.checked_add(by).is_none() => Err(Rejection::new("overflow")),
//!             CounterCommand::Add { by } => Ok(vec![CounterEvent::Added { by }]),
//!         }
//!     }
//!
//!     fn apply(state: &mut Counter, event: &CounterEvent) {
//!         match event { CounterEvent::Added { by } => state.value += by }
//!     }
//! }
//! ```
//!
//! Each `(tenant, aggregate id)` runs as one entity — a virtual actor in its type's host
//! (ADR 0012): loaded on demand, rehydrated from `AGGREGATE_EVENTS` on its first command, one
//! command at a time in arrival order, passivated after an idle timeout, with a bounded mailbox
//! (a full one answers `RESOURCE_EXHAUSTED`).

//!
//! Layout:
//! - this file — the [`Aggregate`] behaviour and the types of a command's journey.
//! - [`node`] — the [`AggregateNode`]: registry (`register::<A>()`), `CommandService`, gRPC
//!   serving with health and reflection.
//! - `host` — the host of one aggregate type.
//! - `cell` — its live entities: registry, turn, mailbox bound, passivation.
//! - `entity` — one entity's command: rehydrate, decide, commit, idempotency.

use std::time::Duration;

use bytes::Bytes;
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::context::RequestContext;
use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_runtime::outcome::ErrorKind;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod cell;
mod command;
mod entity;
mod host;
pub mod node;
mod records;
mod rehydrate;
mod snapshot;
mod tagged;

pub use entity::ENTITY_KIND;
pub(crate) use host::{AggregateHost, Host};
pub use node::{AggregateNode, AggregateNodeBuilder};

/// A domain rejection: the command is valid but not allowed in this state (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

impl Rejection {
    /// A rejection with a message for the client.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// What `handle` knows besides state and command.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Tenant, correlation and trace of the command.
    pub request: RequestContext,
    /// The aggregate id.
    pub aggregate_id: String,
    /// The aggregate version before this command.
    pub version: u64,
}

/// An event-sourced aggregate: decide events from commands, evolve state from events.
pub trait Aggregate: Send + Sync + 'static {
    /// Aggregate type: a subject token (`account`).
    const TYPE: &'static str;
    /// Schema version of this aggregate's events.
    const SCHEMA_VERSION: u32;
    /// State, rebuilt by folding events over `Default`.
    type State: Default + Send + Sync + 'static;
    /// Commands, decoded from `{"type": ..., "payload": ...}`.
    type Command: DeserializeOwned + Send + 'static;
    /// Events, encoded as `{"type": ..., "payload": ...}`.
    type Event: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Decides the events of a command (pure: no I/O).
    fn handle(
        state: &Self::State,
        command: Self::Command,
        ctx: &CommandContext,
    ) -> Result<Vec<Self::Event>, Rejection>;

    /// Applies one event to the state.
    fn apply(state: &mut Self::State, event: &Self::Event);

    /// Snapshot policy (default: none — rehydration replays the whole history). With
    /// `Some(Snapshots::json(1000, 1))` the entity's state is stored after every 1 000 events
    /// and rehydration replays only the events after the latest snapshot.
    fn snapshots() -> Option<Snapshots<Self::State>> {
        None
    }

    /// Rewrites an event stored at schema version `from` into the shape of version `from + 1`
    /// (its type name and payload), so that events written by older code are read as the
    /// current [`Aggregate::Event`] — in rehydration, in views ([`decode_event`]) and in
    /// rebuilds. Called once per version step, oldest first. The default changes nothing:
    /// right for additive changes that `#[serde(default)]` covers. An error names why the
    /// event cannot be read; it fails the command (rehydration) or the event (views).
    fn upcast(
        from: u32,
        event_type: &mut String,
        payload: &mut serde_json::Value,
    ) -> Result<(), String> {
        let _ = (from, event_type, payload);
        Ok(())
    }
}

/// How an aggregate's state is snapshotted ([`Aggregate::snapshots`]).
pub struct Snapshots<S> {
    /// A snapshot whenever a commit reaches a multiple of `every` events (> 0).
    pub every: u64,
    /// Version of the state's encoding: bump it when the state's shape changes; snapshots of
    /// another version are ignored (the entity replays its history once and writes a new one).
    pub schema_version: u32,
    /// Encodes the state.
    pub encode: fn(&S) -> Result<serde_json::Value, String>,
    /// Decodes a stored state; an error makes rehydration ignore the snapshot.
    pub decode: fn(serde_json::Value) -> Result<S, String>,
}

impl<S: Serialize + DeserializeOwned> Snapshots<S> {
    /// Snapshots every `every` events, the state encoded as JSON by serde, tagged with the
    /// state's `schema_version`.
    pub fn json(every: u64, schema_version: u32) -> Self {
        Self {
            every,
            schema_version,
            encode: |s| serde_json::to_value(s).map_err(|e| e.to_string()),
            decode: |v| serde_json::from_value(v).map_err(|e| e.to_string()),
        }
    }
}

/// Decodes a stored event as the current [`Aggregate::Event`] of `A`: an event from an older
/// schema version goes through [`Aggregate::upcast`] step by step; an event from a newer one
/// (written by newer code) is refused rather than misread. The error names the event.
pub fn decode_event<A: Aggregate>(env: &EventEnvelope) -> Result<A::Event, String> {
    let name = || {
        format!(
            "{} {}#{} ({}, schema_version {})",
            env.aggregate_type, env.aggregate_id, env.sequence, env.event_type, env.schema_version
        )
    };
    if env.schema_version > A::SCHEMA_VERSION {
        return Err(format!(
            "{} is newer than this code's schema_version {} for aggregate `{}`: deploy the newer code",
            name(),
            A::SCHEMA_VERSION,
            A::TYPE
        ));
    }
    let decoded = if env.schema_version == A::SCHEMA_VERSION {
        // The common case: read in place.
        A::Event::deserialize(tagged::Tagged {
            event_type: &env.event_type,
            payload: &env.payload,
        })
    } else {
        let mut event_type = env.event_type.clone();
        let mut payload = env.payload.clone();
        for from in env.schema_version..A::SCHEMA_VERSION {
            A::upcast(from, &mut event_type, &mut payload)
                .map_err(|e| format!("{}: upcast from version {from} failed: {e}", name()))?;
        }
        A::Event::deserialize(tagged::Tagged {
            event_type: &event_type,
            payload: &payload,
        })
    };
    decoded.map_err(|e| {
        format!(
            "{} does not decode as an event of aggregate `{}`: {e}",
            name(),
            A::TYPE
        )
    })
}

/// Why a command failed; mapped to a gRPC status once, at the node's edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Malformed input: unknown command type, bad payload, bad token.
    #[error("{0}")]
    InvalidArgument(String),
    /// No aggregate of that type on this node.
    #[error("unknown aggregate type `{0}`")]
    UnknownAggregate(String),
    /// The aggregate refused the command.
    #[error("{0}")]
    Rejected(String),
    /// Version conflict (expected version mismatch, or lost the race twice).
    #[error("{0}")]
    Conflict(String),
    /// The entity's mailbox is full, or the node holds `aggregate.max_entities` live entities:
    /// what is busy, and why.
    #[error("{0}; retry later")]
    Busy(String),
    /// NATS or the entity failed.
    #[error("{0}")]
    Unavailable(String),
    /// The deadline passed before any publish started: nothing was committed.
    #[error("the command did not complete within {0:?}; nothing was committed")]
    Timeout(Duration),
    /// The idempotency key was used before with a different command (type, id or payload).
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The commit was sent but not acknowledged: it may or may not have landed. Retry only with
    /// an idempotency key (the caller says so: it knows whether the command carried one).
    #[error("the outcome is unknown (the commit may have landed): {0}")]
    OutcomeUnknown(String),
}

impl CommandError {
    /// The gRPC status for this error.
    pub fn to_status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            CommandError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            CommandError::UnknownAggregate(_) => tonic::Status::not_found(msg),
            CommandError::Rejected(_) => tonic::Status::failed_precondition(msg),
            CommandError::Conflict(_) => tonic::Status::aborted(msg),
            // Refused before anything was published.
            CommandError::Busy(_) => {
                ErrorKind::NotCommitted.mark(tonic::Status::resource_exhausted(msg))
            }
            CommandError::Unavailable(_) => {
                ErrorKind::NotCommitted.mark(tonic::Status::unavailable(msg))
            }
            CommandError::Timeout(_) => {
                ErrorKind::NotCommitted.mark(tonic::Status::deadline_exceeded(msg))
            }
            CommandError::OutcomeUnknown(_) => {
                ErrorKind::OutcomeUnknown.mark(tonic::Status::deadline_exceeded(msg))
            }
            CommandError::IdempotencyKeyReused(_) => {
                ErrorKind::IdempotencyKeyReused.mark(tonic::Status::failed_precondition(msg))
            }
        }
    }
}

/// The result of a command (also what the idempotency store keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteReply {
    /// Aggregate version after the command.
    pub version: u64,
    /// Ids of the committed events.
    pub event_ids: Vec<String>,
    /// Stream sequence of the commit (0 when nothing was committed).
    pub stream_sequence: u64,
    /// True when an idempotency key matched an earlier command.
    #[serde(default)]
    pub replayed: bool,
}

/// One command on its way to an entity.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// Context; the tenant is the authenticated one.
    pub ctx: RequestContext,
    /// Aggregate id.
    pub aggregate_id: SubjectToken,
    /// Command type (the enum variant name).
    pub command_type: String,
    /// Command payload (JSON).
    pub payload: Bytes,
    /// Optional expected version (`If-Match`).
    pub expected_version: Option<u64>,
    /// After this instant the caller has given up: the command is not committed any more.
    pub deadline: Option<tokio::time::Instant>,
}

/// Tunables of the aggregate node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateSettings {
    /// Entity mailbox capacity (default 64).
    pub mailbox: usize,
    /// Idle time before an entity is passivated (default 5 min).
    pub idle_timeout: Duration,
    /// Deadline of one command inside the node (default 10 s).
    pub command_timeout: Duration,
    /// Deadline of a publish or KV call (default 5 s).
    pub io_timeout: Duration,
    /// Most live entities per aggregate type; commands for new entities beyond it are refused
    /// as busy (429) until idle ones passivate (default 100 000).
    pub max_entities: usize,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        Self {
            mailbox: 64,
            idle_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(5),
            max_entities: 100_000,
        }
    }
}
