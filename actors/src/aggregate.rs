//! The `Aggregate` behaviour and the entity actors that run it.
//!
//! An aggregate is one file: its state, command and event types, `handle` (decide) and `apply`
//! (evolve). Register it on an [`AggregateNode`](crate::aggregate_node::AggregateNode) with one
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
//! Each `(tenant, aggregate id)` runs as one entity actor: spawned on demand under the node's
//! dynamic supervisor, rehydrated from `AGGREGATE_EVENTS` on its first command, passivated after
//! an idle timeout, with a bounded mailbox (a full one answers `RESOURCE_EXHAUSTED`).

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull, kv};
use bytes::Bytes;
use cloudlysis_runtime::context::{RequestContext, TenantId, headers};
use cloudlysis_runtime::envelope::{COMMIT_SCHEMA_VERSION, Commit, EventEnvelope};
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_runtime::nats::{self, NatsError};
use cloudlysis_runtime::{SubjectToken, kv as buckets, subject};
use cloudlysis_supervision::{ChildSpec, Restart, SupervisorRef};
use dashmap::DashMap;
use futures::StreamExt;
use ractor::RpcReplyPort;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

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
    /// The entity's mailbox is full.
    #[error("aggregate {0} is busy; retry later")]
    Busy(String),
    /// NATS or the entity failed.
    #[error("{0}")]
    Unavailable(String),
    /// No answer within the command timeout; nothing was committed.
    #[error("the command did not complete within {0:?}; nothing was committed")]
    Timeout(Duration),
    /// The commit was sent but not acknowledged: it may or may not have landed. Retry only with
    /// an idempotency key.
    #[error(
        "the outcome is unknown (the commit may have landed): {0}; retry only with an Idempotency-Key"
    )]
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
            CommandError::Busy(_) => tonic::Status::resource_exhausted(msg),
            CommandError::Unavailable(_) => tonic::Status::unavailable(msg),
            CommandError::Timeout(_) | CommandError::OutcomeUnknown(_) => {
                tonic::Status::deadline_exceeded(msg)
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

/// Runs commands for one aggregate type (type-erased for the node's registry).
pub(crate) trait Host: Send + Sync {
    fn execute(
        &self,
        req: CommandRequest,
    ) -> futures::future::BoxFuture<'_, Result<ExecuteReply, CommandError>>;
}

type Slot = Arc<OnceCell<BoundedRef<EntityMsg>>>;

/// Shared by a type's host and its entities.
pub(crate) struct HostShared {
    pub(crate) js: jetstream::Context,
    pub(crate) events: jetstream::stream::Stream,
    pub(crate) idempotency: kv::Store,
    pub(crate) supervisor: SupervisorRef,
    pub(crate) settings: AggregateSettings,
    incarnation: AtomicU64,
    entities: DashMap<String, Slot>,
    live: metrics::Gauge,
}

impl HostShared {
    fn update_live_gauge(&self) {
        self.live.set(self.entities.len() as f64);
    }
}

/// The host of one aggregate type.
pub(crate) struct AggregateHost<A> {
    shared: Arc<HostShared>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> AggregateHost<A> {
    pub(crate) fn new(
        js: jetstream::Context,
        events: jetstream::stream::Stream,
        idempotency: kv::Store,
        supervisor: SupervisorRef,
        settings: AggregateSettings,
    ) -> Self {
        Self {
            shared: Arc::new(HostShared {
                js,
                events,
                idempotency,
                supervisor,
                settings,
                incarnation: AtomicU64::new(0),
                entities: DashMap::new(),
                live: metrics::gauge!(
                    cloudlysis_runtime::metrics::names::ENTITIES,
                    "aggregate_type" => A::TYPE
                ),
            }),
            _aggregate: PhantomData,
        }
    }

    /// Starts an entity under the supervisor. Runs as its own task so a caller that gives up
    /// mid-way cannot leave a started entity behind an empty registry slot.
    async fn spawn(
        shared: Arc<HostShared>,
        key: String,
        tenant: TenantId,
        id: SubjectToken,
    ) -> Result<BoundedRef<EntityMsg>, CommandError> {
        let mailbox = BoundedRef::new(ENTITY_KIND, shared.settings.mailbox);
        let n = shared.incarnation.fetch_add(1, Ordering::Relaxed);
        let supervisor = shared.supervisor.clone();
        let spec = ChildSpec::bounded(format!("{key}#{n}"), mailbox.clone(), move || {
            (
                Entity::<A> {
                    key: key.clone(),
                    tenant: tenant.clone(),
                    id: id.clone(),
                    shared: shared.clone(),
                    _aggregate: PhantomData,
                },
                (),
            )
        })
        // Temporary: a failed entity is not restarted by the supervisor (no intensity storm
        // from one bad aggregate); the next command for the key spawns a fresh one.
        .restart(Restart::Temporary);
        supervisor
            .start_child(spec)
            .await
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        Ok(mailbox)
    }
}

impl<A: Aggregate> Host for AggregateHost<A> {
    fn execute(
        &self,
        req: CommandRequest,
    ) -> futures::future::BoxFuture<'_, Result<ExecuteReply, CommandError>> {
        Box::pin(async move {
            // Malformed commands are refused before any entity is spawned for them.
            decode_command::<A>(&req.command_type, &req.payload)?;
            let key = format!("{}.{}", req.ctx.tenant, req.aggregate_id);
            let now = tokio::time::Instant::now();
            let deadline = req
                .deadline
                .unwrap_or(now + self.shared.settings.command_timeout)
                .min(now + self.shared.settings.command_timeout);
            let mut req = req;
            req.deadline = Some(deadline);
            let timeout = deadline.saturating_duration_since(now);
            // Two tries: the first may hit an entity that is passivating.
            for _ in 0..2 {
                if !self.shared.entities.contains_key(&key)
                    && self.shared.entities.len() >= self.shared.settings.max_entities
                {
                    return Err(CommandError::Busy(format!(
                        "{} live `{}` entities (aggregate.max_entities); retry later",
                        self.shared.settings.max_entities,
                        A::TYPE
                    )));
                }
                let slot = self.shared.entities.entry(key.clone()).or_default().clone();
                self.shared.update_live_gauge();
                let mailbox = slot
                    .get_or_try_init(|| {
                        let spawn = Self::spawn(
                            self.shared.clone(),
                            key.clone(),
                            req.ctx.tenant.clone(),
                            req.aggregate_id.clone(),
                        );
                        async move {
                            tokio::spawn(spawn).await.map_err(|e| {
                                CommandError::Unavailable(format!("entity start failed: {e}"))
                            })?
                        }
                    })
                    .await?
                    .clone();
                let Some(reservation) = mailbox.try_reserve() else {
                    return Err(CommandError::Busy(format!(
                        "{}/{}",
                        A::TYPE,
                        req.aggregate_id
                    )));
                };
                let (tx, rx) = ractor::concurrency::oneshot();
                match reservation.send(EntityMsg::Execute(Box::new(req.clone()), tx.into())) {
                    Ok(()) => {
                        return match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(result)) => result,
                            Ok(Err(_)) => Err(CommandError::Unavailable(
                                "the entity stopped before answering".into(),
                            )),
                            Err(_) => Err(CommandError::Timeout(timeout)),
                        };
                    }
                    Err(_) => {
                        self.shared
                            .entities
                            .remove_if(&key, |_, v| Arc::ptr_eq(v, &slot));
                    }
                }
            }
            Err(CommandError::Unavailable(
                "the entity could not be started".into(),
            ))
        })
    }
}

