//! Bounded reads of the latest values under a key prefix of a KV bucket: an ephemeral pull
//! consumer on the bucket's stream, filtered to the prefix, last value per key, reading exactly
//! as many messages as it had pending when created, deleted afterwards. Its cost grows with the
//! keys under the prefix, never with the rest of the bucket.
//!
//! - [`latest_under`] — every value (workflow instance lists; bounded by a key count).
//! - [`page_under`] — one page of keys in key order (view `List`s): it reads headers only and
//!   keeps the `limit + 1` smallest keys after the cursor, so its memory is bounded by the page
//!   size however many keys there are; the caller reads the page's values.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use bytes::Bytes;
use futures::StreamExt;

/// Why a scan did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// More keys under the prefix than the caller allows.
    #[error("{found} keys under the prefix; at most {max} are read")]
    TooMany {
        /// Keys found.
        found: u64,
        /// The bound.
        max: u64,
    },
    /// NATS failed or stopped delivering.
    #[error("{0}")]
    Nats(String),
}

/// The latest value of every key of `bucket` under `prefix` (a key prefix ending in `.`), as
/// `(key without the prefix, value)`; deleted keys are left out. Refuses more than `max` keys.
pub async fn latest_under(
    js: &jetstream::Context,
    bucket: &str,
    prefix: &str,
    max: u64,
) -> Result<Vec<(String, Bytes)>, ScanError> {
    use jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let nats = |e: &dyn std::fmt::Display| ScanError::Nats(e.to_string());
    let stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| nats(&e))?;
    let subject_prefix = format!("$KV.{bucket}.{prefix}");
    let consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("{subject_prefix}>"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let name = consumer.cached_info().name.clone();
    let mut pending = consumer.cached_info().num_pending;
    let result = async {
        if pending > max {
            return Err(ScanError::TooMany {
                found: pending,
                max,
            });
        }
        let mut out = Vec::with_capacity(pending as usize);
        while pending > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(pending.min(1000) as usize)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| nats(&e))?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| nats(&e))?;
                got += 1;
                pending -= 1;
                let removed = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                if let Some(key) = m.subject.strip_prefix(subject_prefix.as_str())
                    && !removed
                {
                    out.push((key.to_string(), m.payload.clone()));
                }
                if pending == 0 {
                    break;
                }
            }
            if got == 0 {
                return Err(ScanError::Nats(format!(
                    "the bucket {bucket} stopped delivering"
                )));
            }
        }
        Ok(out)
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.delete_consumer(&name)).await;
    result
}

/// One page of keys in key order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// Keys (without the scanned prefix), in the page's order.
    pub keys: Vec<String>,
    /// True when more keys follow the last one.
    pub more: bool,
}

/// Which way a page runs from its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction<'a> {
    /// Ascending keys after this one (empty: from the first).
    After(&'a str),
    /// Descending keys before this one (empty: from the last) — newest first for time-keyed
    /// buckets.
    Before(&'a str),
}

/// The first `limit` keys of `bucket` under `prefix` (ending in `.`, or empty for the whole
/// bucket) that `keep` accepts, running from the cursor in `direction`; deleted keys are left
/// out. Reads headers only and holds at most `limit + 1` keys at any time.
pub async fn page_under(
    js: &jetstream::Context,
    bucket: &str,
    prefix: &str,
    direction: Direction<'_>,
    limit: usize,
    keep: impl Fn(&str) -> bool,
) -> Result<KeyPage, ScanError> {
    use jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let nats = |e: &dyn std::fmt::Display| ScanError::Nats(e.to_string());
    let stream = js
        .get_stream(format!("KV_{bucket}"))
        .await
        .map_err(|e| nats(&e))?;
    let subject_prefix = format!("$KV.{bucket}.{prefix}");
    let consumer: PullConsumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("{subject_prefix}>"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            headers_only: true,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let name = consumer.cached_info().name.clone();
    let mut pending = consumer.cached_info().num_pending;
    let result = async {
        // The page's best `limit + 1` keys so far (one more tells whether more follow): a
        // max-heap of the smallest when ascending, a min-heap of the largest when descending;
        // the worst is dropped as better ones arrive.
        let mut ascending: BinaryHeap<String> = BinaryHeap::with_capacity(limit + 2);
        let mut descending: BinaryHeap<Reverse<String>> = BinaryHeap::with_capacity(limit + 2);
        while pending > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(pending.min(1000) as usize)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| nats(&e))?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| nats(&e))?;
                got += 1;
                pending -= 1;
                let removed = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                if let Some(key) = m.subject.strip_prefix(subject_prefix.as_str())
                    && !removed
                    && keep(key)
                {
                    match direction {
                        Direction::After(after)
                            if key > after
                                && (ascending.len() <= limit
                                    || ascending.peek().is_some_and(|top| key < top.as_str())) =>
                        {
                            ascending.push(key.to_string());
                            if ascending.len() > limit + 1 {
                                ascending.pop();
                            }
                        }
                        Direction::Before(before)
                            if (before.is_empty() || key < before)
                                && (descending.len() <= limit
                                    || descending
                                        .peek()
                                        .is_some_and(|top| key > top.0.as_str())) =>
                        {
                            descending.push(Reverse(key.to_string()));
                            if descending.len() > limit + 1 {
                                descending.pop();
                            }
                        }
                        _ => {}
                    }
                }
                if pending == 0 {
                    break;
                }
            }
            if got == 0 {
                return Err(ScanError::Nats(format!(
                    "the bucket {bucket} stopped delivering"
                )));
            }
        }
        let mut keys = match direction {
            Direction::After(_) => ascending.into_sorted_vec(),
            Direction::Before(_) => descending
                .into_sorted_vec()
                .into_iter()
                .map(|Reverse(k)| k)
                .collect(),
        };
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok(KeyPage { keys, more })
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.delete_consumer(&name)).await;
    result
}
