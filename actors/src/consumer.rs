//! The JetStream consumer actor: the building block of projection and runner nodes.
//!
//! It binds a durable pull consumer made from a [`ConsumerPolicy`] and feeds decoded messages to
//! a handler actor through a [`BoundedRef`]. It reserves mailbox slots **before** it fetches and
//! asks the server for at most that many messages, so it never holds more messages than the
//! handler has room for and `max_ack_pending == max_in_flight` holds end to end.
//!
//! | situation | action | `cloudlysis_consumer_messages_total{outcome}` |
//! |---|---|---|
//! | handler succeeded | ack | `ack` |
//! | handler failed (error, panic, not running), attempts < `max_deliver - 1` | nak with backoff | `nak` |
//! | handler failed on attempt `max_deliver - 1` or later | poison record, then term | `term` (+ `cloudlysis_consumer_poison_total`) |
//! | payload does not decode | poison record, then term | `term` (+ poison) |
//! | checkpoint hook says already applied | ack without dispatch | `skip` |
//!
//! A poison record is written before the term; when it cannot be written the message is nak'ed
//! instead, so nothing is terminated without a record. Fetch errors (NATS down, consumer
//! leader change) are retried with capped backoff, and the client reconnects by itself; acks are
//! sent once per message. [`ConsumerHandle::drain`] stops fetching, waits for in-flight messages
//! and reports.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, kv};
use cloudlysis_runtime::RequestContext;
use cloudlysis_runtime::consumer::ConsumerPolicy;
use cloudlysis_runtime::kv as buckets;
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef, Reservation};
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::poison::{self, PoisonRecord};
use cloudlysis_supervision::{ChildSpec, SupervisorConfig};
use futures::StreamExt;
use metrics::{Counter, Gauge};
use ractor::RpcReplyPort;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::handler::{Delivery, DeliveryMeta, EventHandler, HandlerActor};

/// Picks a handler lane for a decoded message (taken modulo the number of lanes). Messages of
/// one lane are handled one at a time, in delivery order.
pub type PartitionFn<E> = Arc<dyn Fn(&E) -> u64 + Send + Sync>;

/// Says whether a message was already applied (skip and ack it).
pub type CheckpointFn =
    Arc<dyn Fn(&DeliveryMeta) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Actor kind of the consumer actor.
pub const KIND: &str = "jetstream_consumer";

/// Everything a consumer actor needs; cloned on every restart.
pub struct ConsumerConfig<E> {
    /// JetStream context (its timeout bounds API calls).
    pub js: jetstream::Context,
    /// Stream to consume.
    pub stream: String,
    /// Durable name, filters and settings.
    pub policy: ConsumerPolicy,
    /// The handler's mailbox (capacity = `max_in_flight`).
    pub handler: BoundedRef<Delivery<E>>,
    /// More handler lanes: siblings of `handler` ([`BoundedRef::sibling`]), so all lanes
    /// together hold at most `max_in_flight` messages. Empty: one lane.
    pub lanes: Vec<BoundedRef<Delivery<E>>>,
    /// Which lane a message goes to (lane 0 when `None`).
    pub partition: Option<PartitionFn<E>>,
    /// Optional "already applied" hook.
    pub checkpoint: Option<CheckpointFn>,
    /// Longest a fetch waits for messages (default 1 s; bounds drain latency).
    pub fetch_expires: Duration,
    /// Deadline for acks, naks, terms and poison writes (default 5 s).
    pub ack_timeout: Duration,
}

impl<E> Clone for ConsumerConfig<E> {
    fn clone(&self) -> Self {
        Self {
            js: self.js.clone(),
            stream: self.stream.clone(),
            policy: self.policy.clone(),
            handler: self.handler.clone(),
            lanes: self.lanes.clone(),
            partition: self.partition.clone(),
            checkpoint: self.checkpoint.clone(),
            fetch_expires: self.fetch_expires,
            ack_timeout: self.ack_timeout,
        }
    }
}

