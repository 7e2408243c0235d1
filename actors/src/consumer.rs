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
//! | handler deferred it ([`HandlerError::defer`](crate::handler::HandlerError::defer)) | nak with its delay, not a failure | `defer` |
//! | handler's store did not answer ([`HandlerError::unavailable`](crate::handler::HandlerError::unavailable)) | nothing yet: the handler holds it and tries again (the consumer keeps it ours); reported here by a handler that completes deliveries itself, nak with the initial delay, not a failure | `nak` |
//!
//! While a message waits for its lane or its handler runs, the consumer sends an in-progress
//! ack every third of `ack_wait` (`cloudlysis_consumer_progress_acks_total`), so the server
//! does not redeliver a message that is still being worked on.
//!
//! A poison record is written before the term; when it cannot be written the message is nak'ed
//! instead, so nothing is terminated without a record — except on the server's last delivery,
//! where a nak would drop it: there the message is held (in-progress acks) and the write tried
//! again (100 ms doubling to 5 s) until the poison bucket answers
//! (`cloudlysis_consumer_poison_write_failures_total`). A message the server stops redelivering
//! by itself (every delivery expired, `max_deliver` times) gets its record from the server's
//! `MAX_DELIVERIES` advisory (`consumer/advisory.rs`). Fetch errors (NATS down, consumer
//! leader change) are retried with capped backoff, and the client reconnects by itself; acks are
//! sent once per message. [`ConsumerHandle::drain`] stops fetching, waits for in-flight messages
//! and reports.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use cloudlysis_runtime::consumer::ConsumerPolicy;
use cloudlysis_runtime::kv as buckets;
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_runtime::metrics::names;
use cloudlysis_supervision::{ChildSpec, SupervisorConfig};
use metrics::{Counter, Gauge};
use ractor::RpcReplyPort;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::handler::{Delivery, DeliveryMeta, EventHandler, HandlerActor};

mod advisory;
mod fetch;

use fetch::fetch_loop;

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
    /// The node's intake switch: while it reads `true` the consumer fetches nothing (a drain);
    /// messages in flight finish. `None`: always on.
    pub intake: Option<watch::Receiver<bool>>,
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
            intake: self.intake.clone(),
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
            intake: None,
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
    /// Stream.
    pub stream: String,
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
    advisories: tokio::task::JoinHandle<()>,
}

impl Drop for ConsumerState {
    fn drop(&mut self) {
        // A failed or killed actor skips `post_stop`; its tasks must not outlive it.
        self.task.abort();
        self.advisories.abort();
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
    /// True once a drain was requested (what deliveries see: `Delivery::stop`).
    draining: watch::Receiver<bool>,
}

#[derive(Clone)]
struct ConsumerMetrics {
    ack: Counter,
    nak: Counter,
    term: Counter,
    skip: Counter,
    defer: Counter,
    progress: Counter,
    redeliveries: Counter,
    poison: Counter,
    poison_write_failures: Counter,
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
            defer: outcome("defer"),
            progress: metrics::counter!(names::CONSUMER_PROGRESS, "stream" => stream.to_string(), "consumer" => consumer.to_string()),
            redeliveries: metrics::counter!(names::CONSUMER_REDELIVERIES, "stream" => stream.to_string(), "consumer" => consumer.to_string()),
            poison: metrics::counter!(names::CONSUMER_POISON, "stream" => stream.to_string(), "consumer" => consumer.to_string()),
            poison_write_failures: metrics::counter!(names::CONSUMER_POISON_WRITE_FAILURES, "stream" => stream.to_string(), "consumer" => consumer.to_string()),
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
        // Create, or bind to an identical durable; a different one is refused, never rewritten.
        let consumer: PullConsumer =
            cloudlysis_runtime::consumer::ensure_consumer(&stream, &config.stream, &config.policy)
                .await?;
        let durable = config.policy.durable.to_string();
        let (drain_tx, drain_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            draining: drain_rx.clone(),
            metrics: ConsumerMetrics::new(&config.stream, &durable),
            stream: config.stream.clone(),
            durable,
            in_flight: AtomicU64::new(0),
            fetching: AtomicBool::new(true),
            settled: Notify::new(),
            drain_timeout: config.policy.settings.ack_wait,
        });
        // Independent of intake: a drained node still records what the server gave up on.
        let advisories = tokio::spawn(advisory::watch(
            config.js.clone(),
            poison_kv.clone(),
            shared.clone(),
            config.ack_timeout,
        ));
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
            advisories,
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
                    stream: state.shared.stream.clone(),
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
        state.advisories.abort();
        Ok(())
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
    let options = SubtreeOptions {
        checkpoint,
        lanes,
        partition,
        intake: None,
    };
    supervised_with(name, js, stream, policy, options, make_handler)
}

/// How a consumer subtree runs (see [`supervised_with`]).
pub struct SubtreeOptions<E> {
    /// Optional "already applied" hook.
    pub checkpoint: Option<CheckpointFn>,
    /// Handler lanes (at least 1).
    pub lanes: usize,
    /// Which lane a message goes to.
    pub partition: Option<PartitionFn<E>>,
    /// The node's intake switch (`true`: fetch nothing), shared by all its consumers.
    pub intake: Option<watch::Receiver<bool>>,
}

impl<E> Default for SubtreeOptions<E> {
    fn default() -> Self {
        Self {
            checkpoint: None,
            lanes: 1,
            partition: None,
            intake: None,
        }
    }
}

/// A supervisor (one-for-one) running `options.lanes` handler actors and the consumer actor
/// feeding them — the general form of [`supervised`] and [`supervised_lanes`].
pub fn supervised_with<H, F>(
    name: impl Into<String>,
    js: jetstream::Context,
    stream: impl Into<String>,
    policy: ConsumerPolicy,
    options: SubtreeOptions<H::Event>,
    make_handler: F,
) -> (SupervisorConfig, ConsumerHandle<H::Event>)
where
    H: EventHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    let name = name.into();
    let handler: BoundedRef<Delivery<H::Event>> =
        BoundedRef::new(H::KIND, policy.settings.max_in_flight as usize);
    let extra: Vec<BoundedRef<Delivery<H::Event>>> = (1..options.lanes.max(1))
        .map(|_| handler.sibling())
        .collect();
    let control: BoundedRef<ConsumerMsg> = BoundedRef::new(KIND, 8);
    let mut config = ConsumerConfig::new(js, stream, policy, handler.clone());
    config.checkpoint = options.checkpoint;
    config.lanes = extra.clone();
    config.partition = options.partition;
    config.intake = options.intake;
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

/// Announces a new poison record on [`cloudlysis_runtime::subject::poison_notification`] (core
/// NATS, at most once, bounded: a lost announcement never holds the consumer up — the record is
/// in KV either way).
pub(crate) async fn announce_poison(
    js: &jetstream::Context,
    record: &cloudlysis_runtime::poison::PoisonRecord,
) {
    let Ok(bytes) = serde_json::to_vec(record) else {
        return;
    };
    let subject = cloudlysis_runtime::subject::poison_notification(&record.consumer);
    let client = js.client();
    let publish = client.publish(subject, bytes.into());
    let _ = tokio::time::timeout(Duration::from_secs(1), publish).await;
}
