//! Effect workers: run effect commands from `WORKFLOW_COMMANDS` at most once per `command_id`
//! and publish their results to `WORKFLOW_EVENTS`.
//!
//! Each command has a ledger record (`cloudlysis_effects`, `<effect_type>.<tenant>.<command_id>`)
//! written with a revision check before every attempt and after the outcome:
//!
//! | ledger says | the worker |
//! |---|---|
//! | nothing, or an expired claim | claims attempt n+1 (`running`, leased for the attempt timeout), executes |
//! | `running` / `waiting`, lease not expired | defers the message until the lease ends (another worker has it) |
//! | `done` | re-publishes the recorded result (`replayed`), executes nothing |
//!
//! A retryable failure records `waiting` with the backoff as lease, sleeps (the consumer keeps
//! the message alive with in-progress acks), and tries again; a permanent failure, the last
//! attempt, or the command's deadline records a `failed` result. The result is published with
//! `Nats-Msg-Id = <command_id>:result`; a crash after recording it re-publishes it on
//! redelivery, and the stream drops the copy.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use cloudlysis_runtime::context::{CorrelationId, RequestContext, TenantId};
use cloudlysis_runtime::mailbox::ActorProcessingErr;
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::trace::TraceParent;
use cloudlysis_runtime::workflow::{
    self as wire, EffectCommand, EffectOutcome, EffectResult, TIMER_EFFECT, TimerPayload,
};
use cloudlysis_runtime::{SubjectToken, kv as buckets, nats, subject};
use serde::{Deserialize, Serialize};

use super::effect::{Effect, EffectContext, EffectErrorKind};
use crate::handler::{Delivery, EventHandler, HandlerError};
use crate::store::StoreError;

/// Added to every lease: how long past an attempt's timeout (or a backoff) a claim still
/// holds, so a slow worker is not overtaken by another one.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Version of the ledger record.
pub const LEDGER_SCHEMA_VERSION: u32 = 1;

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    /// An attempt runs (until `until_ms`).
    Running,
    /// Between attempts (the next one at `until_ms` at the latest).
    Waiting,
    /// The outcome is recorded.
    Done,
}

/// The ledger record of one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// Record format version.
    pub schema_version: u32,
    /// Running, waiting or done.
    pub status: LedgerStatus,
    /// Attempts started.
    pub attempts: u32,
    /// End of the current claim (Unix ms).
    #[serde(default)]
    pub until_ms: u64,
    /// True once an attempt ended without a definitive answer.
    #[serde(default)]
    pub outcome_unknown: bool,
    /// The last attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The outcome, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<EffectResult>,
}

/// The attempts of this node waiting in backoff, by command id, so `retry-now` can wake them.
#[derive(Default)]
pub struct RetryNow {
    waiting: dashmap::DashMap<String, Arc<tokio::sync::Notify>>,
}

impl RetryNow {
    /// Wakes the attempt of `command_id` waiting here, if any.
    pub fn wake(&self, command_id: &str) {
        if let Some(n) = self.waiting.get(command_id) {
            n.notify_one();
        }
    }

    fn register(&self, command_id: &str) -> Arc<tokio::sync::Notify> {
        self.waiting
            .entry(command_id.to_string())
            .or_default()
            .clone()
    }

    fn done(&self, command_id: &str) {
        self.waiting.remove(command_id);
    }
}

/// The handler of an effect type's consumer.
pub struct EffectWorker<E> {
    effect: Arc<E>,
    ledger: kv::Store,
    js: jetstream::Context,
    io_timeout: Duration,
    max_attempts: Arc<std::sync::atomic::AtomicU32>,
    retry_now: Arc<RetryNow>,
    _effect: PhantomData<fn() -> E>,
}

impl<E> EffectWorker<E> {
    /// A worker running `effect`, with its ledger and results on `js`.
    pub fn new(
        effect: Arc<E>,
        ledger: kv::Store,
        js: jetstream::Context,
        io_timeout: Duration,
    ) -> Self {
        Self {
            effect,
            ledger,
            js,
            io_timeout,
            max_attempts: Arc::default(),
            retry_now: Arc::default(),
            _effect: PhantomData,
        }
    }

