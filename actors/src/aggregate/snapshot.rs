//! Aggregate snapshots: an entity's state at a stream sequence, kept in the
//! `cloudlysis_snapshots` bucket, so that rehydration replays only the tail after it.
//!
//! An aggregate opts in with [`Aggregate::snapshots`](super::Aggregate::snapshots). After a
//! commit that crosses a multiple of `every` events, the entity writes its state in the
//! background (best effort: a failed write is counted and logged, the command is unaffected).
//! Rehydration reads the snapshot first; a snapshot that does not decode, was written for
//! another state schema version, or lies beyond the entity's last commit (a purged or restored
//! stream) is ignored — counted, logged, and the entity replays its whole history instead.
//! Any snapshot found is a valid state at its own stream sequence, so a late write of an older
//! snapshot only makes the next rehydration replay more.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use super::entity::IdempotencyRecord;
use super::{Aggregate, Snapshots};
use cloudlysis_runtime::metrics::names;

/// Format version of [`SnapshotRecord`].
pub(crate) const FORMAT: u32 = 1;

/// What the bucket holds per entity.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// The state encoding's version ([`Snapshots::schema_version`]).
    pub state_schema_version: u32,
    /// The aggregate version the state is at (events folded).
    pub version: u64,
    /// The stream sequence of the last commit folded in.
    pub stream_sequence: u64,
    /// The encoded state.
    pub state: serde_json::Value,
    /// Results of the entity's latest commits by `Nats-Msg-Id`, so replays whose idempotency
    /// record is missing are still recognised after a snapshot.
    #[serde(default)]
    pub keys: Vec<(String, IdempotencyRecord)>,
}

/// A snapshot ready to fold the tail onto.
pub(crate) struct Restored<S> {
    pub state: S,
    pub version: u64,
    pub stream_sequence: u64,
    pub keys: HashMap<String, IdempotencyRecord>,
}

/// Counts one snapshot outcome (`written`, `write_failed`, `loaded`, `ignored`).
pub(crate) fn count<A: Aggregate>(outcome: &'static str) {
    metrics::counter!(names::SNAPSHOTS, "aggregate_type" => A::TYPE, "outcome" => outcome)
        .increment(1);
}

/// Registers the counters at 0 for an aggregate type that takes snapshots.
pub(crate) fn register<A: Aggregate>() {
    if A::snapshots().is_some() {
        for outcome in ["written", "write_failed", "loaded", "ignored"] {
            metrics::counter!(names::SNAPSHOTS, "aggregate_type" => A::TYPE, "outcome" => outcome)
                .absolute(0);
        }
    }
}

/// True when a commit moving the version from `before` to `after` crosses a multiple of
/// `every`.
pub(crate) fn due(every: u64, before: u64, after: u64) -> bool {
    every > 0 && after / every > before / every
}

/// Reads the entity's snapshot: `None` when there is none or it must be ignored (counted and
/// logged, with why).
pub(crate) async fn read<A: Aggregate>(
    bucket: &kv::Store,
    key: &str,
    policy: &Snapshots<A::State>,
    last_seq: u64,
    timeout: Duration,
) -> Option<Restored<A::State>> {
    let ignore = |why: String| {
        tracing::warn!(
            aggregate_type = A::TYPE,
            key,
            "snapshot ignored, replaying the whole history: {why}"
        );
        count::<A>("ignored");
        None
    };
    let bytes = match tokio::time::timeout(timeout, bucket.get(key)).await {
        Ok(Ok(Some(bytes))) => bytes,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => return ignore(format!("read failed: {e}")),
        Err(_) => return ignore(format!("read timed out after {timeout:?}")),
    };
    let record: SnapshotRecord = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return ignore(format!("does not decode: {e}")),
    };
    if record.format != FORMAT {
        return ignore(format!("format {} is not {FORMAT}", record.format));
    }
    if record.state_schema_version != policy.schema_version {
        return ignore(format!(
            "written for state schema version {}, this code has {}",
            record.state_schema_version, policy.schema_version
        ));
    }
    if record.stream_sequence > last_seq {
        return ignore(format!(
            "at stream sequence {}, beyond the entity's last commit {last_seq}",
            record.stream_sequence
        ));
    }
    let state = match (policy.decode)(record.state) {
        Ok(s) => s,
        Err(e) => return ignore(format!("state does not decode: {e}")),
    };
    count::<A>("loaded");
    Some(Restored {
        state,
        version: record.version,
        stream_sequence: record.stream_sequence,
        keys: record.keys.into_iter().collect(),
    })
}

/// Writes a snapshot in the background, bounded by `timeout`.
pub(crate) fn write<A: Aggregate>(
    bucket: kv::Store,
    key: String,
    record: SnapshotRecord,
    timeout: Duration,
) {
    let bytes = match serde_json::to_vec(&record) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(aggregate_type = A::TYPE, key, "snapshot not written: {e}");
            count::<A>("write_failed");
            return;
        }
    };
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, bucket.put(&key, bytes.into())).await {
            Ok(Ok(_)) => count::<A>("written"),
            Ok(Err(e)) => {
                tracing::warn!(aggregate_type = A::TYPE, key, "snapshot not written: {e}");
                count::<A>("write_failed");
            }
            Err(_) => {
                tracing::warn!(
                    aggregate_type = A::TYPE,
                    key,
                    "snapshot not written within {timeout:?}"
                );
                count::<A>("write_failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_snapshot_is_due_when_a_commit_crosses_a_multiple() {
        assert!(!due(100, 0, 99));
        assert!(due(100, 99, 100));
        assert!(due(100, 50, 250));
        assert!(!due(100, 100, 199));
        assert!(!due(0, 0, 1000));
    }
}
