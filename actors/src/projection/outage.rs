//! What a view does while its document store does not answer.
//!
//! A read or write of a document that failed for a reason that passes — it timed out, the
//! bucket's stream has no leader (an election) or is missing, the connection is down, the
//! store is full, too many writers raced for the document — is not the events' fault. The
//! consumer path ([`ViewStore::apply_held`], the batch writer) keeps the deliveries (the
//! consumer keeps them ours with in-progress acks) and tries the document again after
//! [`retry_delay`](crate::task::retry_delay) (100 ms doubling to 5 s) for as long as the store
//! does not answer: no event is quarantined because of an outage, and a document's events stay
//! in delivery order, since the lane writes nothing else meanwhile. Only a failure retrying
//! cannot cure — a document that does not decode or fit the view, or is over the server's max
//! payload — fails the deliveries (nak, then poison). Each retry is counted in
//! `cloudlysis_view_store_retries_total{view}`, and how long the oldest held document has waited
//! is `cloudlysis_view_store_oldest_held_seconds{view}`.

use super::view::{View, ViewStore};

pub use crate::store::StoreError;

/// One document's items with their outcomes (see [`ViewStore::apply_many`]).
pub(crate) type Outcomes = Vec<Result<bool, String>>;

impl<V: View> ViewStore<V> {
    /// [`apply_many`](Self::apply_many) for the consumer path: while the store is
    /// [`Unavailable`](StoreError::Unavailable), waits and tries again (see the module docs);
    /// `Err` only for a [`Broken`](StoreError::Broken) document.
    pub(crate) async fn apply_held(
        &self,
        kv_key: &str,
        items: &[(u64, Vec<&cloudlysis_runtime::envelope::EventEnvelope>)],
    ) -> Result<Outcomes, String> {
        let mut attempt = 0u32;
        // Set while the document is held (`cloudlysis_view_store_oldest_held_seconds`).
        let mut held = None;
        loop {
            match self.apply_many(kv_key, items, false).await {
                Ok(outcomes) => {
                    if attempt > 0 {
                        tracing::info!(
                            view = V::NAME,
                            key = kv_key,
                            attempts = attempt + 1,
                            "view store answers again; document written"
                        );
                    }
                    return Ok(outcomes);
                }
                Err(StoreError::Broken(e)) => return Err(e),
                Err(StoreError::Unavailable(e)) => {
                    attempt += 1;
                    metrics::counter!(
                        cloudlysis_runtime::metrics::names::VIEW_STORE_RETRIES,
                        "view" => V::NAME
                    )
                    .increment(1);
                    crate::holding::Held::tried(
                        &mut held,
                        (
                            cloudlysis_runtime::metrics::names::VIEW_STORE_OLDEST_HELD,
                            "view",
                            V::NAME,
                        ),
                    );
                    // The first failure, then about once a minute at the 5 s cap.
                    if attempt == 1 || attempt.is_multiple_of(12) {
                        tracing::warn!(view = V::NAME, key = kv_key, attempt, error = %e, "view store does not answer; holding the events and trying again");
                    }
                    tokio::time::sleep(crate::task::retry_delay(attempt)).await;
                }
            }
        }
    }
}
