//! Workflow instances: one actor per live `(workflow, tenant, instance)` serialises the
//! instance's inputs — starts from the Gateway, effect results and timer firings from
//! `WORKFLOW_EVENTS`, aggregate events — and commits each step to the instance's KV record.
//!
//! One step:
//!
//! 1. load the record (cached between inputs; re-read after any conflict);
//! 2. admit the input: a result whose command is not pending, a timer that is not armed under
//!    the id that fired, an event position already applied — acknowledged, nothing else;
//! 3. `react` on the state; apply the decision to a copy of the record (new state, outbox
//!    entries, pending commands, timers, outcome);
//! 4. mark the step in the outbox index, then write the record with a revision check (a
//!    conflict re-reads and goes back to 2);
//! 5. hand the outbox to the relay; once published, clear it (second revision-checked write)
//!    and remove the index mark. A failure here leaves both for the sweep.
//!
//! Actors are spawned on demand under the node's `instances` supervisor (temporary children),
//! passivated after `runner.instance_idle_timeout_ms`, and bounded by `runner.max_instances`.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef, TrySendError};
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::workflow::{self as wire, EffectResult, event_types};
use cloudlysis_runtime::{SubjectToken, kv as buckets};
use cloudlysis_supervision::{ChildSpec, Restart, SupervisorRef};
use dashmap::DashMap;
use futures::future::BoxFuture;
use ractor::RpcReplyPort;

use super::error::RunnerError;
use super::outbox::{self, Relay, RelayCtx};
use super::record::{Admission, InstanceRecord};
use super::workflow::{Input, ReactContext, Workflow};
use crate::store::StoreError;

mod host;
mod operate;

use host::decode_start;
pub(crate) use host::{Host, HostShared, WorkflowHost};
pub use operate::Verb;

/// Actor kind of instance actors.
pub const INSTANCE_KIND: &str = "workflow_instance";

/// Tunables of instance actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceSettings {
    /// Mailbox capacity per instance (default 64).
    pub mailbox: usize,
    /// Idle time before an instance actor is passivated (default 60 s).
    pub idle_timeout: Duration,
    /// Most live instance actors per workflow (default 100 000).
    pub max_instances: usize,
    /// Longest one input may take, commit and publish included (default 30 s).
    pub input_timeout: Duration,
}

impl Default for InstanceSettings {
    fn default() -> Self {
        Self {
            mailbox: 64,
            idle_timeout: Duration::from_secs(60),
            max_instances: 100_000,
            input_timeout: Duration::from_secs(30),
        }
    }
}

/// What became of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputOutcome {
    /// `react` ran and the step committed.
    Applied,
    /// Applied before (a redelivery or republish): nothing changed.
    Duplicate,
    /// Not for this instance any more (it ended, or the timer was cancelled or re-armed).
    Stale,
    /// No such instance, and the input may not start one.
    Ignored,
}

impl InputOutcome {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
        }
    }
}

/// Messages of an instance actor.
pub(crate) enum InstanceMsg {
    Start {
        input: Bytes,
        ctx: Box<RequestContext>,
        reply: RpcReplyPort<Result<InstanceRecord, RunnerError>>,
    },
    Result {
        result: Box<EffectResult>,
        reply: RpcReplyPort<Result<InputOutcome, RunnerError>>,
    },
    Event {
        event: Box<EventEnvelope>,
        seq: u64,
        index: u32,
        may_start: bool,
        reply: RpcReplyPort<Result<InputOutcome, RunnerError>>,
    },
    Operate {
        verb: Verb,
        reply: RpcReplyPort<Result<(InstanceRecord, String), RunnerError>>,
    },
    CheckIdle,
}

struct InstanceActor<W> {
    key: String,
    tenant: TenantId,
    instance: SubjectToken,
    shared: Arc<HostShared>,
    _workflow: PhantomData<fn() -> W>,
}

struct InstanceState {
    /// The record and its revision as this actor last wrote or read it.
    cached: Option<(InstanceRecord, u64)>,
    last_active: tokio::time::Instant,
}

/// Most tries of one input against concurrent writers.
const MAX_TRIES: usize = 5;

