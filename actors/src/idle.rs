//! Passivation of actors spawned on demand (aggregate entities, workflow instances): one sweeper
//! task per host asks every live actor, each `period`, to check whether it has been idle long
//! enough to stop. A timer task per actor made up a large part of what an idle actor cost
//! (docs/performance.md, `bench entities`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use cloudlysis_runtime::mailbox::BoundedRef;
use dashmap::DashMap;
use tokio::sync::OnceCell;

/// A host's registry of live actors by key; a slot is empty while its actor starts.
pub(crate) type Registry<M> = DashMap<String, Arc<OnceCell<BoundedRef<M>>>>;

/// Spawns the sweeper of `host`: every `period` (at least 10 ms) it sends `check()` to each
/// actor in `registry(host)`, skipping those whose mailbox is full (they are not idle). Ends
/// once the host is dropped; holds it only while sending.
pub(crate) fn spawn_sweeper<H, M>(
    host: &Arc<H>,
    period: Duration,
    registry: fn(&H) -> &Registry<M>,
    check: fn() -> M,
) where
    H: Send + Sync + 'static,
    M: Send + 'static,
{
    let weak: Weak<H> = Arc::downgrade(host);
    let period = period.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(host) = weak.upgrade() else {
                return;
            };
            // Collected first so no registry shard stays locked while messages are sent.
            let live: Vec<BoundedRef<M>> = registry(&host)
                .iter()
                .filter_map(|slot| slot.value().get().cloned())
                .collect();
            drop(host);
            for mailbox in live {
                let _ = mailbox.try_send(check());
            }
        }
    });
}
