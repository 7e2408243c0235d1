//! Coalescing a view's deliveries (ADR 0006 (3)): a lane hands each delivery to its batch
//! writer and takes the next one at once; the writer takes everything that arrived while it
//! wrote the previous batch (at most [`MAX_BATCH`]), groups it by document, and writes each
//! document **once** — read (or cache hit), every due event folded in delivery order,
//! one revision-checked write — with up to [`MAX_CONCURRENT_WRITES`] documents written at a
//! time. Then it completes each delivery (the consumer acks it, or naks a failed one).
//!
//! What stays exact:
//! * **Order per document**: a document's deliveries come through one lane (the partition is
//!   the document key), and a lane's batches are written one after the other.
//! * **Redelivery guard**: each event's stream sequence is recorded in the document it was
//!   applied to, in the same write; a copy arriving in the same batch, or later, is skipped.
//! * **Failures**: an event whose `apply` fails is left out of its document's write and its
//!   delivery fails (nak, then poison), while the others are written. A read or write the store
//!   did not answer (an outage) is tried again while the batch waits
//!   ([`super::outage`]); one that can never succeed (the document does not decode or fit the
//!   view, or is over the max payload) fails every delivery of that document (nothing
//!   written).
//!   A delivery touching several documents succeeds only if all of them did; those written are
//!   skipped on redelivery.
//! * **Bounds**: the writer holds at most what the consumer may have unacknowledged
//!   (`max_ack_pending` = `max_in_flight`), in a channel of [`MAX_BATCH`].
//! * **Panics**: a panic in `apply` fails every delivery of the batch and stops the writer; the
//!   lane actor then fails at its next delivery and its supervisor restarts it (deliveries left
//!   in the channel are redelivered without counting as failures).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cloudlysis_runtime::envelope::{Commit, EventEnvelope};
use cloudlysis_runtime::mailbox::ActorProcessingErr;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::view::{View, ViewStore};
use crate::handler::{Delivery, HandlerError};
use crate::task::AbortOnDrop;

/// Most deliveries written as one batch (and waiting for the writer).
pub const MAX_BATCH: usize = 256;
/// Most documents of a batch written at once.
pub const MAX_CONCURRENT_WRITES: usize = 16;

/// A lane's batch writer: where its deliveries go.
pub struct Batcher {
    tx: mpsc::Sender<Delivery<Commit>>,
    stopped: Arc<AtomicBool>,
    _writer: AbortOnDrop,
}

impl Batcher {
    /// Starts the writer of `store`.
    pub fn start<V: View>(store: ViewStore<V>) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH);
        let stopped = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_batches(store, rx, stopped.clone()));
        Self {
            tx,
            stopped,
            _writer: AbortOnDrop(writer),
        }
    }

    /// Hands a delivery to the writer (waiting while it holds [`MAX_BATCH`]). Fails when the
    /// writer stopped (after a panic), so the lane is restarted.
    pub async fn push(&self, delivery: Delivery<Commit>) -> Result<(), ActorProcessingErr> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err("the view's batch writer stopped after a panic".into());
        }
        self.tx
            .send(delivery)
            .await
            .map_err(|_| "the view's batch writer stopped after a panic".into())
    }
}

async fn write_batches<V: View>(
    store: ViewStore<V>,
    mut rx: mpsc::Receiver<Delivery<Commit>>,
    stopped: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = std::panic::AssertUnwindSafe(apply_batch(&store, &batch))
            .catch_unwind()
            .await;
        match outcome {
            Ok(results) => {
                for (mut d, r) in batch.drain(..).zip(results) {
                    d.complete(r.map_err(HandlerError::new));
                }
            }
            Err(payload) => {
                let reason = format!(
                    "panicked: {}",
                    cloudlysis_runtime::mailbox::panic_message(&payload)
                );
                stopped.store(true, Ordering::SeqCst);
                for mut d in batch.drain(..) {
                    d.complete(Err(HandlerError::new(reason.clone())));
                }
                return;
            }
        }
    }
}

/// Applies a batch of deliveries: one outcome per delivery, in order.
async fn apply_batch<V: View>(
    store: &ViewStore<V>,
    batch: &[Delivery<Commit>],
) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Ok(()); batch.len()];
    let mut wrote = vec![false; batch.len()];
    // Document → its items, in delivery order: (delivery index, (stream sequence, events)).
    type Items<'a> = Vec<(usize, (u64, Vec<&'a EventEnvelope>))>;
    let mut docs: std::collections::BTreeMap<String, Items<'_>> = Default::default();
    for (i, d) in batch.iter().enumerate() {
        match store.group(&d.event) {
            Ok(by_key) => {
                for (key, events) in by_key {
                    docs.entry(key)
                        .or_default()
                        .push((i, (d.meta.stream_sequence, events)));
                }
            }
            Err(e) => results[i] = Err(e),
        }
    }
    type Written = (Vec<usize>, Result<Vec<Result<bool, String>>, String>);
    // Boxed: a spawned task's future must not hold a closure generic over these borrows.
    let writes: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Written> + Send + '_>>> =
        docs.into_iter()
            .map(|(key, items)| {
                let (indices, items): (Vec<usize>, Vec<(u64, Vec<&EventEnvelope>)>) =
                    items.into_iter().unzip();
                Box::pin(async move {
                    let outcome = store.apply_held(&key, &items).await;
                    (indices, outcome)
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = Written> + Send + '_>>
            })
            .collect();
    let written: Vec<Written> = futures::stream::iter(writes)
        .buffer_unordered(MAX_CONCURRENT_WRITES)
        .collect()
        .await;
    for (indices, outcome) in written {
        match outcome {
            Ok(per_item) => {
                for (i, o) in indices.into_iter().zip(per_item) {
                    match o {
                        Ok(w) => wrote[i] |= w,
                        Err(e) => {
                            if results[i].is_ok() {
                                results[i] = Err(e);
                            }
                        }
                    }
                }
            }
            Err(e) => {
                for i in indices {
                    if results[i].is_ok() {
                        results[i] = Err(e.clone());
                    }
                }
            }
        }
    }
    for _ in wrote.iter().filter(|w| **w) {
        store.count_commit();
    }
    results
}