/// Why a write did not land.
enum WriteError {
    /// Another writer moved the record: reload and decide again.
    Conflict,
    /// NATS failed: an outage, or a record that cannot be written.
    Failed(StoreError),
}

impl<W: Workflow> BoundedActor for InstanceActor<W> {
    type Msg = InstanceMsg;
    type State = InstanceState;
    type Arguments = ();
    const KIND: &'static str = INSTANCE_KIND;

    async fn pre_start(
        &self,
        _: BoundedRef<InstanceMsg>,
        _: (),
    ) -> Result<InstanceState, ActorProcessingErr> {
        // The host's idle sweeper sends `CheckIdle` (no timer per instance).
        Ok(InstanceState {
            cached: None,
            last_active: tokio::time::Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: &BoundedRef<InstanceMsg>,
        msg: InstanceMsg,
        state: &mut InstanceState,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(msg, InstanceMsg::CheckIdle) {
            state.last_active = tokio::time::Instant::now();
        }
        // The inputs' futures are boxed: inline, the largest would be part of every idle
        // instance's task for as long as the instance lives.
        match msg {
            InstanceMsg::Start { input, ctx, reply } => {
                if reply.is_closed() {
                    return Ok(());
                }
                let result = Box::pin(self.start(&input, &ctx, state)).await;
                let outcome = match &result {
                    Ok(_) => "applied",
                    Err(RunnerError::AlreadyExists(_)) => "duplicate",
                    Err(_) => "failed",
                };
                metrics::counter!(names::WORKFLOW_INPUTS, "workflow" => W::NAME, "input" => "start", "outcome" => outcome).increment(1);
                if result.is_ok() {
                    metrics::counter!(names::WORKFLOW_INSTANCES_STARTED, "workflow" => W::NAME)
                        .increment(1);
                }
                let _ = reply.send(result);
            }
            InstanceMsg::Result { result, reply } => {
                let input = if result.effect_type == wire::TIMER_EFFECT {
                    "timer"
                } else {
                    "result"
                };
                let outcome = Box::pin(self.apply_result(&result, state)).await;
                self.count(input, &outcome);
                let _ = reply.send(outcome);
            }
            InstanceMsg::Event {
                event,
                seq,
                index,
                may_start,
                reply,
            } => {
                let outcome =
                    Box::pin(self.apply_event(&event, seq, index, may_start, state)).await;
                self.count("event", &outcome);
                let _ = reply.send(outcome);
            }
            InstanceMsg::Operate { verb, reply } => {
                let input = verb.input();
                let result = Box::pin(self.operate(verb, state)).await;
                if input == "cancel" {
                    self.count(
                        input,
                        &result
                            .as_ref()
                            .map(|_| InputOutcome::Applied)
                            .map_err(Clone::clone),
                    );
                }
                let _ = reply.send(result);
            }
            InstanceMsg::CheckIdle => {
                if state.last_active.elapsed() >= self.shared.settings.idle_timeout
                    && myself.depth() <= 1
                {
                    // Leave the registry first so new inputs spawn a fresh actor, then drain.
                    self.shared.instances.remove_if(&self.key, |_, v| {
                        v.get().is_some_and(|m| m.same_mailbox(myself))
                    });
                    self.shared.live.set(self.shared.instances.len() as f64);
                    if let Some(actor) = myself.actor() {
                        let _ = actor.drain();
                    }
                }
            }
        }
        Ok(())
    }
}

impl<W: Workflow> InstanceActor<W> {
    fn count(&self, input: &'static str, outcome: &Result<InputOutcome, RunnerError>) {
        let label = match outcome {
            Ok(o) => o.as_str(),
            Err(_) => "failed",
        };
        metrics::counter!(names::WORKFLOW_INPUTS, "workflow" => W::NAME, "input" => input, "outcome" => label).increment(1);
    }

    fn ctx(&self, step: u64) -> ReactContext {
        ReactContext {
            tenant: self.tenant.to_string(),
            instance: self.instance.to_string(),
            step,
            now_ms: wire::now_ms(),
        }
    }

    /// The record: the cached one when `fresh` is false, else read from KV (and cached).
    async fn load(
        &self,
        state: &mut InstanceState,
        fresh: bool,
    ) -> Result<Option<(InstanceRecord, u64)>, RunnerError> {
        if !fresh && let Some(c) = &state.cached {
            return Ok(Some(c.clone()));
        }
        let loaded = outbox::read(&self.shared.relay_ctx, &self.key).await?;
        if let Some((record, _)) = &loaded
            && record.workflow != W::NAME
        {
            return Err(RunnerError::Corrupt(format!(
                "record {} belongs to workflow `{}`",
                self.key, record.workflow
            )));
        }
        state.cached = loaded.clone();
        Ok(loaded)
    }

    async fn start(
        &self,
        input: &Bytes,
        ctx: &RequestContext,
        state: &mut InstanceState,
    ) -> Result<InstanceRecord, RunnerError> {
        // Instances are never deleted: a cached record proves existence.
        if let Some((existing, _)) = self.load(state, false).await? {
            return Err(RunnerError::AlreadyExists(format!(
                "instance `{}` of workflow `{}` exists ({})",
                self.instance,
                W::NAME,
                existing.status.as_str()
            )));
        }
        let start = decode_start::<W>(input)?;
        let react = self.ctx(0);
        let decision = W::react(&W::State::default(), Input::Start(start), &react)
            .map_err(|e| RunnerError::Rejected(e.0))?;
        let mut record = InstanceRecord::new(
            W::NAME,
            self.tenant.as_str(),
            self.instance.as_str(),
            W::SCHEMA_VERSION,
            Some(ctx.correlation_id.to_string()),
            Some(ctx.traceparent.to_string()),
            react.now_ms,
        );
        let input_json: serde_json::Value =
            serde_json::from_slice(input).unwrap_or(serde_json::Value::Null);
        record
            .step(
                decision,
                (
                    event_types::STARTED,
                    serde_json::json!({ "input": input_json }),
                ),
                react.now_ms,
                new_id,
            )
            .map_err(|e| RunnerError::Rejected(e.0))?;
        match self.write(&record, None).await {
            Ok(revision) => {
                self.finished_metric(true, &record);
                let record = self.flush(record, revision, state).await;
                Ok(record)
            }
            Err(WriteError::Conflict) => {
                state.cached = None;
                Err(RunnerError::AlreadyExists(format!(
                    "instance `{}` of workflow `{}` exists",
                    self.instance,
                    W::NAME
                )))
            }
            Err(WriteError::Failed(e)) => {
                state.cached = None;
                Err(e.into())
            }
        }
    }

    async fn apply_result(
        &self,
        result: &EffectResult,
        state: &mut InstanceState,
    ) -> Result<InputOutcome, RunnerError> {
        // A refusal decided on cached state is checked against a fresh read first: another node
        // may have moved the instance on (its record then has the command pending).
        let mut fresh = state.cached.is_none();
        for _ in 0..MAX_TRIES {
            let Some((record, revision)) = self.load(state, fresh).await? else {
                return Ok(InputOutcome::Ignored);
            };
            let (input, event) = match record.admit_result(result) {
                Admission::Duplicate | Admission::Stale | Admission::Event if !fresh => {
                    fresh = true;
                    continue;
                }
                Admission::Duplicate => return Ok(InputOutcome::Duplicate),
                Admission::Stale | Admission::Event => return Ok(InputOutcome::Stale),
                Admission::Result => (
                    None,
                    (
                        event_types::RESULT_RECEIVED,
                        serde_json::json!({
                            "command_id": result.command_id,
                            "effect_type": result.effect_type,
                            "label": result.label,
                            "ok": result.is_ok(),
                            "error": result.error(),
                            "attempts": result.attempts,
                        }),
                    ),
                ),
                Admission::Timer(name) => (
                    Some(name.clone()),
                    (
                        event_types::TIMER_FIRED,
                        serde_json::json!({ "name": name, "timer_id": result.command_id }),
                    ),
                ),
            };
            let current: W::State = decode_state::<W>(&record)?;
            let react = self.ctx(record.step);
            let decision = match &input {
                Some(name) => W::react(&current, Input::Timer(name), &react),
                None => W::react(&current, Input::Result(result), &react),
            }
            .map_err(|e| RunnerError::Rejected(e.0))?;
            let aborting = operate::aborted(&record, &decision);
            let mut next = record.clone();
            next.consume(Some(result), None);
            next.step(decision, event, react.now_ms, new_id)
                .map_err(|e| RunnerError::Rejected(e.0))?;
            match self.write(&next, Some(revision)).await {
                Ok(rev) => {
                    self.finished_metric(!record.finished(), &next);
                    if input.is_some() {
                        metrics::counter!(names::TIMERS_FIRED, "workflow" => W::NAME).increment(1);
                    }
                    self.flush(next, rev, state).await;
                    if !aborting.is_empty() {
                        self.abort_pending(&record, &aborting, "aborted by the workflow")
                            .await;
                    }
                    return Ok(InputOutcome::Applied);
                }
                Err(WriteError::Conflict) => {
                    state.cached = None;
                    fresh = true;
                }
                Err(WriteError::Failed(e)) => {
                    state.cached = None;
                    return Err(e.into());
                }
            }
        }
        Err(RunnerError::Conflict(format!(
            "instance {}: too many concurrent writers",
            self.key
        )))
    }

    async fn apply_event(
        &self,
        event: &EventEnvelope,
        seq: u64,
        index: u32,
        may_start: bool,
        state: &mut InstanceState,
    ) -> Result<InputOutcome, RunnerError> {
        let details = serde_json::json!({
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
            "event_type": event.event_type,
            "sequence": event.sequence,
            "stream_sequence": seq,
        });
        let mut fresh = state.cached.is_none();
        for _ in 0..MAX_TRIES {
            let loaded = self.load(state, fresh).await?;
            let (record, revision, current) = match loaded {
                Some((record, revision)) => {
                    match record.admit_event(seq, index) {
                        Admission::Event => {}
                        // Decided on cached state: check against a fresh read first.
                        _ if !fresh => {
                            fresh = true;
                            continue;
                        }
                        Admission::Duplicate => return Ok(InputOutcome::Duplicate),
                        _ => return Ok(InputOutcome::Stale),
                    }
                    let current = decode_state::<W>(&record)?;
                    (record, Some(revision), current)
                }
                None if !fresh => {
                    fresh = true;
                    continue;
                }
                None if may_start => {
                    let now = wire::now_ms();
                    let record = InstanceRecord::new(
                        W::NAME,
                        self.tenant.as_str(),
                        self.instance.as_str(),
                        W::SCHEMA_VERSION,
                        event.correlation_id.clone(),
                        event.traceparent.clone(),
                        now,
                    );
                    (record, None, W::State::default())
                }
                None => return Ok(InputOutcome::Ignored),
            };
            let react = self.ctx(record.step);
            let decision = W::react(&current, Input::Event(event), &react)
                .map_err(|e| RunnerError::Rejected(e.0))?;
            let aborting = operate::aborted(&record, &decision);
            let mut next = record.clone();
            next.consume(None, Some((seq, index)));
            let kind = if revision.is_none() {
                event_types::STARTED
            } else {
                event_types::EVENT_RECEIVED
            };
            next.step(decision, (kind, details.clone()), react.now_ms, new_id)
                .map_err(|e| RunnerError::Rejected(e.0))?;
            match self.write(&next, revision).await {
                Ok(rev) => {
                    if revision.is_none() {
                        metrics::counter!(names::WORKFLOW_INSTANCES_STARTED, "workflow" => W::NAME)
                            .increment(1);
                    }
                    self.finished_metric(!record.finished(), &next);
                    self.flush(next, rev, state).await;
                    if !aborting.is_empty() {
                        self.abort_pending(&record, &aborting, "aborted by the workflow")
                            .await;
                    }
                    return Ok(InputOutcome::Applied);
                }
                Err(WriteError::Conflict) => {
                    state.cached = None;
                    fresh = true;
                }
                Err(WriteError::Failed(e)) => {
                    state.cached = None;
                    return Err(e.into());
                }
            }
        }
        Err(RunnerError::Conflict(format!(
            "instance {}: too many concurrent writers",
            self.key
        )))
    }

    /// Counts an instance that this step ended.
    fn finished_metric(&self, was_running: bool, record: &InstanceRecord) {
        if was_running && record.finished() {
            metrics::counter!(names::WORKFLOW_INSTANCES_FINISHED, "workflow" => W::NAME, "status" => record.status.as_str()).increment(1);
        }
    }

    /// Marks the step in the outbox index (when it has entries) and writes the record: a
    /// create when `revision` is `None`, else an update checked against it.
    async fn write(
        &self,
        record: &InstanceRecord,
        revision: Option<u64>,
    ) -> Result<u64, WriteError> {
        let ctx = &self.shared.relay_ctx;
        if !record.outbox.is_empty() {
            let index_key = buckets::outbox_index_key(&self.key, record.step);
            outbox::mark(ctx, &index_key, &self.key)
                .await
                .map_err(WriteError::Failed)?;
        }
        let bytes = Bytes::from(
            serde_json::to_vec(record)
                .map_err(|e| WriteError::Failed(StoreError::Broken(e.to_string())))?,
        );
        let write = async {
            match revision {
                None => ctx.instances.create(&self.key, bytes).await.map_err(|e| {
                    if e.kind() == kv::CreateErrorKind::AlreadyExists {
                        WriteError::Conflict
                    } else {
                        WriteError::Failed(StoreError::of_write(&self.key, &e))
                    }
                }),
                Some(rev) => ctx
                    .instances
                    .update(&self.key, bytes, rev)
                    .await
                    .map_err(|e| {
                        if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                            WriteError::Conflict
                        } else {
                            WriteError::Failed(StoreError::of_write(&self.key, &e))
                        }
                    }),
            }
        };
        match tokio::time::timeout(ctx.io_timeout, write).await {
            Ok(result) => result,
            Err(_) => Err(WriteError::Failed(StoreError::Unavailable(format!(
                "writing {} timed out",
                self.key
            )))),
        }
    }

    /// Publishes the outbox of a committed record through the relay, clears it and removes the
    /// index mark. Failures leave both for the sweep (the step itself stands).
    async fn flush(
        &self,
        record: InstanceRecord,
        revision: u64,
        state: &mut InstanceState,
    ) -> InstanceRecord {
        if record.outbox.is_empty() || record.paused {
            // A paused instance's messages wait in its outbox (and the index) until resumed.
            state.cached = Some((record.clone(), revision));
            return record;
        }
        let ctx = &self.shared.relay_ctx;
        let index_key = buckets::outbox_index_key(&self.key, record.step);
        let entries = record.outbox.clone();
        if let Err(e) = self.shared.relay.publish(&self.key, entries.clone()).await {
            tracing::warn!(instance = %self.key, error = %e, "outbox not published; the sweep will");
            state.cached = None;
            return record;
        }
        let published: HashSet<String> = entries.into_iter().map(|e| e.msg_id).collect();
        match outbox::clear(ctx, &self.key, Some((record.clone(), revision)), &published).await {
            Ok(Some((cleared, rev))) => {
                outbox::unmark(ctx, &index_key).await;
                state.cached = Some((cleared.clone(), rev));
                cleared
            }
            Ok(None) => {
                state.cached = None;
                record
            }
            Err(e) => {
                tracing::warn!(instance = %self.key, error = %e, "outbox not cleared; the sweep will");
                state.cached = None;
                record
            }
        }
    }
}

fn decode_state<W: Workflow>(record: &InstanceRecord) -> Result<W::State, RunnerError> {
    if record.state_version > W::SCHEMA_VERSION {
        return Err(RunnerError::Unavailable(format!(
            "instance {}/{} has state version {}, newer than this node's workflow ({})",
            record.workflow,
            record.instance,
            record.state_version,
            W::SCHEMA_VERSION
        )));
    }
    serde_json::from_value(record.state.clone()).map_err(|e| {
        RunnerError::Corrupt(format!(
            "the state of {}/{} does not decode: {e}",
            record.workflow, record.instance
        ))
    })
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