impl<E: Send + 'static> ConsumerConfig<E> {
    /// A config with default fetch expiry and ack timeout and no checkpoint hook.
    pub fn new(
        js: jetstream::Context,
        stream: impl Into<String>,
        policy: ConsumerPolicy,
        handler: BoundedRef<Delivery<E>>,
    ) -> Self {
        Self {
            js,
            stream: stream.into(),
            policy,
            handler,
            lanes: Vec::new(),
            partition: None,
            checkpoint: None,
            fetch_expires: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

/// Control messages of the consumer actor.
pub enum ConsumerMsg {
    /// Stop fetching, wait for in-flight messages (up to the ack wait), report.
    Drain(RpcReplyPort<DrainReport>),
    /// Report state.
    Status(RpcReplyPort<ConsumerStatus>),
    /// Internal: the fetch loop hit an error it cannot recover from.
    Failed(String),
}

/// Result of a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// True when nothing is in flight any more.
    pub drained: bool,
    /// Messages still in flight.
    pub in_flight: u64,
}

/// State of a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// Durable name.
    pub durable: String,
    /// True once a drain was requested.
    pub draining: bool,
    /// True while the fetch loop runs (false once a drain has stopped it).
    pub fetching: bool,
    /// Messages fetched and not yet settled.
    pub in_flight: u64,
}

/// The consumer actor (run it with [`supervised`] or as a [`ChildSpec::bounded`] child).
pub struct ConsumerActor<E>(PhantomData<fn() -> E>);

impl<E> Default for ConsumerActor<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// State of a running consumer actor.
pub struct ConsumerState {
    shared: Arc<Shared>,
    drain_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConsumerState {
    fn drop(&mut self) {
        // A failed or killed actor skips `post_stop`; its fetch loop must not outlive it.
        self.task.abort();
    }
}

/// What the fetch loop and the settle tasks share.
struct Shared {
    stream: String,
    durable: String,
    in_flight: AtomicU64,
    fetching: AtomicBool,
    settled: Notify,
    drain_timeout: Duration,
    metrics: ConsumerMetrics,
}

#[derive(Clone)]
struct ConsumerMetrics {
    ack: Counter,
    nak: Counter,
    term: Counter,
    skip: Counter,
    redeliveries: Counter,
    poison: Counter,
    in_flight: Gauge,
}

impl ConsumerMetrics {
    fn new(stream: &str, consumer: &str) -> Self {
        let outcome = |o: &'static str| metrics::counter!(names::CONSUMER_MESSAGES, "stream" => stream.to_string(), "consumer" => consumer.to_string(), "outcome" => o);
        Self {
            ack: outcome("ack"),
            nak: outcome("nak"),
            term: outcome("term"),
            skip: outcome("skip"),
            redeliveries: metrics::counter!(names::CONSUMER_REDELIVERIES, "stream" => stream.to_string(), "consumer" => consumer.to_string()),
            poison: metrics::counter!(names::CONSUMER_POISON, "stream" => stream.to_string(), "consumer" => consumer.to_string()),
            in_flight: metrics::gauge!(names::CONSUMER_IN_FLIGHT, "stream" => stream.to_string(), "consumer" => consumer.to_string()),
        }
    }
}

impl<E: DeserializeOwned + Send + Sync + 'static> BoundedActor for ConsumerActor<E> {
    type Msg = ConsumerMsg;
    type State = ConsumerState;
    type Arguments = ConsumerConfig<E>;
    const KIND: &'static str = KIND;

    async fn pre_start(
        &self,
        myself: BoundedRef<ConsumerMsg>,
        config: ConsumerConfig<E>,
    ) -> Result<ConsumerState, ActorProcessingErr> {
        if config
            .lanes
            .iter()
            .any(|l| !l.shares_slots(&config.handler))
        {
            return Err(format!(
                "consumer {}: every handler lane must be a sibling of the handler mailbox \
                 (BoundedRef::sibling), or its messages could never be dispatched",
                config.policy.durable
            )
            .into());
        }
        let poison_kv = buckets::ensure_bucket(&config.js, &buckets::poison()).await?;
        let stream = config
            .js
            .get_stream(&config.stream)
            .await
            .map_err(|e| format!("stream {}: {e}", config.stream))?;
        let consumer: PullConsumer = stream
            .create_consumer(config.policy.pull_config())
            .await
            .map_err(|e| format!("consumer {}: {e}", config.policy.durable))?;
        let durable = config.policy.durable.to_string();
        let shared = Arc::new(Shared {
            metrics: ConsumerMetrics::new(&config.stream, &durable),
            stream: config.stream.clone(),
            durable,
            in_flight: AtomicU64::new(0),
            fetching: AtomicBool::new(true),
            settled: Notify::new(),
            drain_timeout: config.policy.settings.ack_wait,
        });
        let (drain_tx, drain_rx) = watch::channel(false);
        let task = tokio::spawn(fetch_loop(
            config,
            consumer,
            poison_kv,
            shared.clone(),
            drain_rx,
            myself,
        ));
        Ok(ConsumerState {
            shared,
            drain_tx,
            task,
        })
    }

