//! Checkpoint trackers: keep a view generation's checkpoint at its durable consumer's
//! contiguous ack floor (ADR 0006), refresh early for waiting queries, and record the value in
//! KV for operators.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use cloudlysis_runtime::consumer::DurableName;
use cloudlysis_runtime::{kv as buckets, stream};

use super::node::*;
use super::view::Checkpoint;

/// How often a view's checkpoint is refreshed from its durable consumer.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest gap between two checkpoint refreshes asked for by waiting queries (bounds the
/// consumer-info requests a view's tracker makes to 1 / `MIN_REFRESH`).
pub const MIN_REFRESH: Duration = Duration::from_millis(5);
/// Least time between two records of a view's checkpoint in KV.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// Called with a checkpoint's value after each refresh (sets the gauge).
pub(crate) type OnRaise = Arc<dyn Fn(u64) + Send + Sync>;

/// Keeps a view generation's checkpoint at its durable consumer's contiguous ack floor — or at
/// the stream's last sequence when nothing is pending (filtered-out messages count as done).
pub(crate) async fn track_checkpoint(
    js: jetstream::Context,
    durable: DurableName,
    checkpoint: Checkpoint,
    on_raise: OnRaise,
    persist: Persist,
) {
    let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read = tokio::time::Instant::now();
    let mut persisted: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = checkpoint.refresh_requested() => {
                // Queries are waiting: refresh now, but at most once per MIN_REFRESH.
                tokio::time::sleep_until(last_read + MIN_REFRESH).await;
            }
        }
        last_read = tokio::time::Instant::now();
        let read = async {
            // Stream first: a message published after this read is not claimed below.
            let events = js.get_stream(stream::AGGREGATE_EVENTS).await.ok()?;
            let last = events.cached_info().state.last_sequence;
            let info = events.consumer_info(durable.as_str()).await.ok()?;
            let mut floor = info.ack_floor.stream_sequence;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                floor = floor.max(last);
            }
            Some(floor)
        };
        if let Ok(Some(floor)) = tokio::time::timeout(NATS_TIMEOUT, read).await {
            checkpoint.raise(floor);
            let now = checkpoint.get();
            on_raise(now);
            let due = persisted
                .is_none_or(|(value, at)| value != now && at.elapsed() >= PERSIST_INTERVAL);
            if due {
                persist(now).await;
                persisted = Some((now, tokio::time::Instant::now()));
            }
        }
    }
}

/// Writes a checkpoint value to KV for operators (best effort, bounded).
pub(crate) type Persist =
    Arc<dyn Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Records `<space>.checkpoint` in the checkpoints bucket for each of `spaces`.
pub(crate) fn persist_to(kv: kv::Store, spaces: Vec<(String, u32)>) -> Persist {
    Arc::new(move |sequence| {
        let (kv, spaces) = (kv.clone(), spaces.clone());
        Box::pin(async move {
            let at = cloudlysis_runtime::time::rfc3339(std::time::SystemTime::now());
            for (space, generation) in spaces {
                let record = serde_json::json!({
                    "sequence": sequence,
                    "generation": generation,
                    "updated_at": at,
                });
                let key = buckets::view_checkpoint_key(&space);
                let value = bytes::Bytes::from(record.to_string());
                if let Ok(Err(e)) = tokio::time::timeout(NATS_TIMEOUT, kv.put(&key, value)).await {
                    tracing::debug!(key, error = %e, "recording a view checkpoint");
                }
            }
        })
    })
}
