//! The fetch loop of a consumer actor and the settlement of each message: reserve mailbox
//! slots, fetch at most that many messages, decode, dispatch to a lane, then ack, nak, defer or
//! quarantine — keeping every message alive with in-progress acks while it waits or runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, kv};
use cloudlysis_runtime::RequestContext;
use cloudlysis_runtime::mailbox::{BoundedRef, Reservation};
use cloudlysis_runtime::poison::{self, PoisonRecord};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{ConsumerConfig, ConsumerMsg, Shared};
use crate::handler::{Delivery, DeliveryMeta, HandlerError};

pub(super) async fn fetch_loop<E: DeserializeOwned + Send + Sync + 'static>(
    config: ConsumerConfig<E>,
    consumer: PullConsumer,
    poison_kv: kv::Store,
    shared: Arc<Shared>,
    mut drain: watch::Receiver<bool>,
    control: BoundedRef<ConsumerMsg>,
) {
    // Shared by every message's settlement task: one reference count each, not a copy.
    let (config, poison_kv) = (Arc::new(config), Arc::new(poison_kv));
    let failure = fetch_batches(&config, &consumer, &poison_kv, &shared, &mut drain).await;
    shared.fetching.store(false, Ordering::SeqCst);
    shared.settled.notify_waiters();
    if let Some(reason) = failure {
        // Let the supervisor rebuild the consumer; wait for room rather than drop the news.
        let _ = control.send(ConsumerMsg::Failed(reason)).await;
    }
}

/// Beyond the fetch expiry, how long a message fetched as the intake stopped waits before it
/// is redelivered (to another node: this one's pull has expired by then).
pub const STRAY_REDELIVERY_MARGIN: Duration = Duration::from_millis(500);

/// Fetches and dispatches until drained (`None`) or until fetching keeps failing
/// (`Some(reason)`).
async fn fetch_batches<E: DeserializeOwned + Send + Sync + 'static>(
    config: &Arc<ConsumerConfig<E>>,
    consumer: &PullConsumer,
    poison_kv: &Arc<kv::Store>,
    shared: &Arc<Shared>,
    drain: &mut watch::Receiver<bool>,
) -> Option<String> {
    let max_batch = config.policy.settings.max_in_flight.max(1) as usize;
    let mut failures = 0u32;
    let mut intake = config.intake.clone();
    let stopped = |i: &Option<watch::Receiver<bool>>| i.as_ref().is_some_and(|r| *r.borrow());
    loop {
        if *drain.borrow() {
            return None;
        }
        // The node stopped its intake (a drain): no new fetches until it resumes.
        if let Some(rx) = intake.as_mut()
            && *rx.borrow()
        {
            shared.fetching.store(false, Ordering::SeqCst);
            shared.settled.notify_waiters();
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return None },
                changed = drain.changed() => if changed.is_err() { return None },
            }
            shared.fetching.store(!*rx.borrow(), Ordering::SeqCst);
            continue;
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
                        // Delivered for a pull made before the intake stopped: hand it back
                        // (another node takes it), not counted as a failure. Not at once: this
                        // pull stays open until it expires, and an immediate redelivery would
                        // come back to it — each nak a delivery attempt, until the server gives
                        // up on the message (max_deliver) and it becomes poison. After the pull
                        // expired, the redelivery can only go to a node that is fetching.
                        Ok(msg) if stopped(&intake) => {
                            let after = config.fetch_expires + STRAY_REDELIVERY_MARGIN;
                            let _ = msg.ack_with(AckKind::Nak(Some(after))).await;
                        }
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
                _ = tokio::time::sleep(crate::task::retry_delay(failures + 1)) => {},
                changed = drain.changed() => if changed.is_err() { return None },
            }
        }
    }
}