    async fn handle(
        &self,
        _myself: &BoundedRef<ConsumerMsg>,
        msg: ConsumerMsg,
        state: &mut ConsumerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConsumerMsg::Drain(reply) => {
                let _ = state.drain_tx.send(true);
                // Wait off the actor so status requests are answered during the drain.
                let shared = state.shared.clone();
                tokio::spawn(async move {
                    let wait = async {
                        loop {
                            let settled = shared.settled.notified();
                            if shared.in_flight.load(Ordering::SeqCst) == 0
                                && !shared.fetching.load(Ordering::SeqCst)
                            {
                                return;
                            }
                            // Re-check at least every 50 ms: the fetch loop ends on its own.
                            let _ = tokio::time::timeout(Duration::from_millis(50), settled).await;
                        }
                    };
                    let _ = tokio::time::timeout(shared.drain_timeout, wait).await;
                    let in_flight = shared.in_flight.load(Ordering::SeqCst);
                    let _ = reply.send(DrainReport {
                        drained: in_flight == 0 && !shared.fetching.load(Ordering::SeqCst),
                        in_flight,
                    });
                });
            }
            ConsumerMsg::Status(reply) => {
                let _ = reply.send(ConsumerStatus {
                    durable: state.shared.durable.clone(),
                    draining: *state.drain_tx.borrow(),
                    fetching: state.shared.fetching.load(Ordering::SeqCst),
                    in_flight: state.shared.in_flight.load(Ordering::SeqCst),
                });
            }
            ConsumerMsg::Failed(reason) => return Err(reason.into()),
        }
        Ok(())
    }

    async fn post_stop(&self, state: &mut ConsumerState) -> Result<(), ActorProcessingErr> {
        let _ = state.drain_tx.send(true);
        state.task.abort();
        Ok(())
    }
}

/// Delay before fetch retry number `attempt`: 100 ms doubling, capped at 5 s.
fn fetch_retry_delay(attempt: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(6))).min(Duration::from_secs(5))
}

async fn fetch_loop<E: DeserializeOwned + Send + Sync + 'static>(
    config: ConsumerConfig<E>,
    consumer: PullConsumer,
    poison_kv: kv::Store,
    shared: Arc<Shared>,
    mut drain: watch::Receiver<bool>,
    control: BoundedRef<ConsumerMsg>,
) {
    let failure = fetch_batches(&config, &consumer, &poison_kv, &shared, &mut drain).await;
    shared.fetching.store(false, Ordering::SeqCst);
    shared.settled.notify_waiters();
    if let Some(reason) = failure {
        // Let the supervisor rebuild the consumer; wait for room rather than drop the news.
        let _ = control.send(ConsumerMsg::Failed(reason)).await;
    }
}