/// Actor kind of entity actors.
pub const ENTITY_KIND: &str = "entity";

/// Messages of an entity actor.
pub(crate) enum EntityMsg {
    Execute(
        Box<CommandRequest>,
        RpcReplyPort<Result<ExecuteReply, CommandError>>,
    ),
    CheckIdle,
}

struct Entity<A> {
    key: String,
    tenant: TenantId,
    id: SubjectToken,
    shared: Arc<HostShared>,
    _aggregate: PhantomData<fn() -> A>,
}

struct EntityState<S> {
    loaded: Option<Loaded<S>>,
    last_active: tokio::time::Instant,
    _ticker: AbortOnDrop,
}

/// Aborts a task when dropped (the state is dropped on failure too, unlike `post_stop`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Most idempotency keys remembered per loaded entity (from its own commits).
const MAX_REMEMBERED_KEYS: usize = 1024;

impl<S> Loaded<S> {
    fn remember(&mut self, msg_id: String, reply: ExecuteReply) {
        // Bounded: the KV store is the durable record; this map only covers lost KV writes.
        if self.commits_by_msg_id.len() >= MAX_REMEMBERED_KEYS {
            self.commits_by_msg_id.clear();
        }
        self.commits_by_msg_id.insert(msg_id, reply);
    }
}