    /// Attempts per command from `attempts` when it is not 0 (`runner.effect_max_attempts`,
    /// changed live on a reload); otherwise the effect's retry policy.
    pub fn with_attempts(mut self, attempts: Arc<std::sync::atomic::AtomicU32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Registers backoffs with `retry_now`, so an operator can cut them short.
    pub fn with_retry_now(mut self, retry_now: Arc<RetryNow>) -> Self {
        self.retry_now = retry_now;
        self
    }
}

/// What a ledger write ran into.
enum LedgerWrite {
    Conflict,
    Failed(HandlerError),
}

impl<E: Effect> EventHandler for EffectWorker<E> {
    type Event = EffectCommand;
    type State = ();
    const KIND: &'static str = "effect_worker";

    async fn init(&self) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<EffectCommand>, _: &mut ()) -> Result<(), HandlerError> {
        let cmd = &d.event;
        if cmd.effect_type != E::TYPE {
            return Ok(());
        }
        // A command that cannot name its tenant is poison, never executed.
        request_context(cmd).map_err(HandlerError::new)?;
        let result = self.outcome(cmd).await?;
        publish_result(&self.js, cmd, &result, self.io_timeout).await
    }
}

impl<E: Effect> EffectWorker<E> {
    fn count(&self, outcome: &'static str) {
        metrics::counter!(names::EFFECTS, "effect_type" => E::TYPE, "outcome" => outcome)
            .increment(1);
    }

