//! Idempotency records written after the answer, in the background, bounded.
//!
//! A command with an `Idempotency-Key` stores its result under the key once its commit landed.
//! The answer does not wait for that write: until the record is stored a retry is still
//! recognised — by the live entity (it remembers the keys of its own commits) and, on any node,
//! by JetStream's duplicate window on the commit's `Nats-Msg-Id` (derived from the key; at least
//! two minutes, `runtime::stream`), whose duplicate is answered from the stream. The record
//! matters after that window, and a write takes at most the node's I/O timeout.
//!
//! At most [`MAX_PENDING_RECORDS`] writes per aggregate type run at once; an entity that would
//! start one more waits for a place (as it waited for every write before), so a slow store
//! pushes back instead of piling up tasks. A node that stops waits for the pending writes
//! ([`RecordWrites::flush`]) before it leaves.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `cloudlysis_idempotency_records_total` | `aggregate_type`, `outcome` (`stored`, `failed`) | record writes finished |
//! | `cloudlysis_idempotency_records_pending` | `aggregate_type` | record writes started and not finished |

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloudlysis_runtime::metrics::names;
use tokio::sync::Semaphore;

/// Most idempotency-record writes in flight per aggregate type.
pub(crate) const MAX_PENDING_RECORDS: usize = 1024;

/// The background writes of one aggregate type's idempotency records.
pub(crate) struct RecordWrites {
    places: Arc<Semaphore>,
    max: usize,
    pending: metrics::Gauge,
    stored: metrics::Counter,
    failed: metrics::Counter,
}

impl RecordWrites {
    /// At most `max` writes at once; the series of `aggregate_type` exist from here, at 0.
    pub(crate) fn new(aggregate_type: &'static str, max: usize) -> Self {
        let outcome = |outcome: &'static str| {
            let c = metrics::counter!(
                names::IDEMPOTENCY_RECORDS,
                "aggregate_type" => aggregate_type,
                "outcome" => outcome
            );
            c.increment(0);
            c
        };
        let pending = metrics::gauge!(
            names::IDEMPOTENCY_RECORDS_PENDING,
            "aggregate_type" => aggregate_type
        );
        pending.set(0.0);
        Self {
            places: Arc::new(Semaphore::new(max)),
            max,
            pending,
            stored: outcome("stored"),
            failed: outcome("failed"),
        }
    }

    /// Starts `write` in the background once a place is free (waiting for one when all `max`
    /// are taken) and returns without waiting for it. `write` bounds its own time and says
    /// why it failed; a failure is logged and counted, never returned.
    pub(crate) async fn start<F>(&self, key: String, write: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let Ok(place) = self.places.clone().acquire_owned().await else {
            // The semaphore is never closed; were it, the write still runs, unbounded once.
            tracing::warn!(key, "idempotency record written without a place");
            return;
        };
        self.pending.increment(1.0);
        let (pending, stored, failed) = (
            self.pending.clone(),
            self.stored.clone(),
            self.failed.clone(),
        );
        tokio::spawn(async move {
            match write.await {
                Ok(()) => stored.increment(1),
                Err(why) => {
                    tracing::warn!(key, "idempotency record not stored: {why}");
                    failed.increment(1);
                }
            }
            pending.decrement(1.0);
            drop(place);
        });
    }

    /// Waits until every write started so far has finished, at most `timeout`; false when
    /// some were still running at the end.
    pub(crate) async fn flush(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        matches!(
            tokio::time::timeout(timeout, self.places.acquire_many(all)).await,
            Ok(Ok(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn a_write_runs_after_start_returns_and_a_flush_waits_for_it() {
        let writes = RecordWrites::new("records_test_a", 4);
        let (release, released) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel::<()>();
        writes
            .start("k".into(), async move {
                let _ = released.await;
                let _ = done.send(());
                Ok(())
            })
            .await;
        // `start` came back while the write is still held open.
        assert!(
            !writes.flush(Duration::ZERO).await,
            "a flush with the write pending"
        );
        release.send(()).expect("the write is waiting");
        finished.await.expect("the write ran");
        assert!(writes.flush(Duration::from_secs(10)).await, "flushed");
    }

    #[tokio::test]
    async fn a_start_waits_for_a_place_when_every_place_is_taken() {
        let writes = RecordWrites::new("records_test_b", 1);
        let (release, released) = oneshot::channel::<()>();
        writes
            .start("first".into(), async move {
                let _ = released.await;
                Err("refused".into())
            })
            .await;
        let second = writes.start("second".into(), async { Ok(()) });
        tokio::pin!(second);
        // The only place is held: the second start cannot begin.
        assert!(
            futures::poll!(second.as_mut()).is_pending(),
            "a second write started beyond the bound"
        );
        release.send(()).expect("the first write is waiting");
        tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second write got the freed place");
        assert!(writes.flush(Duration::from_secs(10)).await, "flushed");
    }
}