struct Loaded<S> {
    state: S,
    version: u64,
    last_seq: u64,
    /// Results of this entity's commits by their `Nats-Msg-Id`, for replays whose KV record is
    /// missing.
    commits_by_msg_id: std::collections::HashMap<String, ExecuteReply>,
}

impl<A: Aggregate> BoundedActor for Entity<A> {
    type Msg = EntityMsg;
    type State = EntityState<A::State>;
    type Arguments = ();
    const KIND: &'static str = ENTITY_KIND;

    async fn pre_start(
        &self,
        myself: BoundedRef<EntityMsg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        // Passivation check; rehydration waits for the first command so spawning stays cheap.
        let period = (self.shared.settings.idle_timeout / 2).max(Duration::from_millis(10));
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.tick().await;
            loop {
                interval.tick().await;
                if matches!(
                    myself.try_send(EntityMsg::CheckIdle),
                    Err(cloudlysis_runtime::mailbox::TrySendError::Closed(_))
                ) {
                    return;
                }
            }
        });
        Ok(EntityState {
            loaded: None,
            last_active: tokio::time::Instant::now(),
            _ticker: AbortOnDrop(ticker),
        })
    }

    async fn handle(
        &self,
        myself: &BoundedRef<EntityMsg>,
        msg: EntityMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EntityMsg::Execute(req, reply) => {
                state.last_active = tokio::time::Instant::now();
                // The caller gave up (deadline passed, connection gone): do not commit for it.
                if reply.is_closed()
                    || req
                        .deadline
                        .is_some_and(|d| tokio::time::Instant::now() >= d)
                {
                    return Ok(());
                }
                let result = self.execute(*req, &mut state.loaded).await;
                let _ = reply.send(result);
            }
            EntityMsg::CheckIdle => {
                if state.last_active.elapsed() >= self.shared.settings.idle_timeout
                    && myself.depth() <= 1
                {
                    // Passivate: leave the registry first so new commands spawn a fresh entity,
                    // then drain — commands already queued are still handled, later sends fail
                    // as closed and are retried on a new entity.
                    self.shared.entities.remove_if(&self.key, |_, v| {
                        v.get().is_some_and(|m| m.same_mailbox(myself))
                    });
                    self.shared.update_live_gauge();
                    if let Some(actor) = myself.actor() {
                        let _ = actor.drain();
                    }
                }
            }
        }
        Ok(())
    }
}

impl<A: Aggregate> Entity<A> {
    fn subject(&self) -> String {
        subject::aggregate_event(&self.tenant, &token(A::TYPE), &self.id)
    }