/// Fetches and dispatches until drained (`None`) or until fetching keeps failing
/// (`Some(reason)`).
async fn fetch_batches<E: DeserializeOwned + Send + Sync + 'static>(
    config: &ConsumerConfig<E>,
    consumer: &PullConsumer,
    poison_kv: &kv::Store,
    shared: &Arc<Shared>,
    drain: &mut watch::Receiver<bool>,
) -> Option<String> {
    let max_batch = config.policy.settings.max_in_flight.max(1) as usize;
    let mut failures = 0u32;
    loop {
        if *drain.borrow() {
            return None;
        }
        // While the handler is down (restarting), fetching would only burn delivery attempts.
        if !config.handler.is_alive() || config.lanes.iter().any(|l| !l.is_alive()) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {},
                changed = drain.changed() => if changed.is_err() { return None },
            }
            continue;
        }
        // Reserve room first: never fetch more than the handler can take.
        let first = tokio::select! {
            r = config.handler.reserve() => r,
            changed = drain.changed() => {
                if changed.is_err() {
                    return None;
                }
                continue;
            }
        };
        let mut slots = vec![first];
        while slots.len() < max_batch {
            match config.handler.try_reserve() {
                Some(r) => slots.push(r),
                None => break,
            }
        }
        let batch = consumer
            .batch()
            .max_messages(slots.len())
            .expires(config.fetch_expires)
            .messages()
            .await;
        let error = match batch {
            Err(e) => Some(e.to_string()),
            Ok(mut messages) => {
                let mut error = None;
                while let Some(item) = messages.next().await {
                    match item {
                        Ok(msg) => {
                            failures = 0;
                            match slots.pop() {
                                Some(slot) => process(config, poison_kv, shared, msg, slot).await,
                                // The server never sends more than asked; if it did, let it
                                // redeliver.
                                None => {
                                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                                }
                            }
                        }
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                error
            }
        };
        // Unused reservations are dropped here, freeing their slots.
        drop(slots);
        if let Some(e) = error {
            // Fetch errors (NATS down, consumer deleted, leader change) back off; a long run of
            // them (about half an hour at the 5 s cap) hands the problem to the supervisor.
            failures += 1;
            tracing::warn!(consumer = %shared.durable, error = %e, attempt = failures, "fetch failed; retrying");
            if failures > 360 {
                return Some(format!("fetch keeps failing: {e}"));
            }
            tokio::select! {
                _ = tokio::time::sleep(fetch_retry_delay(failures)) => {},
                changed = drain.changed() => if changed.is_err() { return None },
            }
        }
    }
}

async fn process<E: DeserializeOwned + Send + Sync + 'static>(
    config: &ConsumerConfig<E>,
    poison_kv: &kv::Store,
    shared: &Arc<Shared>,
    msg: jetstream::Message,
    slot: Reservation<'_, Delivery<E>>,
) {
    let meta = match msg.info() {
        Ok(info) => DeliveryMeta {
            stream: info.stream.to_string(),
            consumer: info.consumer.to_string(),
            subject: msg.subject.to_string(),
            stream_sequence: info.stream_sequence,
            delivered: info.delivered.max(1) as u64,
        },
        Err(e) => {
            // Not a JetStream delivery (no ack subject): nothing to settle.
            tracing::warn!(error = %e, subject = %msg.subject, "message without JetStream metadata ignored");
            return;
        }
    };
    if meta.delivered > 1 {
        shared.metrics.redeliveries.increment(1);
    }
    let in_flight = InFlight::new(shared.clone());

    if let Some(checkpoint) = &config.checkpoint
        && checkpoint(&meta).await
    {
        drop(slot);
        settle_ack(config, shared, &msg, true).await;
        drop(in_flight);
        return;
    }

    let event = match serde_json::from_slice::<E>(&msg.payload) {
        Ok(e) => e,
        Err(e) => {
            drop(slot);
            let reason = format!("undecodable payload: {e}");
            quarantine(config, poison_kv, shared, &msg, &meta, reason).await;
            drop(in_flight);
            return;
        }
    };
    let ctx = msg
        .headers
        .as_ref()
        .and_then(|h| RequestContext::extract_nats(h).ok());
    let lane = match &config.partition {
        Some(f) if !config.lanes.is_empty() => {
            (f(&event) % (config.lanes.len() as u64 + 1)) as usize
        }
        _ => 0,
    };
    let (delivery, outcome) = Delivery::new(event, ctx, msg.headers.clone(), meta.clone());
    let dispatched = match lane {
        0 => slot.send(delivery).is_ok(),
        n => slot.send_to(&config.lanes[n - 1], delivery).is_ok(),
    };
    let (config, poison_kv, shared) = (config.clone(), poison_kv.clone(), shared.clone());
    tokio::spawn(async move {
        // `handled`: the handler ran and failed (counts towards poison). Otherwise it never
        // ran — the handler was down or failed on another message — and the message is only
        // redelivered, unless this was the server's last delivery.
        let (outcome, handled) = if dispatched {
            match outcome.await {
                Ok(result) => (result, true),
                Err(_) => (Err("handler stopped before handling it".into()), false),
            }
        } else {
            (Err("handler not running".into()), false)
        };
        let max_deliver = config.policy.settings.max_deliver;
        match outcome {
            Ok(()) => settle_ack(&config, &shared, &msg, false).await,
            Err(reason)
                if (handled && meta.delivered >= max_deliver.saturating_sub(1))
                    || meta.delivered >= max_deliver =>
            {
                quarantine(&config, &poison_kv, &shared, &msg, &meta, reason).await;
            }
            Err(reason) => {
                let delay = if handled {
                    config.policy.settings.nak_backoff.delay(meta.delivered)
                } else {
                    config.policy.settings.nak_backoff.initial
                };
                tracing::debug!(consumer = %shared.durable, seq = meta.stream_sequence, attempt = meta.delivered, %reason, ?delay, "nak");
                settle(&config, &msg, AckKind::Nak(Some(delay))).await;
                shared.metrics.nak.increment(1);
            }
        }
        drop(in_flight);
    });
}

