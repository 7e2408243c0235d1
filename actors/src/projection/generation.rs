//! View generations: how a view is rebuilt while it keeps answering queries.
//!
//! Every view has a generation record in the checkpoints bucket
//! ([`cloudlysis_runtime::kv::view_generation_key`]), shared by all projection nodes:
//! `{"active": a, "building": b}`. Generation `g` has its own durable consumer
//! ([`DurableName::projection_view_generation`]) and its own key space
//! ([`cloudlysis_runtime::kv::view_space`]).
//!
//! A rebuild ([`request_rebuild`]) sets `building = active + 1` with a revision check, so two
//! concurrent requests cannot both start one. Every node running the view then starts the new
//! generation's consumer, which reads the stream from the start into the empty key space, while
//! generation `a` goes on consuming and **answering queries** (with its own checkpoint). When the
//! new consumer has nothing pending and nothing unacked, a node switches the record to
//! `{"active": b}` (again revision-checked: exactly one switch); each node then answers queries
//! from `b` (once `b`'s checkpoint has reached `a`'s, so a query's checkpoint never goes
//! backwards), stops its consumer of `a`, deletes `a`'s durable consumer and purges `a`'s
//! documents.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use cloudlysis_runtime::consumer::DurableName;
use cloudlysis_runtime::kv as buckets;
use cloudlysis_runtime::subject::SubjectToken;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Deadline of each KV operation on the generation record.
pub const KV_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a revision-checked update of the record is retried against concurrent writers.
const MAX_CAS_ATTEMPTS: usize = 10;

/// A view's generation record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generations {
    /// The generation answering queries.
    pub active: u32,
    /// The generation a rebuild is building, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<u32>,
    /// Highest generation ever handed out (a cancelled one included), so a number is never
    /// reused while a cancelled generation may still be being retired.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latest: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A rebuild could not be requested or the record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The view name is not a subject token.
    #[error("view `{view}`: {reason}")]
    InvalidView {
        /// The name given.
        view: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A rebuild of this view is already in progress.
    #[error(
        "view `{view}` is already being rebuilt into generation {building} \
         (generation {active} answers queries meanwhile)"
    )]
    InProgress {
        /// The view.
        view: String,
        /// Generation answering queries.
        active: u32,
        /// Generation being built.
        building: u32,
    },
    /// There is no rebuild of this view to cancel.
    #[error("view `{view}` has no rebuild in progress (generation {active} answers queries)")]
    NotRebuilding {
        /// The view.
        view: String,
        /// Generation answering queries.
        active: u32,
    },
    /// The views run in Single mode, which cannot rebuild one view.
    #[error(
        "view `{0}` runs in Single mode (consumer cloudlysis-projection-all exists); \
         rebuilding a view needs PerView mode"
    )]
    SingleMode(String),
    /// The record kept changing under us.
    #[error("view `{0}`: the generation record changed concurrently too often; try again")]
    Contended(String),
    /// NATS failed or timed out.
    #[error("view `{view}`: {reason}")]
    Nats {
        /// The view.
        view: String,
        /// What failed.
        reason: String,
    },
}

fn nats_err(view: &str, reason: impl std::fmt::Display) -> RebuildError {
    RebuildError::Nats {
        view: view.to_string(),
        reason: reason.to_string(),
    }
}

/// Opens (creating when missing) the bucket holding generation records.
pub async fn bucket(js: &jetstream::Context) -> Result<kv::Store, buckets::BucketError> {
    buckets::ensure_bucket(js, &buckets::checkpoints()).await
}

/// Reads a view's record and its revision (`None`: never written, i.e. generation 0).
pub async fn read(kv: &kv::Store, view: &str) -> Result<(Generations, Option<u64>), RebuildError> {
    let key = buckets::view_generation_key(view);
    let entry = tokio::time::timeout(KV_TIMEOUT, kv.entry(&key))
        .await
        .map_err(|_| nats_err(view, format!("reading {key} timed out")))?
        .map_err(|e| nats_err(view, format!("reading {key}: {e}")))?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            let g = serde_json::from_slice(&e.value).map_err(|err| {
                nats_err(
                    view,
                    format!("generation record {key} does not decode: {err}"),
                )
            })?;
            Ok((g, Some(e.revision)))
        }
        Some(e) => Ok((Generations::default(), Some(e.revision))),
        None => Ok((Generations::default(), None)),
    }
}

