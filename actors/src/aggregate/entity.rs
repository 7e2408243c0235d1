//! The entity: one per live `(tenant, aggregate id)` — rehydrates from the stream
//! (`rehydrate`), decides with `handle`, commits atomically under an optimistic-concurrency
//! check, and remembers idempotency keys. It is a virtual actor (ADR 0012): a cell in its host's
//! registry whose lock is its turn, so commands for one entity run one at a time in arrival
//! order, at most `aggregate.entity_mailbox` of them queued; the host passivates idle cells.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::host::*;
use super::*;
use async_nats::jetstream;
use bytes::Bytes;
use cloudlysis_runtime::context::{RequestContext, TenantId, headers, nats_name};
use cloudlysis_runtime::envelope::{COMMIT_SCHEMA_VERSION, Commit, CommitRef, EventEnvelopeRef};
use cloudlysis_runtime::nats::{self, NatsError};
use cloudlysis_runtime::{SubjectToken, kv as buckets, subject};

pub(crate) use super::command::{
    decode_command, fingerprint, integers_fit_64_bits, tagged_parts, token,
};

/// A commit encoded for the stream, with what its reply needs.
struct Encoded {
    /// The commit document ([`Commit`]'s wire form).
    bytes: Bytes,
    /// The aggregate version after its last event.
    version: u64,
    /// Its events' ids, in order; the first is the commit id.
    event_ids: Vec<String>,
}

/// Actor kind of entities (the `kind` label of their mailbox metrics).
pub const ENTITY_KIND: &str = "entity";

/// Who decides what a command's deadline means: the host, which answers the caller when the
/// deadline passes, or the entity, which may have started publishing the commit. Exactly one
/// of them wins, so "nothing was committed" is said only when no publish can start any more.
#[derive(Debug, Default)]
pub(crate) struct Claim(std::sync::atomic::AtomicU8);

impl Claim {
    const WAITING: u8 = 0;
    const PUBLISHING: u8 = 1;
    const ABANDONED: u8 = 2;

    /// The entity is about to publish: false when the host already gave the command up.
    pub(crate) fn start_publish(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        match self
            .0
            .compare_exchange(Self::WAITING, Self::PUBLISHING, SeqCst, SeqCst)
        {
            Ok(_) => true,
            Err(now) => now == Self::PUBLISHING,
        }
    }

    /// The host gives the command up at its deadline: true when no publish had started (and
    /// none will), false when one may have landed.
    pub(crate) fn abandon(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        match self
            .0
            .compare_exchange(Self::WAITING, Self::ABANDONED, SeqCst, SeqCst)
        {
            Ok(_) => true,
            Err(now) => now == Self::ABANDONED,
        }
    }
}

/// What the idempotency store keeps per key: the first result and the fingerprint of the
/// command that produced it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct IdempotencyRecord {
    #[serde(flatten)]
    pub(crate) reply: ExecuteReply,
    /// Absent in records written before fingerprints existed (then any command matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fingerprint: Option<String>,
}

/// An entity's identity and what it shares with its host.
pub(crate) struct Entity<A> {
    pub(crate) tenant: TenantId,
    pub(crate) id: SubjectToken,
    pub(crate) shared: Arc<HostShared>,
    pub(crate) _aggregate: PhantomData<fn() -> A>,
}

/// Most idempotency keys remembered per loaded entity (from its own commits).
pub(crate) const MAX_REMEMBERED_KEYS: usize = 1024;

impl<S> Loaded<S> {
    fn remember(&mut self, msg_id: String, reply: IdempotencyRecord) {
        // Bounded: the KV store is the durable record; this map only covers lost KV writes.
        if self.commits_by_msg_id.len() >= MAX_REMEMBERED_KEYS {
            self.commits_by_msg_id.clear();
        }
        self.commits_by_msg_id.insert(msg_id, reply);
    }
}

impl<S: Default> Loaded<S> {
    /// The state of an entity with no commits.
    pub(crate) fn empty() -> Self {
        Self {
            state: S::default(),
            version: 0,
            last_seq: 0,
            commits_by_msg_id: Default::default(),
        }
    }
}

pub(crate) struct Loaded<S> {
    pub(crate) state: S,
    pub(crate) version: u64,
    pub(crate) last_seq: u64,
    /// Results of this entity's commits by their `Nats-Msg-Id`, for replays whose KV record is
    /// missing.
    pub(crate) commits_by_msg_id: std::collections::HashMap<String, IdempotencyRecord>,
}

impl<A: Aggregate> Entity<A> {
    pub(super) fn subject(&self) -> String {
        subject::aggregate_event(&self.tenant, &token(A::TYPE), &self.id)
    }

    pub(super) fn snapshot_key(&self) -> String {
        buckets::snapshot_key(A::TYPE, self.tenant.as_str(), self.id.as_str())
    }