async fn settle_ack<E>(
    config: &ConsumerConfig<E>,
    shared: &Shared,
    msg: &jetstream::Message,
    skip: bool,
) {
    settle(config, msg, AckKind::Ack).await;
    if skip {
        shared.metrics.skip.increment(1);
    } else {
        shared.metrics.ack.increment(1);
    }
}

/// Writes the poison record, then terms; naks instead when the record cannot be written.
async fn quarantine<E>(
    config: &ConsumerConfig<E>,
    poison_kv: &kv::Store,
    shared: &Shared,
    msg: &jetstream::Message,
    meta: &DeliveryMeta,
    reason: String,
) {
    let record = PoisonRecord::new(
        &shared.stream,
        &shared.durable,
        meta.stream_sequence,
        &meta.subject,
        msg.headers.as_ref(),
        reason.clone(),
        meta.delivered,
    );
    let key = poison::key(&shared.durable, meta.stream_sequence);
    let write = async {
        let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        poison_kv
            .put(&key, bytes.into())
            .await
            .map_err(|e| e.to_string())
    };
    // On the server's last delivery a nak would lose the message: keep trying (telling the
    // server we are working on it) within the ack wait.
    let last = meta.delivered >= config.policy.settings.max_deliver;
    let tries = if last { 5 } else { 1 };
    let mut result = tokio::time::timeout(config.ack_timeout, write).await;
    for _ in 1..tries {
        if matches!(result, Ok(Ok(_))) {
            break;
        }
        let _ = msg.ack_with(AckKind::Progress).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        result = tokio::time::timeout(config.ack_timeout, async {
            poison_kv
                .put(&key, bytes.into())
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    }
    match result {
        Ok(Ok(_)) => {
            tracing::warn!(consumer = %shared.durable, seq = meta.stream_sequence, subject = %meta.subject, %reason, "message quarantined as poison");
            settle(config, msg, AckKind::Term).await;
            shared.metrics.term.increment(1);
            shared.metrics.poison.increment(1);
        }
        other => {
            let why = match other {
                Ok(Err(e)) => e,
                _ => "timed out".into(),
            };
            tracing::error!(consumer = %shared.durable, seq = meta.stream_sequence, error = %why, "could not write poison record; nak instead of term");
            settle(config, msg, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            shared.metrics.nak.increment(1);
        }
    }
}

/// Sends one ack/nak/term under the ack deadline. A lost ack means a redelivery, which the
/// handler's idempotence (or the checkpoint hook) absorbs.
async fn settle<E>(config: &ConsumerConfig<E>, msg: &jetstream::Message, kind: AckKind) {
    match tokio::time::timeout(config.ack_timeout, msg.ack_with(kind)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(subject = %msg.subject, error = %e, "ack failed; the message will be redelivered")
        }
        Err(_) => {
            tracing::warn!(subject = %msg.subject, "ack timed out; the message will be redelivered")
        }
    }
}

/// One fetched message not yet settled; dropping it (also on abort or panic) settles the count.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        shared.metrics.in_flight.increment(1.0);
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.in_flight.decrement(1.0);
        self.0.settled.notify_waiters();
    }
}

