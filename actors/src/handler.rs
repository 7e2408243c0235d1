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
    pub(crate) done: Option<oneshot::Sender<Result<(), String>>>,
}

impl<E> Delivery<E> {
    /// A delivery whose outcome is reported on the returned receiver (for tests and custom
    /// dispatchers).
    pub fn new(
        event: E,
        ctx: Option<RequestContext>,
        headers: Option<HeaderMap>,
        meta: DeliveryMeta,
    ) -> (Self, oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                event,
                ctx,
                headers,
                meta,
                done: Some(tx),
            },
            rx,
        )
    }

    /// Reports the outcome to the consumer (once; later calls do nothing).
    pub fn complete(&mut self, outcome: Result<(), String>) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(outcome);
        }
    }
}

/// Why a handler could not process a delivery (the message will be retried or quarantined).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
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
        mut delivery: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // A panic is this message's failure: report it, then fail the actor so its supervisor
        // restarts it with fresh state.
        let outcome = std::panic::AssertUnwindSafe(self.0.handle(&delivery, state))
            .catch_unwind()
            .await;
        match outcome {
            Ok(result) => {
                delivery.complete(result.map_err(|e| e.0));
                Ok(())
            }
            Err(payload) => {
                let reason = format!(
                    "panicked: {}",
                    cloudlysis_runtime::mailbox::panic_message(&payload)
                );
                delivery.complete(Err(reason.clone()));
                Err(reason.into())
            }
        }
    }
}