    /// Writes a snapshot in the background when the commit that moved the version from
    /// `before` crossed a multiple of the policy's `every`.
    fn snapshot_if_due(&self, current: &Loaded<A::State>, before: u64) {
        let (Some(bucket), Some(policy)) = (&self.shared.snapshots, A::snapshots()) else {
            return;
        };
        if !super::snapshot::due(policy.every, before, current.version) {
            return;
        }
        let state = match (policy.encode)(&current.state) {
            Ok(state) => state,
            Err(e) => {
                tracing::warn!(aggregate_type = A::TYPE, id = %self.id, "snapshot not written: the state does not encode: {e}");
                super::snapshot::count::<A>("write_failed");
                return;
            }
        };
        let record = super::snapshot::SnapshotRecord {
            format: super::snapshot::FORMAT,
            state_schema_version: policy.schema_version,
            version: current.version,
            stream_sequence: current.last_seq,
            state,
            keys: current
                .commits_by_msg_id
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
        };
        super::snapshot::write::<A>(
            bucket.clone(),
            self.snapshot_key(),
            record,
            self.shared.settings.io_timeout,
        );
    }

    /// Runs one command (`command`, decoded from `req`) on `loaded` (the cached state, `None`
    /// when not loaded): the entity's whole decision and commit. The caller holds the turn.
    pub(crate) async fn execute(
        &self,
        req: CommandRequest,
        command: A::Command,
        claim: &Claim,
        loaded: &mut Option<Loaded<A::State>>,
    ) -> Result<ExecuteReply, CommandError> {
        // Every step below reads or writes NATS. A client that knows its connection is down
        // would hold a read until its deadline (and queue a write until the connection came
        // back): refused at once instead, nothing sent.
        nats::ensure_connected(&self.shared.js, || self.subject())
            .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let idem_key =
            req.ctx.idempotency_key.as_ref().map(|k| {
                buckets::idempotency_key(self.tenant.as_str(), A::TYPE, self.id.as_str(), k)
            });
        let fingerprint = idem_key
            .as_ref()
            .map(|_| fingerprint(A::TYPE, self.id.as_str(), &req.command_type, &req.payload));
        if let Some(key) = &idem_key
            && let Some(previous) = self.recall(key).await?
        {
            return self.replay(&req, previous, fingerprint.as_deref());
        }
        let deadline = req.deadline;
        let timeout = self.shared.settings.command_timeout;
        let past_deadline = || deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        // Attempt 0 may decide on cached state; whenever that decision is not a commit, or the
        // commit conflicts, the state is reloaded and the command decided once more.
        //
        // An entity's first command assumes no history instead of reading it: a command that
        // commits on the empty state is usually a creation (`Open`), and its commit lands only if
        // the subject is still empty (expected last subject sequence 0). A conflict, a refusal
        // or a no-op on the assumed state loads the real one and decides again, with the usual
        // two tries on loaded state after it.
        let assumed = loaded.is_none();
        // The first decision takes the command the host decoded; a later one decodes it again.
        let mut command = Some(command);
        if assumed {
            *loaded = Some(Loaded::empty());
        }
        for attempt in 0..2 + usize::from(assumed) {
            let fresh = attempt > 0;
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
                return self.replay(&req, previous.clone(), fingerprint.as_deref());
            }
            let events = match self.decide(&req, command.take(), current) {
                Ok(events) if !events.is_empty() => events,
                // Not a commit on the assumed empty state: read the real one.
                _ if assumed && attempt == 0 => continue,
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
            // A commit handed to a NATS client that is not connected would be queued and sent
            // whenever the connection came back, after this command was answered: refused
            // instead, nothing sent. (An assumed empty state was never read: not kept.)
            if let Err(e) = nats::ensure_connected(&self.shared.js, || self.subject()) {
                if assumed && attempt == 0 {
                    *loaded = None;
                }
                return Err(CommandError::Unavailable(e.to_string()));
            }
            // From here on a commit may land: once the claim is ours the host answers "outcome
            // unknown" at the deadline, never "nothing was committed".
            if past_deadline() || !claim.start_publish() {
                return Err(CommandError::Timeout(timeout));
            }
            // The publish is its own span, a child of this node's handling: the commit carries
            // it, so consumers continue from the publish.
            let mut publish_ctx = req.ctx.clone();
            publish_ctx.traceparent = req.ctx.traceparent.next_hop();
            let publish_started = std::time::SystemTime::now();
            let commit = self.commit_of(&publish_ctx, current.version, &events)?;
            // With an idempotency key the de-duplication id is derived from it, so a replay
            // whose stored result was lost is still dropped by JetStream within its duplicate
            // window, and recognised from the stream after it.
            let msg_id = idem_key
                .clone()
                .unwrap_or_else(|| commit.event_ids[0].clone());
            // The publish gets what is left of the caller's deadline (at most the I/O timeout).
            let publish_timeout = deadline.map_or(self.shared.settings.io_timeout, |d| {
                d.saturating_duration_since(tokio::time::Instant::now())
                    .min(self.shared.settings.io_timeout)
            });
            let published = self
                .publish(
                    &publish_ctx,
                    &commit,
                    &msg_id,
                    fingerprint.as_deref(),
                    current.last_seq,
                    publish_timeout,
                )
                .await;
            cloudlysis_runtime::telemetry::record(
                cloudlysis_runtime::telemetry::Kind::Producer,
                &publish_ctx.traceparent,
                publish_started,
                || {
                    (
                        format!("publish {}", A::TYPE),
                        vec![
                            opentelemetry::KeyValue::new("messaging.system", "nats"),
                            opentelemetry::KeyValue::new(
                                "messaging.destination.name",
                                cloudlysis_runtime::stream::AGGREGATE_EVENTS,
                            ),
                        ],
                    )
                },
            );
            match published {
                Ok(ack) if ack.duplicate => {
                    // Committed before by an earlier attempt: answer with that commit.
                    *loaded = None;
                    let (original, original_fingerprint) = self.read_commit(ack.sequence).await?;
                    let stored = IdempotencyRecord {
                        reply: ExecuteReply {
                            version: original.events.last().map_or(0, |e| e.sequence),
                            event_ids: original.events.iter().map(|e| e.event_id.clone()).collect(),
                            stream_sequence: ack.sequence,
                            replayed: false,
                        },
                        fingerprint: original_fingerprint,
                    };
                    if let Some(key) = &idem_key {
                        self.remember(key, &stored).await;
                    }
                    return self.replay(&req, stored, fingerprint.as_deref());
                }
                Ok(ack) => {
                    for e in &events {
                        A::apply(&mut current.state, e);
                    }
                    current.version += events.len() as u64;
                    current.last_seq = ack.sequence;
                    let reply = ExecuteReply {
                        version: commit.version,
                        event_ids: commit.event_ids,
                        stream_sequence: ack.sequence,
                        replayed: false,
                    };
                    if let Some(key) = &idem_key {
                        let stored = IdempotencyRecord {
                            reply: reply.clone(),
                            fingerprint: fingerprint.clone(),
                        };
                        current.remember(key.clone(), stored.clone());
                        self.remember(key, &stored).await;
                    }
                    self.snapshot_if_due(current, current.version - events.len() as u64);
                    return Ok(reply);
                }
                Err(NatsError::WrongLastSequence { .. }) => {
                    tracing::debug!(aggregate = A::TYPE, id = %self.id, attempt, "commit conflict; reloading");
                    continue;
                }
                // Refused by the client before sending: the state is as it was.
                Err(e @ NatsError::TooLarge { .. }) => {
                    return Err(CommandError::Rejected(format!(
                        "{e}: the commit's events are over the server's max_payload; nothing was committed"
                    )));
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

    /// Answers a replayed idempotency key with its first result — unless the key was first used
    /// with a different command, which is the client's bug, not a retry.
    fn replay(
        &self,
        req: &CommandRequest,
        previous: IdempotencyRecord,
        fingerprint: Option<&str>,
    ) -> Result<ExecuteReply, CommandError> {
        if let (Some(first), Some(now)) = (previous.fingerprint.as_deref(), fingerprint)
            && first != now
        {
            return Err(CommandError::IdempotencyKeyReused(format!(
                "the idempotency key {:?} was used before with a different command for {}/{} \
                 (stream sequence {}); use a new key for a new command",
                req.ctx.idempotency_key.as_deref().unwrap_or_default(),
                A::TYPE,
                self.id,
                previous.reply.stream_sequence
            )));
        }
        Ok(ExecuteReply {
            replayed: true,
            ..previous.reply
        })
    }

    /// Checks the expected version and runs `handle` on the current state.
    fn decide(
        &self,
        req: &CommandRequest,
        command: Option<A::Command>,
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
        let command = match command {
            Some(c) => c,
            None => decode_command::<A>(&req.command_type, &req.payload)?,
        };
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

    /// The commit stored at `sequence`, with the fingerprint of the command that made it.
    async fn read_commit(&self, sequence: u64) -> Result<(Commit, Option<String>), CommandError> {
        let get = self.shared.events.get_raw_message(sequence);
        let msg = tokio::time::timeout(self.shared.settings.io_timeout, get)
            .await
            .map_err(|_| CommandError::Unavailable("reading the earlier commit timed out".into()))?
            .map_err(|e| CommandError::Unavailable(format!("reading the earlier commit: {e}")))?;
        let fingerprint = msg
            .headers
            .get(nats_name(headers::NATS_REQUEST_FINGERPRINT))
            .map(|v| v.as_str().to_string());
        let commit = serde_json::from_slice(&msg.payload).map_err(|e| {
            CommandError::Unavailable(format!("earlier commit does not decode: {e}"))
        })?;
        Ok((commit, fingerprint))
    }

    /// The stored result of an earlier command with the same idempotency key. A record that
    /// does not decode is an error, never "absent": treating it as absent would run the command
    /// a second time.
    async fn recall(&self, key: &str) -> Result<Option<IdempotencyRecord>, CommandError> {
        let get = self.shared.idempotency.get(key);
        match tokio::time::timeout(self.shared.settings.io_timeout, get).await {
            Ok(Ok(Some(bytes))) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                CommandError::Unavailable(format!(
                    "the idempotency record {key} is corrupt ({e}); the command was not run"
                ))
            }),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(CommandError::Unavailable(format!(
                "idempotency lookup: {e}"
            ))),
            Err(_) => Err(CommandError::Unavailable(
                "idempotency lookup timed out".into(),
            )),
        }
    }

    /// Stores a command's result under its idempotency key in the background (bounded, see
    /// [`super::records`]): the answer does not wait for it. A failure is logged and counted,
    /// not returned: the commit stands, and a replay is still recognised — by this entity while
    /// it is live, and on any node within the stream's duplicate window by its `Nats-Msg-Id`
    /// (derived from the key), answered from the stream.
    async fn remember(&self, key: &str, reply: &IdempotencyRecord) {
        let bytes = match serde_json::to_vec(reply) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(key, "idempotency record not encoded: {e}");
                return;
            }
        };
        let shared = self.shared.clone();
        let owned = key.to_string();
        let write = async move {
            let timeout = shared.settings.io_timeout;
            match tokio::time::timeout(timeout, shared.idempotency.put(&owned, bytes.into())).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("not stored within {timeout:?}")),
            }
        };
        self.shared.records.start(key.to_string(), write).await;
    }

    fn commit_of(
        &self,
        ctx: &RequestContext,
        version: u64,
        events: &[A::Event],
    ) -> Result<Encoded, CommandError> {
        let failed =
            |e: serde_json::Error| CommandError::Unavailable(format!("event encoding failed: {e}"));
        let occurred_at = cloudlysis_runtime::time::rfc3339(SystemTime::now());
        let correlation_id = ctx.correlation_id.to_string();
        let traceparent = ctx.traceparent.to_string();
        // Each event encoded once; the envelope takes its payload as written, not as a tree.
        let encoded = events
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        if !encoded.iter().all(|json| integers_fit_64_bits(json)) {
            return Err(CommandError::Unavailable(
                "event encoding failed: an integer does not fit in 64 bits, which readers of the \
                 stream could not decode exactly; nothing was committed"
                    .into(),
            ));
        }
        let event_ids: Vec<String> = events
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let parts = encoded
            .iter()
            .map(|json| tagged_parts(json))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        let envelopes: Vec<EventEnvelopeRef<'_>> = parts
            .iter()
            .zip(&event_ids)
            .enumerate()
            .map(|(i, ((event_type, payload), event_id))| EventEnvelopeRef {
                event_id,
                tenant_id: self.tenant.as_str(),
                aggregate_type: A::TYPE,
                aggregate_id: self.id.as_str(),
                sequence: version + i as u64 + 1,
                event_type,
                schema_version: A::SCHEMA_VERSION,
                occurred_at: &occurred_at,
                payload,
                correlation_id: Some(&correlation_id),
                traceparent: Some(&traceparent),
            })
            .collect();
        let bytes = serde_json::to_vec(&CommitRef {
            schema_version: COMMIT_SCHEMA_VERSION,
            commit_id: &event_ids[0],
            events: &envelopes,
        })
        .map_err(failed)?;
        Ok(Encoded {
            bytes: Bytes::from(bytes),
            version: version + events.len() as u64,
            event_ids,
        })
    }

    async fn publish(
        &self,
        ctx: &RequestContext,
        commit: &Encoded,
        msg_id: &str,
        fingerprint: Option<&str>,
        last_seq: u64,
        timeout: Duration,
    ) -> Result<jetstream::publish::PublishAck, NatsError> {
        let mut extra = async_nats::HeaderMap::new();
        extra.insert(
            nats_name(headers::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE),
            async_nats::HeaderValue::from(last_seq),
        );
        if let Some(f) = fingerprint {
            extra.insert(nats_name(headers::NATS_REQUEST_FINGERPRINT), f);
        }
        nats::publish(
            &self.shared.js,
            self.subject(),
            ctx,
            msg_id,
            Some(extra),
            commit.bytes.clone(),
            timeout,
        )
        .await
    }
}
