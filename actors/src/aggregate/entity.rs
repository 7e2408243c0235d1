//! The entity actor: one per live `(tenant, aggregate id)` — rehydrates from the stream,
//! decides with `handle`, commits atomically under an optimistic-concurrency check, remembers
//! idempotency keys, and passivates when idle.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::host::*;
use super::*;
use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use cloudlysis_runtime::context::{RequestContext, TenantId, headers};
use cloudlysis_runtime::envelope::{COMMIT_SCHEMA_VERSION, Commit, EventEnvelope};
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_runtime::nats::{self, NatsError};
use cloudlysis_runtime::{SubjectToken, kv as buckets, subject};
use futures::StreamExt;
use ractor::RpcReplyPort;

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

pub(crate) struct Entity<A> {
    pub(crate) key: String,
    pub(crate) tenant: TenantId,
    pub(crate) id: SubjectToken,
    pub(crate) shared: Arc<HostShared>,
    pub(crate) _aggregate: PhantomData<fn() -> A>,
}

pub(crate) struct EntityState<S> {
    pub(crate) loaded: Option<Loaded<S>>,
    pub(crate) last_active: tokio::time::Instant,
    pub(crate) _ticker: AbortOnDrop,
}

/// Aborts a task when dropped (the state is dropped on failure too, unlike `post_stop`).
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Most idempotency keys remembered per loaded entity (from its own commits).
pub(crate) const MAX_REMEMBERED_KEYS: usize = 1024;

impl<S> Loaded<S> {
    fn remember(&mut self, msg_id: String, reply: ExecuteReply) {
        // Bounded: the KV store is the durable record; this map only covers lost KV writes.
        if self.commits_by_msg_id.len() >= MAX_REMEMBERED_KEYS {
            self.commits_by_msg_id.clear();
        }
        self.commits_by_msg_id.insert(msg_id, reply);
    }
}

pub(crate) struct Loaded<S> {
    pub(crate) state: S,
    pub(crate) version: u64,
    pub(crate) last_seq: u64,
    /// Results of this entity's commits by their `Nats-Msg-Id`, for replays whose KV record is
    /// missing.
    pub(crate) commits_by_msg_id: std::collections::HashMap<String, ExecuteReply>,
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

pub(crate) fn token(s: &str) -> SubjectToken {
    // Aggregate types are checked when registered; see `AggregateNode::register`.
    SubjectToken::new(s)
        .unwrap_or_else(|_| unreachable!("aggregate type validated at registration"))
}

/// Decodes `{"type": command_type, "payload": payload}` into the aggregate's command enum.
pub(crate) fn decode_command<A: Aggregate>(
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
pub(crate) fn split_tagged(value: serde_json::Value) -> (String, serde_json::Value) {
    if let serde_json::Value::Object(mut map) = value {
        if let Some(serde_json::Value::String(t)) = map.remove("type") {
            let payload = map.remove("payload").unwrap_or(serde_json::Value::Null);
            return (t, payload);
        }
        return ("event".into(), serde_json::Value::Object(map));
    }
    ("event".into(), value)
}