    async fn execute(
        &self,
        req: CommandRequest,
        loaded: &mut Option<Loaded<A::State>>,
    ) -> Result<ExecuteReply, CommandError> {
        let idem_key =
            req.ctx.idempotency_key.as_ref().map(|k| {
                buckets::idempotency_key(self.tenant.as_str(), A::TYPE, self.id.as_str(), k)
            });
        if let Some(key) = &idem_key
            && let Some(previous) = self.recall(key).await?
        {
            return Ok(ExecuteReply {
                replayed: true,
                ..previous
            });
        }
        let deadline = req.deadline;
        let timeout = self.shared.settings.command_timeout;
        let past_deadline = || deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        // Attempt 0 may decide on cached state; whenever that decision is not a commit, or the
        // commit conflicts, the state is reloaded and the command decided once more.
        for attempt in 0..2 {
            let fresh = loaded.is_none() || attempt > 0;
            if fresh {
                let load = self.load();
                *loaded = Some(match deadline {
                    Some(d) => tokio::time::timeout_at(d, load)
                        .await
                        .map_err(|_| CommandError::Timeout(timeout))??,
                    None => load.await?,
                });
            }
            let Some(current) = loaded.as_mut() else {
                return Err(CommandError::Unavailable("entity state not loaded".into()));
            };
            // A replay whose stored result is missing: the commit itself remembers the key.
            if let Some(key) = &idem_key
                && let Some(previous) = current.commits_by_msg_id.get(key)
            {
                return Ok(ExecuteReply {
                    replayed: true,
                    ..previous.clone()
                });
            }
            let events = match self.decide(&req, current) {
                Ok(events) if !events.is_empty() => events,
                // A refusal or no-op decided on cached state is checked against the stream
                // first: another writer may have moved the aggregate on.
                _ if !fresh && self.stream_moved(current.last_seq).await? => continue,
                Ok(_) => {
                    return Ok(ExecuteReply {
                        version: current.version,
                        event_ids: Vec::new(),
                        stream_sequence: 0,
                        replayed: false,
                    });
                }
                Err(e) => return Err(e),
            };
            if past_deadline() {
                return Err(CommandError::Timeout(timeout));
            }
            let commit = self.commit_of(&req.ctx, current.version, &events)?;
            // With an idempotency key the de-duplication id is derived from it, so a replay
            // whose stored result was lost is still dropped by JetStream within its duplicate
            // window, and recognised from the stream after it.
            let msg_id = idem_key.clone().unwrap_or_else(|| commit.commit_id.clone());
            match self
                .publish(&req.ctx, &commit, &msg_id, current.last_seq)
                .await
            {
                Ok(ack) if ack.duplicate => {
                    // Committed before by an earlier attempt: answer with that commit.
                    *loaded = None;
                    let original = self.read_commit(ack.sequence).await?;
                    let reply = ExecuteReply {
                        version: original.events.last().map_or(0, |e| e.sequence),
                        event_ids: original.events.iter().map(|e| e.event_id.clone()).collect(),
                        stream_sequence: ack.sequence,
                        replayed: true,
                    };
                    if let Some(key) = &idem_key {
                        let stored = ExecuteReply {
                            replayed: false,
                            ..reply.clone()
                        };
                        self.remember(key, &stored).await;
                    }
                    return Ok(reply);
                }
                Ok(ack) => {
                    for e in &events {
                        A::apply(&mut current.state, e);
                    }
                    current.version += events.len() as u64;
                    current.last_seq = ack.sequence;
                    let reply = ExecuteReply {
                        version: commit.events.last().map_or(0, |e| e.sequence),
                        event_ids: commit.events.iter().map(|e| e.event_id.clone()).collect(),
                        stream_sequence: ack.sequence,
                        replayed: false,
                    };
                    if let Some(key) = &idem_key {
                        current.remember(key.clone(), reply.clone());
                        self.remember(key, &reply).await;
                    }
                    return Ok(reply);
                }
                Err(NatsError::WrongLastSequence { .. }) => {
                    tracing::debug!(aggregate = A::TYPE, id = %self.id, attempt, "commit conflict; reloading");
                    continue;
                }
                Err(e) => {
                    // The commit may or may not have landed: reload before the next command,
                    // and tell the client the truth.
                    *loaded = None;
                    return Err(CommandError::OutcomeUnknown(e.to_string()));
                }
            }
        }
        *loaded = None;
        Err(CommandError::Conflict(
            "version conflict: another writer committed concurrently; reload and retry".into(),
        ))
    }

    /// Checks the expected version and runs `handle` on the current state.
    fn decide(
        &self,
        req: &CommandRequest,
        current: &Loaded<A::State>,
    ) -> Result<Vec<A::Event>, CommandError> {
        if let Some(expected) = req.expected_version
            && expected != current.version
        {
            return Err(CommandError::Conflict(format!(
                "version conflict: expected version {expected}, aggregate is at version {}",
                current.version
            )));
        }
        let ctx = CommandContext {
            request: req.ctx.clone(),
            aggregate_id: self.id.to_string(),
            version: current.version,
        };
        let command = decode_command::<A>(&req.command_type, &req.payload)?;
        A::handle(&current.state, command, &ctx).map_err(|r| CommandError::Rejected(r.0))
    }

    /// True when the stream holds a later commit for this entity than `last_seq`.
    async fn stream_moved(&self, last_seq: u64) -> Result<bool, CommandError> {
        let subject = self.subject();
        let get = self.shared.events.get_last_raw_message_by_subject(&subject);
        match tokio::time::timeout(self.shared.settings.io_timeout, get).await {
            Err(_) => Err(CommandError::Unavailable(
                "checking the stream timed out".into(),
            )),
            Ok(Ok(m)) => Ok(m.sequence != last_seq),
            Ok(Err(e)) => match e.kind() {
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(last_seq != 0),
                _ => Err(CommandError::Unavailable(e.to_string())),
            },
        }
    }