async fn process<E: DeserializeOwned + Send + Sync + 'static>(
    config: &Arc<ConsumerConfig<E>>,
    poison_kv: &Arc<kv::Store>,
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
    // This delivery's span: from dispatch to settlement, a child of the publish.
    let span = ctx
        .as_ref()
        .map(|c| (c.traceparent, std::time::SystemTime::now()));
    let lane = match &config.partition {
        Some(f) if !config.lanes.is_empty() => {
            (f(&event) % (config.lanes.len() as u64 + 1)) as usize
        }
        _ => 0,
    };
    let (mut delivery, outcome) = Delivery::new(event, ctx, msg.headers.clone(), meta.clone());
    delivery.stop = Some(crate::handler::Stopping {
        drain: shared.draining.clone(),
        intake: config.intake.clone(),
    });
    let dispatched = match lane {
        0 => slot.send(delivery).is_ok(),
        n => slot.send_to(&config.lanes[n - 1], delivery).is_ok(),
    };
    let (config, poison_kv, shared) = (config.clone(), poison_kv.clone(), shared.clone());
    // Boxed, as the entity's turn (`aggregate/cell.rs`): the settlement's state machine holds the
    // message and the quarantine's, and tokio moves a task's future at the spawn and at every
    // stage change — with a box, a pointer.
    tokio::spawn(Box::pin(async move {
        // `handled`: the handler ran and failed (counts towards poison). Otherwise it never
        // ran — the handler was down or failed on another message — and the message is only
        // redelivered, unless this was the server's last delivery.
        let (outcome, handled) = if dispatched {
            // Queued behind other messages or running long: keep the message ours, or the
            // server redelivers it (here or to another node) while it is still being worked on.
            match with_progress(&msg, config.policy.settings.ack_wait, &shared, outcome).await {
                Ok(result) => (result, true),
                Err(_) => (
                    Err(HandlerError::new("handler stopped before handling it")),
                    false,
                ),
            }
        } else {
            (Err(HandlerError::new("handler not running")), false)
        };
        // An outage reported by a handler that completes deliveries itself is not the
        // message's failure either.
        let handled = handled && !matches!(&outcome, Err(e) if e.is_unavailable());
        let max_deliver = config.policy.settings.max_deliver;
        match outcome {
            Ok(()) => settle_ack(&config, &shared, &msg, false).await,
            // Not due yet: redeliver later, without counting a failure — unless the server
            // would not deliver it again.
            Err(e) if e.deferred().is_some() && meta.delivered < max_deliver => {
                let delay = e.deferred().unwrap_or_default();
                tracing::trace!(consumer = %shared.durable, seq = meta.stream_sequence, ?delay, reason = e.message(), "deferred");
                settle(&config, &msg, AckKind::Nak(Some(delay))).await;
                shared.metrics.defer.increment(1);
            }
            Err(e)
                if (handled && meta.delivered >= max_deliver.saturating_sub(1))
                    || meta.delivered >= max_deliver =>
            {
                quarantine(
                    &config,
                    &poison_kv,
                    &shared,
                    &msg,
                    &meta,
                    e.message().to_string(),
                )
                .await;
            }
            Err(e) => {
                let delay = if handled {
                    config.policy.settings.nak_backoff.delay(meta.delivered)
                } else {
                    config.policy.settings.nak_backoff.initial
                };
                tracing::debug!(consumer = %shared.durable, seq = meta.stream_sequence, attempt = meta.delivered, reason = e.message(), ?delay, "nak");
                settle(&config, &msg, AckKind::Nak(Some(delay))).await;
                shared.metrics.nak.increment(1);
            }
        }
        if let Some((traceparent, started)) = span {
            cloudlysis_runtime::telemetry::record(
                cloudlysis_runtime::telemetry::Kind::Consumer,
                &traceparent,
                started,
                || {
                    (
                        format!("consume {}", shared.durable),
                        vec![
                            opentelemetry::KeyValue::new("messaging.system", "nats"),
                            opentelemetry::KeyValue::new(
                                "messaging.destination.name",
                                shared.stream.clone(),
                            ),
                            opentelemetry::KeyValue::new(
                                "messaging.consumer.group.name",
                                shared.durable.clone(),
                            ),
                            opentelemetry::KeyValue::new(
                                "messaging.message.id",
                                meta.stream_sequence.to_string(),
                            ),
                        ],
                    )
                },
            );
        }
        drop(in_flight);
    }));
}

/// Waits for `outcome`, sending an in-progress ack every third of the ack wait, so a message
/// that waits in a busy lane or whose handler runs longer than the ack wait is not redelivered
/// while it is still being worked on.
async fn with_progress<T>(
    msg: &jetstream::Message,
    ack_wait: Duration,
    shared: &Shared,
    outcome: impl std::future::Future<Output = T>,
) -> T {
    let period = (ack_wait / 3).max(Duration::from_millis(30));
    tokio::pin!(outcome);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut outcome => return out,
            _ = ticks.tick() => {
                if msg.ack_with(AckKind::Progress).await.is_ok() {
                    shared.metrics.progress.increment(1);
                }
            }
        }
    }
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
    let write = || async {
        let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        poison_kv
            .put(&key, bytes.into())
            .await
            .map_err(|e| e.to_string())
    };
    // On the server's last delivery a nak would lose the message (the server delivers it no
    // more): hold it — telling the server we are working on it — and try again until the poison
    // bucket answers. Before that, a nak is safe: the message comes back.
    let last = meta.delivered >= config.policy.settings.max_deliver;
    let mut failures = 0u32;
    let result = loop {
        let result = tokio::time::timeout(config.ack_timeout, write()).await;
        if matches!(result, Ok(Ok(_))) {
            break result;
        }
        failures += 1;
        shared.metrics.poison_write_failures.increment(1);
        if !last {
            break result;
        }
        if failures == 1 || failures.is_multiple_of(12) {
            tracing::error!(consumer = %shared.durable, seq = meta.stream_sequence, attempt = failures, "cannot write the poison record of the server's last delivery; holding the message and trying again");
        }
        let _ = msg.ack_with(AckKind::Progress).await;
        let pause = crate::task::retry_delay(failures)
            .min(config.policy.settings.ack_wait / 3)
            .max(Duration::from_millis(10));
        tokio::time::sleep(pause).await;
    };
    match result {
        Ok(Ok(_)) => {
            tracing::warn!(consumer = %shared.durable, seq = meta.stream_sequence, subject = %meta.subject, %reason, "message quarantined as poison");
            super::announce_poison(&config.js, &record).await;
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
pub(super) struct InFlight(Arc<Shared>);

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
