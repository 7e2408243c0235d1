//! Event handlers: the actors a [`consumer`](crate::consumer) dispatches decoded messages to.
//!
//! Implement [`EventHandler`]; run it as [`HandlerActor`] behind a
//! [`BoundedRef`](cloudlysis_runtime::mailbox::BoundedRef) whose capacity is the consumer's
//! `max_in_flight`.
//!
//! | `handle` returns | the consumer |
//! |---|---|
//! | `Ok(())` | acks the message |
//! | `Err(e)` | naks it with backoff; after `max_deliver - 1` failures writes a poison record and terms it |
//! | `Err(HandlerError::defer(d, ..))` | not yet: naks it with delay `d`, not counted as a failure (timers) |
//! | `Err(HandlerError::unavailable(..))` | nothing yet: the handler's store did not answer; [`run_one`] holds the message and handles it again (100 ms doubling to 5 s) until it answers otherwise |
//! | panics | the message counts as failed (nak, or poison on its last attempt); the handler actor fails and its supervisor restarts it |
//!
//! Messages that were queued for the handler when it failed, or fetched while it was down, did
//! not fail: they are nak'ed for redelivery without counting towards poison (except on the
//! server's last delivery, where a poison record is the only way not to lose them).

use std::future::Future;

use async_nats::HeaderMap;
use cloudlysis_runtime::RequestContext;
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

/// Where a delivery came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryMeta {
    /// Stream name.
    pub stream: String,
    /// Durable consumer name.
    pub consumer: String,
    /// Subject.
    pub subject: String,
    /// Stream sequence.
    pub stream_sequence: u64,
    /// Delivery attempt, 1-based.
    pub delivered: u64,
}

/// A decoded message on its way to a handler.
pub struct Delivery<E> {
    /// The decoded payload.
    pub event: E,
    /// Context hydrated from the message headers (`None` when the headers carry no tenant).
    pub ctx: Option<RequestContext>,
    /// The raw headers.
    pub headers: Option<HeaderMap>,
    /// Stream, subject, sequence and attempt.
    pub meta: DeliveryMeta,
    pub(crate) done: Option<oneshot::Sender<Result<(), HandlerError>>>,
    /// Whether its consumer is draining (set by the consumer): a message held through an
    /// outage is handed back then rather than held past the drain.
    pub(crate) stop: Option<Stopping>,
}

/// A consumer's drain signals as a delivery sees them: its own drain, and the node's intake
/// switch.
#[derive(Clone)]
pub(crate) struct Stopping {
    pub(crate) drain: tokio::sync::watch::Receiver<bool>,
    pub(crate) intake: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Stopping {
    /// Resolves once either signal says stop (at once when one already does).
    pub(crate) async fn stopped(&mut self) {
        let drain = async {
            if self.drain.wait_for(|d| *d).await.is_err() {
                // The consumer is gone: not a drain, so never resolve on it.
                std::future::pending::<()>().await;
            }
        };
        let intake = async {
            let stopped = match self.intake.as_mut() {
                Some(rx) => rx.wait_for(|i| *i).await.is_ok(),
                None => false,
            };
            if !stopped {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = drain => {}
            () = intake => {}
        }
    }
}

impl<E> Delivery<E> {
    /// A delivery whose outcome is reported on the returned receiver (for tests and custom
    /// dispatchers).
    pub fn new(
        event: E,
        ctx: Option<RequestContext>,
        headers: Option<HeaderMap>,
        meta: DeliveryMeta,
    ) -> (Self, oneshot::Receiver<Result<(), HandlerError>>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                event,
                ctx,
                headers,
                meta,
                done: Some(tx),
                stop: None,
            },
            rx,
        )
    }

    /// Reports the outcome to the consumer (once; later calls do nothing).
    pub fn complete(&mut self, outcome: Result<(), HandlerError>) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(outcome);
        }
    }
}

/// Why a handler could not process a delivery: a failure (the message is retried, then
/// quarantined), a deferral (not yet: redeliver after a delay, not counted as a failure), or an
/// outage (the handler's store did not answer: hold the message and run it again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    message: String,
    defer: Option<std::time::Duration>,
    unavailable: bool,
}

impl HandlerError {
    /// A failure with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            message: msg.into(),
            defer: None,
            unavailable: false,
        }
    }

    /// Not a failure: the message is not due yet; redeliver it after `delay`. The consumer naks
    /// it with that delay and does not count the delivery towards poison (a consumer whose
    /// handler defers needs a `max_deliver` large enough for its deferrals).
    pub fn defer(delay: std::time::Duration, why: impl Into<String>) -> Self {
        Self {
            message: why.into(),
            defer: Some(delay),
            unavailable: false,
        }
    }

    /// Not the message's fault: what the handler needs (its KV bucket, a stream, NATS) did not
    /// answer — a timeout, no leader during an election, the connection down. [`run_one`] keeps
    /// the delivery and runs the handler on it again after 100 ms doubling to 5 s, for as long
    /// as it answers so (the consumer keeps the message ours with in-progress acks, and takes
    /// no more than the mailbox holds meanwhile), so an outage never quarantines a message and
    /// the handler's order is kept. Counted in `cloudlysis_handler_retries_total{handler}`. A
    /// consumer that drains meanwhile gets the message back for redelivery elsewhere, not
    /// counted as a failure.
    /// Reported to the consumer by a handler that completes deliveries itself, it is
    /// redelivered without counting towards poison.
    pub fn unavailable(why: impl Into<String>) -> Self {
        Self {
            message: why.into(),
            defer: None,
            unavailable: true,
        }
    }

    /// What happened.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The delay of a deferral (`None` for a failure).
    pub fn deferred(&self) -> Option<std::time::Duration> {
        self.defer
    }

    /// True for an outage ([`unavailable`](Self::unavailable)).
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