    /// The command's outcome: recorded before, or found now by executing it.
    async fn outcome(&self, cmd: &EffectCommand) -> Result<EffectResult, HandlerError> {
        let key = buckets::effect_ledger_key(E::TYPE, &cmd.tenant_id, &cmd.command_id);
        let mut policy = self.effect.retry_policy();
        match self.max_attempts.load(std::sync::atomic::Ordering::SeqCst) {
            0 => {}
            n => policy.max_attempts = n,
        }
        'reread: for _ in 0..10 {
            let (record, mut revision) = self.read(&key).await?;
            let now = wire::now_ms();
            if let Some(r) = &record {
                match r.status {
                    LedgerStatus::Done => {
                        if let Some(result) = &r.result {
                            self.count("replayed");
                            return Ok(result.clone());
                        }
                    }
                    LedgerStatus::Running | LedgerStatus::Waiting if r.until_ms > now => {
                        self.count("deferred");
                        return Err(HandlerError::defer(
                            Duration::from_millis(r.until_ms - now + 50),
                            format!("command {} is claimed by another worker", cmd.command_id),
                        ));
                    }
                    _ => {}
                }
            }
            let mut attempts = record.as_ref().map_or(0, |r| r.attempts);
            let mut unknown = record.as_ref().is_some_and(|r| r.outcome_unknown);
            let mut last_error = record.as_ref().and_then(|r| r.last_error.clone());
            let outcome = loop {
                let now = wire::now_ms();
                if attempts >= policy.max_attempts {
                    break EffectOutcome::Failed {
                        error: format!(
                            "{attempts} attempts failed; last: {}",
                            last_error.clone().unwrap_or_default()
                        ),
                        outcome_unknown: unknown,
                    };
                }
                if let Some(deadline) = cmd.deadline_ms
                    && now >= deadline
                {
                    break EffectOutcome::Failed {
                        error: match &last_error {
                            None => "deadline passed before the first attempt; not executed".into(),
                            Some(e) => {
                                format!("deadline passed after {attempts} attempts; last: {e}")
                            }
                        },
                        outcome_unknown: unknown,
                    };
                }
                // The deadline bounds when attempts start, not how long a started one may run:
                // cutting an attempt off mid-call would make its outcome unknown.
                let window = policy.attempt_timeout;
                let claim = LedgerRecord {
                    schema_version: LEDGER_SCHEMA_VERSION,
                    status: LedgerStatus::Running,
                    attempts: attempts + 1,
                    until_ms: now + (window + LEASE_MARGIN).as_millis() as u64,
                    outcome_unknown: unknown,
                    last_error: last_error.clone(),
                    result: None,
                };
                revision = match self.write(&key, &claim, revision).await {
                    Ok(rev) => Some(rev),
                    Err(LedgerWrite::Conflict) => continue 'reread,
                    Err(LedgerWrite::Failed(e)) => return Err(e),
                };
                attempts += 1;
                let command: E::Command = match serde_json::from_value(cmd.payload.clone()) {
                    Ok(c) => c,
                    Err(e) => {
                        break EffectOutcome::Failed {
                            error: format!("the command does not decode: {e}"),
                            outcome_unknown: false,
                        };
                    }
                };
                let ctx = EffectContext {
                    command_id: cmd.command_id.clone(),
                    request: request_context(cmd).map_err(HandlerError::new)?,
                    workflow: cmd.workflow.clone(),
                    instance: cmd.instance.clone(),
                    attempt: attempts,
                    deadline: tokio::time::Instant::now() + window,
                };
                let started = std::time::Instant::now();
                let ran = tokio::time::timeout(window, self.effect.execute(command, &ctx)).await;
                metrics::histogram!(names::EFFECT_DURATION, "effect_type" => E::TYPE)
                    .record(started.elapsed().as_secs_f64());
                let attempt = |o: &'static str| {
                    metrics::counter!(names::EFFECT_ATTEMPTS, "effect_type" => E::TYPE, "outcome" => o)
                        .increment(1)
                };
                match ran {
                    Ok(Ok(output)) => {
                        attempt("ok");
                        break EffectOutcome::Ok {
                            output: serde_json::to_value(output).unwrap_or_default(),
                        };
                    }
                    Ok(Err(e)) if e.kind == EffectErrorKind::Permanent => {
                        attempt("permanent");
                        break EffectOutcome::Failed {
                            error: e.message,
                            outcome_unknown: unknown,
                        };
                    }
                    Ok(Err(e)) => {
                        attempt(if e.kind == EffectErrorKind::Unknown {
                            "unknown"
                        } else {
                            "retryable"
                        });
                        unknown |= e.kind == EffectErrorKind::Unknown;
                        last_error = Some(e.message);
                    }
                    Err(_) => {
                        attempt("timeout");
                        unknown = true;
                        last_error = Some(format!("attempt {attempts} timed out after {window:?}"));
                    }
                }
                if attempts >= policy.max_attempts {
                    continue;
                }
                let mut delay = policy.backoff(attempts, rand::random::<f64>());
                if let Some(deadline) = cmd.deadline_ms {
                    delay = delay.min(Duration::from_millis(
                        deadline.saturating_sub(wire::now_ms()),
                    ));
                }
                let waiting = LedgerRecord {
                    schema_version: LEDGER_SCHEMA_VERSION,
                    status: LedgerStatus::Waiting,
                    attempts,
                    until_ms: wire::now_ms() + (delay + LEASE_MARGIN).as_millis() as u64,
                    outcome_unknown: unknown,
                    last_error: last_error.clone(),
                    result: None,
                };
                revision = match self.write(&key, &waiting, revision).await {
                    Ok(rev) => Some(rev),
                    Err(LedgerWrite::Conflict) => continue 'reread,
                    Err(LedgerWrite::Failed(e)) => return Err(e),
                };
                // An operator's retry-now cuts the backoff short.
                let wake = self.retry_now.register(&cmd.command_id);
                let _ = tokio::time::timeout(delay, wake.notified()).await;
                self.retry_now.done(&cmd.command_id);
            };
            let result = EffectResult {
                schema_version: wire::SCHEMA_VERSION,
                command_id: cmd.command_id.clone(),
                tenant_id: cmd.tenant_id.clone(),
                effect_type: cmd.effect_type.clone(),
                workflow: cmd.workflow.clone(),
                instance: cmd.instance.clone(),
                label: cmd.label.clone(),
                completed_at_ms: wire::now_ms(),
                attempts,
                outcome,
                correlation_id: cmd.correlation_id.clone(),
                traceparent: cmd.traceparent.clone(),
            };
            let done = LedgerRecord {
                schema_version: LEDGER_SCHEMA_VERSION,
                status: LedgerStatus::Done,
                attempts,
                until_ms: 0,
                outcome_unknown: unknown,
                last_error,
                result: Some(result.clone()),
            };
            // The effect has run: its outcome is written here, in place, however long the
            // ledger takes to answer. Handing the command back instead would find the claim
            // still leased (a deferral) and, once it expired, run the effect again. A write
            // that landed unseen makes the next one a conflict, and the re-read finds Done.
            let mut tries = 0u32;
            let mut held = None;
            loop {
                match self.write(&key, &done, revision).await {
                    Ok(_) => {
                        self.count(if result.is_ok() { "ok" } else { "failed" });
                        return Ok(result);
                    }
                    Err(LedgerWrite::Conflict) => continue 'reread,
                    Err(LedgerWrite::Failed(e)) if e.is_unavailable() => {
                        tries += 1;
                        metrics::counter!(names::HANDLER_RETRIES, "handler" => Self::KIND)
                            .increment(1);
                        crate::holding::tried(
                            &mut held,
                            (names::HANDLER_OLDEST_HELD, "handler", Self::KIND),
                        );
                        if tries == 1 || tries.is_multiple_of(12) {
                            tracing::warn!(key, attempt = tries, error = %e, "the effect ran; writing its outcome to the ledger, which does not answer");
                        }
                        tokio::time::sleep(crate::task::retry_delay(tries)).await;
                    }
                    Err(LedgerWrite::Failed(e)) => return Err(e),
                }
            }
        }
        Err(HandlerError::unavailable(format!(
            "ledger {key}: too many concurrent writers"
        )))
    }

    /// The ledger record and its revision; a read the store did not answer is an outage
    /// (the command is held), a record that does not decode its failure.
    async fn read(&self, key: &str) -> Result<(Option<LedgerRecord>, Option<u64>), HandlerError> {
        let entry = tokio::time::timeout(self.io_timeout, self.ledger.entry(key))
            .await
            .map_err(|_| HandlerError::unavailable(format!("reading the ledger {key} timed out")))?
            .map_err(|e| match e.kind() {
                kv::EntryErrorKind::InvalidKey => {
                    HandlerError::new(format!("reading the ledger {key}: {e}"))
                }
                _ => HandlerError::unavailable(format!("reading the ledger {key}: {e}")),
            })?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let r: LedgerRecord = serde_json::from_slice(&e.value).map_err(|err| {
                    HandlerError::new(format!("ledger {key} does not decode: {err}"))
                })?;
                Ok((Some(r), Some(e.revision)))
            }
            Some(e) => Ok((None, Some(e.revision))),
            None => Ok((None, None)),
        }
    }

    async fn write(
        &self,
        key: &str,
        record: &LedgerRecord,
        revision: Option<u64>,
    ) -> Result<u64, LedgerWrite> {
        let bytes = Bytes::from(
            serde_json::to_vec(record)
                .map_err(|e| LedgerWrite::Failed(HandlerError::new(e.to_string())))?,
        );
        let write = async {
            match revision {
                None => self.ledger.create(key, bytes).await.map_err(|e| {
                    if e.kind() == kv::CreateErrorKind::AlreadyExists {
                        LedgerWrite::Conflict
                    } else {
                        LedgerWrite::Failed(StoreError::of_write(key, &e).into())
                    }
                }),
                Some(rev) => self.ledger.update(key, bytes, rev).await.map_err(|e| {
                    if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                        LedgerWrite::Conflict
                    } else {
                        LedgerWrite::Failed(StoreError::of_write(key, &e).into())
                    }
                }),
            }
        };
        match tokio::time::timeout(self.io_timeout, write).await {
            Ok(r) => r,
            Err(_) => Err(LedgerWrite::Failed(HandlerError::unavailable(format!(
                "writing the ledger {key} timed out"
            )))),
        }
    }
}