/// Writes `next` if the record is still at `revision`; `Ok(false)` when someone else wrote first.
pub async fn compare_and_set(
    kv: &kv::Store,
    view: &str,
    revision: Option<u64>,
    next: Generations,
) -> Result<bool, RebuildError> {
    let key = buckets::view_generation_key(view);
    let bytes = Bytes::from(serde_json::to_vec(&next).map_err(|e| nats_err(view, e))?);
    let write = async {
        match revision {
            Some(rev) => kv
                .update(&key, bytes, rev)
                .await
                .map(|_| true)
                .or_else(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                    _ => Err(e.to_string()),
                }),
            None => kv
                .create(&key, bytes)
                .await
                .map(|_| true)
                .or_else(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => Ok(false),
                    _ => Err(e.to_string()),
                }),
        }
    };
    tokio::time::timeout(KV_TIMEOUT, write)
        .await
        .map_err(|_| nats_err(view, format!("writing {key} timed out")))?
        .map_err(|e| nats_err(view, format!("writing {key}: {e}")))
}

/// Starts a rebuild of `view`: records `building` = a generation number never used before
/// (`max(active, latest) + 1`). Returns the record as written.
/// Projection nodes running the view pick it up; if none runs, the rebuild starts when one does.
pub async fn request_rebuild(
    js: &jetstream::Context,
    view: &str,
) -> Result<Generations, RebuildError> {
    SubjectToken::new(view).map_err(|e| RebuildError::InvalidView {
        view: view.to_string(),
        reason: e.to_string(),
    })?;
    if single_mode_consumer_exists(js)
        .await
        .map_err(|e| nats_err(view, e))?
    {
        return Err(RebuildError::SingleMode(view.to_string()));
    }
    let kv = bucket(js).await.map_err(|e| nats_err(view, e))?;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (current, revision) = read(&kv, view).await?;
        if let Some(building) = current.building {
            return Err(RebuildError::InProgress {
                view: view.to_string(),
                active: current.active,
                building,
            });
        }
        let generation = current.active.max(current.latest) + 1;
        let next = Generations {
            active: current.active,
            building: Some(generation),
            latest: generation,
        };
        if compare_and_set(&kv, view, revision, next).await? {
            tracing::info!(view, generation, "view rebuild requested");
            return Ok(next);
        }
    }
    Err(RebuildError::Contended(view.to_string()))
}

/// Abandons the rebuild of `view` in progress: clears `building` (revision-checked), so nodes
/// stop the half-built generation and retire it. Returns the record as written and the
/// generation abandoned.
pub async fn cancel_rebuild(
    js: &jetstream::Context,
    view: &str,
) -> Result<(Generations, u32), RebuildError> {
    SubjectToken::new(view).map_err(|e| RebuildError::InvalidView {
        view: view.to_string(),
        reason: e.to_string(),
    })?;
    let kv = bucket(js).await.map_err(|e| nats_err(view, e))?;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (current, revision) = read(&kv, view).await?;
        let Some(building) = current.building else {
            return Err(RebuildError::NotRebuilding {
                view: view.to_string(),
                active: current.active,
            });
        };
        let next = Generations {
            building: None,
            ..current
        };
        if compare_and_set(&kv, view, revision, next).await? {
            tracing::info!(view, generation = building, "view rebuild cancelled");
            return Ok((next, building));
        }
    }
    Err(RebuildError::Contended(view.to_string()))
}

/// True when the Single-mode consumer exists on `AGGREGATE_EVENTS` (false when the stream does
/// not exist yet).
pub async fn single_mode_consumer_exists(js: &jetstream::Context) -> Result<bool, String> {
    use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
    let name = DurableName::projection_single();
    let events = match tokio::time::timeout(
        KV_TIMEOUT,
        js.get_stream(cloudlysis_runtime::stream::AGGREGATE_EVENTS),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e))
            if matches!(e.kind(), GetStreamErrorKind::JetStream(ref js)
                if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(false);
        }
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("reading the event stream timed out".into()),
    };
    match tokio::time::timeout(KV_TIMEOUT, events.consumer_info(name.as_str())).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(false),
        Ok(Err(e)) => Err(format!("consumer {name}: {e}")),
        Err(_) => Err(format!("consumer {name}: timed out")),
    }
}

/// The durable consumer of generation `generation` of `view`.
pub fn durable(view: &str, generation: u32) -> Option<DurableName> {
    SubjectToken::new(view)
        .ok()
        .map(|t| DurableName::projection_view_generation(&t, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_plain_json() {
        let g = Generations {
            active: 1,
            building: Some(2),
            latest: 2,
        };
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"active":1,"building":2,"latest":2}"#
        );
        let idle: Generations = serde_json::from_str(r#"{"active":3}"#).unwrap();
        assert_eq!(
            idle,
            Generations {
                active: 3,
                building: None,
                latest: 0,
            }
        );
        assert_eq!(serde_json::to_string(&idle).unwrap(), r#"{"active":3}"#);
    }
}