    /// The commit stored at `sequence`.
    async fn read_commit(&self, sequence: u64) -> Result<Commit, CommandError> {
        let get = self.shared.events.get_raw_message(sequence);
        let msg = tokio::time::timeout(self.shared.settings.io_timeout, get)
            .await
            .map_err(|_| CommandError::Unavailable("reading the earlier commit timed out".into()))?
            .map_err(|e| CommandError::Unavailable(format!("reading the earlier commit: {e}")))?;
        serde_json::from_slice(&msg.payload)
            .map_err(|e| CommandError::Unavailable(format!("earlier commit does not decode: {e}")))
    }

    /// The stored result of an earlier command with the same idempotency key.
    async fn recall(&self, key: &str) -> Result<Option<ExecuteReply>, CommandError> {
        let get = self.shared.idempotency.get(key);
        match tokio::time::timeout(self.shared.settings.io_timeout, get).await {
            Ok(Ok(Some(bytes))) => Ok(serde_json::from_slice(&bytes).ok()),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(CommandError::Unavailable(format!(
                "idempotency lookup: {e}"
            ))),
            Err(_) => Err(CommandError::Unavailable(
                "idempotency lookup timed out".into(),
            )),
        }
    }

    /// Stores a command's result under its idempotency key. A failure is logged, not returned:
    /// the commit stands, and a replay within the stream's duplicate window is still
    /// de-duplicated by its `Nats-Msg-Id` (derived from the key) and answered from the stream.
    async fn remember(&self, key: &str, reply: &ExecuteReply) {
        let Ok(bytes) = serde_json::to_vec(reply) else {
            return;
        };
        let put = self.shared.idempotency.put(key, bytes.into());
        match tokio::time::timeout(self.shared.settings.io_timeout, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(key, error = %e, "idempotency record not stored"),
            Err(_) => tracing::warn!(key, "idempotency record not stored: timed out"),
        }
    }