/// What an operator's cancel did to one pending command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// No further attempt runs; its `failed` result ("cancelled") was published.
    Stopped,
    /// An attempt is running; its outcome decides.
    Running,
    /// It had finished already.
    Finished,
}

/// Cancels a pending command: records a `failed` outcome ("cancelled") in its ledger unless an
/// attempt runs right now or it finished, and publishes that result to the instance.
pub(crate) async fn cancel_command(
    ledger: &kv::Store,
    js: &jetstream::Context,
    cmd: &EffectCommand,
    reason: &str,
    io_timeout: Duration,
) -> Result<Cancelled, String> {
    let key = buckets::effect_ledger_key(&cmd.effect_type, &cmd.tenant_id, &cmd.command_id);
    for _ in 0..10 {
        let entry = tokio::time::timeout(io_timeout, ledger.entry(key.clone()))
            .await
            .map_err(|_| format!("reading the ledger {key} timed out"))?
            .map_err(|e| format!("reading the ledger {key}: {e}"))?;
        let (record, revision) = match entry {
            Some(e) if e.operation == kv::Operation::Put => (
                Some(
                    serde_json::from_slice::<LedgerRecord>(&e.value)
                        .map_err(|err| format!("ledger {key} does not decode: {err}"))?,
                ),
                Some(e.revision),
            ),
            Some(e) => (None, Some(e.revision)),
            None => (None, None),
        };
        let now = wire::now_ms();
        if let Some(r) = &record {
            if r.status == LedgerStatus::Done {
                return Ok(Cancelled::Finished);
            }
            if r.status == LedgerStatus::Running && r.until_ms > now {
                return Ok(Cancelled::Running);
            }
        }
        let attempts = record.as_ref().map_or(0, |r| r.attempts);
        let unknown = record.as_ref().is_some_and(|r| r.outcome_unknown);
        let result = EffectResult {
            schema_version: wire::SCHEMA_VERSION,
            command_id: cmd.command_id.clone(),
            tenant_id: cmd.tenant_id.clone(),
            effect_type: cmd.effect_type.clone(),
            workflow: cmd.workflow.clone(),
            instance: cmd.instance.clone(),
            label: cmd.label.clone(),
            completed_at_ms: now,
            attempts,
            outcome: EffectOutcome::Failed {
                error: format!("cancelled after {attempts} attempts: {reason}"),
                outcome_unknown: unknown,
            },
            correlation_id: cmd.correlation_id.clone(),
            traceparent: cmd.traceparent.clone(),
        };
        let done = LedgerRecord {
            schema_version: LEDGER_SCHEMA_VERSION,
            status: LedgerStatus::Done,
            attempts,
            until_ms: 0,
            outcome_unknown: unknown,
            last_error: Some(format!("cancelled: {reason}")),
            result: Some(result.clone()),
        };
        let bytes = Bytes::from(serde_json::to_vec(&done).map_err(|e| e.to_string())?);
        let written = match revision {
            None => ledger
                .create(&key, bytes)
                .await
                .map(|_| ())
                .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            Some(rev) => ledger
                .update(&key, bytes, rev)
                .await
                .map(|_| ())
                .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
        };
        match written {
            Ok(()) => {
                metrics::counter!(names::EFFECTS, "effect_type" => cmd.effect_type.clone(), "outcome" => "cancelled").increment(1);
                publish_result(js, cmd, &result, io_timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Cancelled::Stopped);
            }
            Err(true) => continue,
            Err(false) => return Err(format!("writing the ledger {key} failed")),
        }
    }
    Err(format!("ledger {key}: too many concurrent writers"))
}