/// Processes decoded events, one at a time per actor.
pub trait EventHandler: Send + Sync + Sized + 'static {
    /// The payload type, decoded from JSON.
    type Event: DeserializeOwned + Send + Sync + 'static;
    /// Handler state, built on every (re)start.
    type State: Send + 'static;
    /// Actor kind (metric label).
    const KIND: &'static str;

    /// Builds the state.
    fn init(&self) -> impl Future<Output = Result<Self::State, ActorProcessingErr>> + Send;

    /// Handles one delivery. Must be idempotent: delivery is at least once.
    fn handle(
        &self,
        delivery: &Delivery<Self::Event>,
        state: &mut Self::State,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Takes one delivery from the mailbox. The default runs [`handle`](Self::handle) and
    /// completes the delivery with its outcome before the next message (a panic is that
    /// message's failure and fails the actor). A handler that works on batches — a view
    /// coalescing what was fetched — may keep the delivery and complete it later: the
    /// consumer settles it only then, and the server-side `max_ack_pending` (=
    /// `max_in_flight`) still bounds what the handler holds. An error fails the actor.
    fn accept(
        &self,
        delivery: Delivery<Self::Event>,
        state: &mut Self::State,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        run_one(self, delivery, state)
    }
}

/// Handles `delivery` with `handler` and completes it (see [`EventHandler::accept`]); while
/// the handler answers [`HandlerError::unavailable`], holds the delivery and handles it again
/// (100 ms doubling to 5 s).
pub async fn run_one<H: EventHandler>(
    handler: &H,
    delivery: Delivery<H::Event>,
    state: &mut H::State,
) -> Result<(), ActorProcessingErr> {
    // The message's one hold through an outage (`cloudlysis_handler_oldest_held_seconds`),
    // shared with any step of `handle` that holds by itself.
    crate::holding::one_message(handle_until_answered(handler, delivery, state)).await
}

/// [`run_one`]'s loop, inside the message's [`one_message`](crate::holding::one_message).
async fn handle_until_answered<H: EventHandler>(
    handler: &H,
    mut delivery: Delivery<H::Event>,
    state: &mut H::State,
) -> Result<(), ActorProcessingErr> {
    let mut attempt = 0u32;
    loop {
        // A panic is this message's failure: report it, then fail the actor so its supervisor
        // restarts it with fresh state.
        let outcome = std::panic::AssertUnwindSafe(handler.handle(&delivery, state))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Err(e)) if e.is_unavailable() => {
                attempt += 1;
                metrics::counter!(
                    cloudlysis_runtime::metrics::names::HANDLER_RETRIES,
                    "handler" => H::KIND
                )
                .increment(1);
                crate::holding::tried(
                    &mut None, // inside `one_message`: the message's hold
                    (
                        cloudlysis_runtime::metrics::names::HANDLER_OLDEST_HELD,
                        "handler",
                        H::KIND,
                    ),
                );
                // The first time, then about once a minute at the 5 s cap.
                if attempt == 1 || attempt.is_multiple_of(12) {
                    tracing::warn!(handler = H::KIND, consumer = %delivery.meta.consumer, seq = delivery.meta.stream_sequence, attempt, error = %e, "handler's store does not answer; holding the message and trying again");
                }
                let pause = tokio::time::sleep(crate::task::retry_delay(attempt));
                let Some(mut stop) = delivery.stop.clone() else {
                    pause.await;
                    continue;
                };
                tokio::select! {
                    () = pause => {}
                    () = stop.stopped() => {
                        // A drain does not wait out an outage: the message goes back to the
                        // server (not counted as a failure) for a node that stays.
                        tracing::info!(handler = H::KIND, seq = delivery.meta.stream_sequence, "draining: a message held through an outage is handed back");
                        crate::holding::let_go();
                        delivery.complete(Err(HandlerError::unavailable(format!(
                            "handed back while draining; its store did not answer: {e}"
                        ))));
                        return Ok(());
                    }
                }
            }
            Ok(result) => {
                if attempt > 0 {
                    tracing::info!(
                        handler = H::KIND,
                        seq = delivery.meta.stream_sequence,
                        attempts = attempt + 1,
                        "handler's store answers again"
                    );
                }
                crate::holding::let_go();
                delivery.complete(result);
                return Ok(());
            }
            Err(payload) => {
                let reason = format!(
                    "panicked: {}",
                    cloudlysis_runtime::mailbox::panic_message(&payload)
                );
                delivery.complete(Err(HandlerError::new(reason.clone())));
                return Err(reason.into());
            }
        }
    }
}

/// Runs an [`EventHandler`] as a bounded actor.
pub struct HandlerActor<H>(pub H);

impl<H: EventHandler> BoundedActor for HandlerActor<H> {
    type Msg = Delivery<H::Event>;
    type State = H::State;
    type Arguments = ();
    const KIND: &'static str = H::KIND;

    async fn pre_start(
        &self,
        _myself: BoundedRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        self.0.init().await
    }

    async fn handle(
        &self,
        _myself: &BoundedRef<Self::Msg>,
        delivery: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.0.accept(delivery, state).await
    }
}