/// Handles to a supervised consumer: its control mailbox and its handler's mailbox.
#[derive(Debug)]
pub struct ConsumerHandle<E> {
    /// The consumer actor's control mailbox.
    pub control: BoundedRef<ConsumerMsg>,
    /// The handler's mailbox.
    pub handler: BoundedRef<Delivery<E>>,
}

impl<E> Clone for ConsumerHandle<E> {
    fn clone(&self) -> Self {
        Self {
            control: self.control.clone(),
            handler: self.handler.clone(),
        }
    }
}

impl<E: Send + 'static> ConsumerHandle<E> {
    /// Stops fetching, waits for in-flight messages, reports (bounded by `timeout`).
    pub async fn drain(
        &self,
        timeout: Duration,
    ) -> Result<DrainReport, cloudlysis_runtime::mailbox::AskError> {
        self.control.ask(ConsumerMsg::Drain, timeout).await
    }

    /// The consumer's state.
    pub async fn status(
        &self,
        timeout: Duration,
    ) -> Result<ConsumerStatus, cloudlysis_runtime::mailbox::AskError> {
        self.control.ask(ConsumerMsg::Status, timeout).await
    }
}

/// A supervisor (one-for-one) running a handler actor and the consumer actor feeding it, with
/// the handler's mailbox capacity set to the policy's `max_in_flight`.
pub fn supervised<H, F>(
    name: impl Into<String>,
    js: jetstream::Context,
    stream: impl Into<String>,
    policy: ConsumerPolicy,
    checkpoint: Option<CheckpointFn>,
    make_handler: F,
) -> (SupervisorConfig, ConsumerHandle<H::Event>)
where
    H: EventHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    supervised_lanes(name, js, stream, policy, checkpoint, 1, None, make_handler)
}

/// Like [`supervised`], with `lanes` handler actors (at least 1) fed by the one consumer:
/// `partition` picks each message's lane, so messages with the same partition value are
/// handled one at a time in delivery order while different ones run concurrently. All lanes
/// share one budget of `max_in_flight` messages (mailbox siblings), so the server-side
/// `max_ack_pending == max_in_flight` still bounds the whole subtree.
#[allow(clippy::too_many_arguments)]
pub fn supervised_lanes<H, F>(
    name: impl Into<String>,
    js: jetstream::Context,
    stream: impl Into<String>,
    policy: ConsumerPolicy,
    checkpoint: Option<CheckpointFn>,
    lanes: usize,
    partition: Option<PartitionFn<H::Event>>,
    make_handler: F,
) -> (SupervisorConfig, ConsumerHandle<H::Event>)
where
    H: EventHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    let name = name.into();
    let handler: BoundedRef<Delivery<H::Event>> =
        BoundedRef::new(H::KIND, policy.settings.max_in_flight as usize);
    let extra: Vec<BoundedRef<Delivery<H::Event>>> =
        (1..lanes.max(1)).map(|_| handler.sibling()).collect();
    let control: BoundedRef<ConsumerMsg> = BoundedRef::new(KIND, 8);
    let mut config = ConsumerConfig::new(js, stream, policy, handler.clone());
    config.checkpoint = checkpoint;
    config.lanes = extra.clone();
    config.partition = partition;
    let make_handler = Arc::new(make_handler);
    let make = make_handler.clone();
    let mut sup = SupervisorConfig::new(name.clone()).child(ChildSpec::bounded(
        format!("{name}-handler"),
        handler.clone(),
        move || (HandlerActor(make()), ()),
    ));
    for (i, lane) in extra.into_iter().enumerate() {
        let make = make_handler.clone();
        sup = sup.child(ChildSpec::bounded(
            format!("{name}-handler-{}", i + 1),
            lane,
            move || (HandlerActor(make()), ()),
        ));
    }
    let sup = sup.child(ChildSpec::bounded(
        format!("{name}-consumer"),
        control.clone(),
        move || (ConsumerActor::<H::Event>::default(), config.clone()),
    ));
    (sup, ConsumerHandle { control, handler })
}