/// Cuts a pending command's backoff short: its `waiting` claim ends now (so any worker may run
/// the next attempt) and the runner holding it is woken. Returns true when it was waiting.
pub(crate) async fn retry_command_now(
    ledger: &kv::Store,
    client: &async_nats::Client,
    effect_type: &str,
    tenant: &str,
    command_id: &str,
    io_timeout: Duration,
) -> Result<bool, String> {
    let key = buckets::effect_ledger_key(effect_type, tenant, command_id);
    let entry = tokio::time::timeout(io_timeout, ledger.entry(key.clone()))
        .await
        .map_err(|_| format!("reading the ledger {key} timed out"))?
        .map_err(|e| format!("reading the ledger {key}: {e}"))?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Ok(false);
    };
    let mut record: LedgerRecord = serde_json::from_slice(&entry.value)
        .map_err(|err| format!("ledger {key} does not decode: {err}"))?;
    if record.status != LedgerStatus::Waiting {
        return Ok(false);
    }
    record.until_ms = wire::now_ms();
    let bytes = Bytes::from(serde_json::to_vec(&record).map_err(|e| e.to_string())?);
    // A lost race means the worker moved on by itself: nothing to cut short.
    let _ = ledger.update(&key, bytes, entry.revision).await;
    client
        .publish(
            subject::RUNNER_RETRY_NOW,
            Bytes::from(command_id.to_string()),
        )
        .await
        .map_err(|e| format!("asking the runners to retry now: {e}"))?;
    Ok(true)
}

/// The request context a command's effect runs and publishes under.
fn request_context(cmd: &EffectCommand) -> Result<RequestContext, String> {
    let tenant = TenantId::new(cmd.tenant_id.clone())
        .map_err(|e| format!("command {} has an invalid tenant: {e}", cmd.command_id))?;
    let mut ctx = RequestContext::new(tenant);
    if let Some(c) = cmd
        .correlation_id
        .as_deref()
        .and_then(|c| CorrelationId::new(c).ok())
    {
        ctx.correlation_id = c;
    }
    if let Some(t) = cmd
        .traceparent
        .as_deref()
        .and_then(|t| TraceParent::parse(t).ok())
    {
        ctx.traceparent = t.next_hop();
    }
    ctx.idempotency_key = Some(cmd.command_id.clone());
    Ok(ctx)
}

