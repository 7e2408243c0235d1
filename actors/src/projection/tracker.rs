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
/// the stream's last sequence when the stream leader has no followed message above that floor
/// (filtered-out messages count as done).
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
            metrics::gauge!(
                cloudlysis_runtime::metrics::names::STREAM_LAST_SEQUENCE,
                "stream" => stream::AGGREGATE_EVENTS
            )
            .set(last as f64);
            let info = events.consumer_info(durable.as_str()).await.ok()?;
            let mut floor = info.ack_floor.stream_sequence;
            if info.num_pending == 0
                && info.num_ack_pending == 0
                && last > floor
                && settled_through(&js, &info.config, floor).await?
            {
                floor = last;
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

/// True when no message the consumer follows lies above `ack_floor` — asked of the stream's
/// leader after `last` was read, so every followed message up to `last` is acked and the
/// checkpoint may move to `last` (the messages in between are filtered out: done for this
/// view). The consumer's own "nothing pending" is not enough on a replicated stream: it is
/// computed on the consumer leader's replica, which may lag the stream leader that gave `last`.
async fn settled_through(
    js: &jetstream::Context,
    config: &jetstream::consumer::Config,
    ack_floor: u64,
) -> Option<bool> {
    let mut filters = config.filter_subjects.clone();
    if !config.filter_subject.is_empty() {
        filters.push(config.filter_subject.clone());
    }
    if filters.is_empty() {
        filters.push(">".into());
    }
    for filter in filters {
        if last_matching(js, &filter).await? > ack_floor {
            return Some(false);
        }
    }
    Some(true)
}

/// Stream sequence of the last message on `subject` (wildcards allowed) in `AGGREGATE_EVENTS`,
/// 0 when there is none — from the stream leader (the JetStream API, not a direct get, which a
/// lagging replica may answer).
async fn last_matching(js: &jetstream::Context, subject: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Reply {
        message: Option<Stored>,
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        seq: u64,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        err_code: u64,
    }
    let reply: Reply = js
        .request(
            format!("STREAM.MSG.GET.{}", stream::AGGREGATE_EVENTS),
            &serde_json::json!({ "last_by_subj": subject }),
        )
        .await
        .ok()?;
    match (reply.message, reply.error) {
        (Some(m), _) => Some(m.seq),
        // 10037: no message found.
        (None, Some(e)) if e.err_code == 10037 => Some(0),
        _ => None,
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