    fn commit_of(
        &self,
        ctx: &RequestContext,
        version: u64,
        events: &[A::Event],
    ) -> Result<Commit, CommandError> {
        let occurred_at = cloudlysis_runtime::time::rfc3339(SystemTime::now());
        let mut envelopes = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let value = serde_json::to_value(e)
                .map_err(|e| CommandError::Unavailable(format!("event encoding failed: {e}")))?;
            let (event_type, payload) = split_tagged(value);
            envelopes.push(EventEnvelope {
                event_id: uuid::Uuid::now_v7().to_string(),
                tenant_id: self.tenant.to_string(),
                aggregate_type: A::TYPE.to_string(),
                aggregate_id: self.id.to_string(),
                sequence: version + i as u64 + 1,
                event_type,
                schema_version: A::SCHEMA_VERSION,
                occurred_at: occurred_at.clone(),
                payload,
                correlation_id: Some(ctx.correlation_id.to_string()),
                traceparent: Some(ctx.traceparent.to_string()),
            });
        }
        Ok(Commit {
            schema_version: COMMIT_SCHEMA_VERSION,
            commit_id: envelopes[0].event_id.clone(),
            events: envelopes,
        })
    }

    async fn publish(
        &self,
        ctx: &RequestContext,
        commit: &Commit,
        msg_id: &str,
        last_seq: u64,
    ) -> Result<jetstream::publish::PublishAck, NatsError> {
        let payload = serde_json::to_vec(commit).map_err(|e| NatsError::Publish {
            subject: self.subject(),
            reason: e.to_string(),
        })?;
        let mut extra = async_nats::HeaderMap::new();
        extra.insert(
            headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            last_seq.to_string().as_str(),
        );
        nats::publish(
            &self.shared.js,
            self.subject(),
            ctx,
            msg_id,
            Some(&extra),
            Bytes::from(payload),
            self.shared.settings.io_timeout,
        )
        .await
    }

    /// Rebuilds state from the entity's commits.
    async fn load(&self) -> Result<Loaded<A::State>, CommandError> {
        let subject = self.subject();
        let unavailable =
            |e: String| CommandError::Unavailable(format!("rehydration of {subject}: {e}"));
        let last = match tokio::time::timeout(
            self.shared.settings.io_timeout,
            self.shared.events.get_last_raw_message_by_subject(&subject),
        )
        .await
        {
            Err(_) => return Err(unavailable("timed out".into())),
            Ok(Ok(m)) => m.sequence,
            Ok(Err(e)) => match e.kind() {
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(Loaded {
                        state: A::State::default(),
                        version: 0,
                        last_seq: 0,
                        commits_by_msg_id: Default::default(),
                    });
                }
                _ => return Err(unavailable(e.to_string())),
            },
        };
        // An ad-hoc consumer of exactly this entity's subject, unique, self-expiring, deleted
        // by name when done.
        let name = format!("cloudlysis-rehydrate-{}", uuid::Uuid::new_v4().simple());
        let consumer = self
            .shared
            .events
            .create_consumer(pull::Config {
                name: Some(name.clone()),
                filter_subject: subject.clone(),
                ack_policy: jetstream::consumer::AckPolicy::None,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let result = self.fold(&consumer, last).await;
        if let Err(e) = self.shared.events.delete_consumer(&name).await {
            tracing::debug!(consumer = %name, error = %e, "rehydration consumer not deleted; it expires by itself");
        }
        result.map_err(unavailable)
    }

    /// Applies every commit up to (at least) stream sequence `last`.
    async fn fold(
        &self,
        consumer: &jetstream::consumer::PullConsumer,
        last: u64,
    ) -> Result<Loaded<A::State>, String> {
        let mut state = A::State::default();
        let (mut version, mut seen) = (0u64, 0u64);
        let mut loaded_keys: Vec<(String, ExecuteReply)> = Vec::new();
        let deadline = tokio::time::Instant::now() + self.shared.settings.io_timeout * 6;
        while seen < last {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("timed out at sequence {seen} of {last}"));
            }
            let mut batch = consumer
                .batch()
                .max_messages(256)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| e.to_string())?;
                let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
                let commit: Commit = serde_json::from_slice(&m.payload)
                    .map_err(|e| format!("commit at sequence {seq} does not decode: {e}"))?;
                // Commits made with an idempotency key carry it as their msg id.
                if let Some(id) = m.headers.as_ref().and_then(|h| h.get(headers::NATS_MSG_ID))
                    && id.as_str() != commit.commit_id
                {
                    loaded_keys.push((
                        id.as_str().to_string(),
                        ExecuteReply {
                            version: commit.events.last().map_or(0, |e| e.sequence),
                            event_ids: commit.events.iter().map(|e| e.event_id.clone()).collect(),
                            stream_sequence: seq,
                            replayed: false,
                        },
                    ));
                }
                for env in commit.events {
                    let tagged =
                        serde_json::json!({ "type": env.event_type, "payload": env.payload });
                    let event: A::Event = serde_json::from_value(tagged).map_err(|e| {
                        format!(
                            "event {} at sequence {seq} does not decode: {e}",
                            env.event_id
                        )
                    })?;
                    A::apply(&mut state, &event);
                    version = env.sequence;
                }
                seen = seq;
            }
        }
        let mut loaded = Loaded {
            state,
            version,
            last_seq: seen,
            commits_by_msg_id: Default::default(),
        };
        for (k, r) in loaded_keys.into_iter().rev().take(MAX_REMEMBERED_KEYS) {
            loaded.commits_by_msg_id.entry(k).or_insert(r);
        }
        Ok(loaded)
    }
}

fn token(s: &str) -> SubjectToken {
    // Aggregate types are checked when registered; see `AggregateNode::register`.
    SubjectToken::new(s)
        .unwrap_or_else(|_| unreachable!("aggregate type validated at registration"))
}

/// Decodes `{"type": command_type, "payload": payload}` into the aggregate's command enum.
fn decode_command<A: Aggregate>(
    command_type: &str,
    payload: &[u8],
) -> Result<A::Command, CommandError> {
    let payload: serde_json::Value = if payload.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(payload)
            .map_err(|e| CommandError::InvalidArgument(format!("payload is not valid JSON: {e}")))?
    };
    let tagged = serde_json::json!({ "type": command_type, "payload": payload });
    serde_json::from_value(tagged).map_err(|e| {
        CommandError::InvalidArgument(format!(
            "invalid `{command_type}` command for aggregate `{}`: {e}",
            A::TYPE
        ))
    })
}

/// Splits `{"type": t, "payload": p}` into `(t, p)`; other shapes keep the whole value.
fn split_tagged(value: serde_json::Value) -> (String, serde_json::Value) {
    if let serde_json::Value::Object(mut map) = value {
        if let Some(serde_json::Value::String(t)) = map.remove("type") {
            let payload = map.remove("payload").unwrap_or(serde_json::Value::Null);
            return (t, payload);
        }
        return ("event".into(), serde_json::Value::Object(map));
    }
    ("event".into(), value)
}