/// Publishes a result to `tenant.<t>.effect_result.<effect_type>` with
/// `Nats-Msg-Id = <command_id>:result`.
/// Publishes a command's result. A result that cannot be published however often it is tried
/// (a bad tenant or type, over the server's max payload with its headers) is the command's
/// failure; a publish the stream did not acknowledge is an outage (the command is held and
/// published again: the result's message id makes a second copy a duplicate).
async fn publish_result(
    js: &jetstream::Context,
    cmd: &EffectCommand,
    result: &EffectResult,
    timeout: Duration,
) -> Result<(), HandlerError> {
    let tenant = TenantId::new(cmd.tenant_id.clone())
        .map_err(|e| HandlerError::new(format!("tenant: {e}")))?;
    let ty = SubjectToken::new(cmd.effect_type.clone())
        .map_err(|e| HandlerError::new(format!("effect type: {e}")))?;
    let payload =
        Bytes::from(serde_json::to_vec(result).map_err(|e| HandlerError::new(e.to_string()))?);
    nats::publish(
        js,
        subject::effect_result(&tenant, &ty),
        &request_context(cmd).map_err(HandlerError::new)?,
        &wire::result_msg_id(&cmd.command_id),
        None,
        payload,
        timeout,
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        nats::NatsError::TooLarge { .. } => {
            HandlerError::new(format!("the result of command {}: {e}", cmd.command_id))
        }
        e => HandlerError::unavailable(e.to_string()),
    })
}

/// The handler of the timer consumer: holds each timer command (deferring it on the server)
/// until it is due, then publishes its result — the firing the workflow receives.
pub struct TimerWorker {
    js: jetstream::Context,
    io_timeout: Duration,
}

impl TimerWorker {
    /// A timer worker publishing on `js`.
    pub fn new(js: jetstream::Context, io_timeout: Duration) -> Self {
        Self { js, io_timeout }
    }
}

impl EventHandler for TimerWorker {
    type Event = EffectCommand;
    type State = ();
    const KIND: &'static str = "timer_worker";

    async fn init(&self) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<EffectCommand>, _: &mut ()) -> Result<(), HandlerError> {
        let cmd = &d.event;
        if cmd.effect_type != TIMER_EFFECT {
            return Ok(());
        }
        let timer: TimerPayload = serde_json::from_value(cmd.payload.clone())
            .map_err(|e| HandlerError::new(format!("timer payload does not decode: {e}")))?;
        let now = wire::now_ms();
        if now < timer.fire_at_ms {
            return Err(HandlerError::defer(
                Duration::from_millis(timer.fire_at_ms - now),
                "timer not due",
            ));
        }
        let result = EffectResult {
            schema_version: wire::SCHEMA_VERSION,
            command_id: cmd.command_id.clone(),
            tenant_id: cmd.tenant_id.clone(),
            effect_type: TIMER_EFFECT.to_string(),
            workflow: cmd.workflow.clone(),
            instance: cmd.instance.clone(),
            label: timer.name.clone(),
            completed_at_ms: now,
            attempts: 1,
            outcome: EffectOutcome::Ok {
                output: serde_json::json!({
                    "fired_at_ms": now,
                    "late_ms": now - timer.fire_at_ms,
                }),
            },
            correlation_id: cmd.correlation_id.clone(),
            traceparent: cmd.traceparent.clone(),
        };
        metrics::histogram!(names::TIMER_LATENESS).record((now - timer.fire_at_ms) as f64 / 1000.0);
        publish_result(&self.js, cmd, &result, self.io_timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_records_round_trip_and_ignore_unknown_fields() {
        let r = LedgerRecord {
            schema_version: 1,
            status: LedgerStatus::Waiting,
            attempts: 2,
            until_ms: 9,
            outcome_unknown: true,
            last_error: Some("x".into()),
            result: None,
        };
        let mut v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "waiting");
        v["future"] = serde_json::json!(1);
        let back: LedgerRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn an_effect_runs_under_the_instance_context_with_its_command_id_as_idempotency_key() {
        let cmd = EffectCommand {
            schema_version: 1,
            command_id: "c1".into(),
            tenant_id: "acme".into(),
            effect_type: "e".into(),
            workflow: "w".into(),
            instance: "i".into(),
            label: String::new(),
            issued_at_ms: 0,
            deadline_ms: None,
            payload: serde_json::Value::Null,
            correlation_id: Some("corr-1".into()),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        let ctx = request_context(&cmd).unwrap();
        assert_eq!(ctx.tenant.as_str(), "acme");
        assert_eq!(ctx.correlation_id.as_str(), "corr-1");
        assert_eq!(ctx.idempotency_key.as_deref(), Some("c1"));
        assert_eq!(
            ctx.traceparent.trace_id().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
