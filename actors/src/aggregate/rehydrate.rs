//! Rehydration: an entity's state read back from its commits when it starts (or after a
//! conflict), by the cheapest path the history allows:
//!
//! | path | when | cost |
//! |---|---|---|
//! | `empty` | the subject holds no commit | one last-message lookup |
//! | `snapshot` | the latest snapshot covers the last commit | the lookup and one KV read |
//! | `last_commit` | the last commit holds every event after the start (snapshot or nothing) | the lookup (and the KV read) |
//! | `direct` | at most [`DIRECT_READ_MAX_EVENTS`] events between the start and the last commit | one `STREAM.MSG.GET` per commit before the last |
//! | `consumer` | longer tails | an ad-hoc ordered pull consumer, created and deleted |
//!
//! Every read goes to the stream's leader (`STREAM.MSG.GET`, consumers), never to a direct-get
//! replica that could lag behind the last commit. `cloudlysis_rehydrations_total{path}` counts
//! each path.

use std::time::Duration;

use super::entity::*;
use super::*;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use cloudlysis_runtime::context::{headers, nats_name};
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_runtime::metrics::names;
use futures::StreamExt;

/// Most events between the start and the last commit that are read commit by commit rather
/// than through a consumer. Measured (`bench rehydration --per-commit 1`, docs/performance.md):
/// one read ≈ 0.4 ms, an ad-hoc consumer ≈ 1.5–2 ms whatever the tail's length.
pub(crate) const DIRECT_READ_MAX_EVENTS: u64 = 2;

/// The rehydration paths, in the order of the table above.
pub(crate) const PATHS: [&str; 5] = ["empty", "snapshot", "last_commit", "direct", "consumer"];

/// Registers `cloudlysis_rehydrations_total` at 0 for every path of aggregate type `A`.
pub(crate) fn register<A: Aggregate>() {
    for path in PATHS {
        metrics::counter!(names::REHYDRATIONS, "aggregate_type" => A::TYPE, "path" => path)
            .absolute(0);
    }
}

fn count<A: Aggregate>(path: &'static str) {
    metrics::counter!(names::REHYDRATIONS, "aggregate_type" => A::TYPE, "path" => path)
        .increment(1);
}

/// State being folded from commits.
struct Folding<S> {
    state: S,
    version: u64,
    /// Stream sequence of the last commit folded.
    seen: u64,
    /// Idempotency keys of the commits folded, oldest first.
    keys: Vec<(String, IdempotencyRecord)>,
}

impl<A: Aggregate> Entity<A> {
    /// Rebuilds state from the entity's commits.
    pub(super) async fn load(&self) -> Result<Loaded<A::State>, CommandError> {
        let subject = self.subject();
        let unavailable =
            |e: String| CommandError::Unavailable(format!("rehydration of {subject}: {e}"));
        let last_msg = match tokio::time::timeout(
            self.shared.settings.io_timeout,
            self.shared.events.get_last_raw_message_by_subject(&subject),
        )
        .await
        {
            Err(_) => return Err(unavailable("timed out".into())),
            Ok(Ok(m)) => m,
            Ok(Err(e)) => match e.kind() {
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                    count::<A>("empty");
                    return Ok(Loaded::empty());
                }
                _ => return Err(unavailable(e.to_string())),
            },
        };
        let last = last_msg.sequence;
        // Start from the latest usable snapshot, if this type takes them.
        let start = match (&self.shared.snapshots, A::snapshots()) {
            (Some(bucket), Some(policy)) => {
                let key = self.snapshot_key();
                super::snapshot::read::<A>(
                    bucket,
                    &key,
                    &policy,
                    last,
                    self.shared.settings.io_timeout,
                )
                .await
            }
            _ => None,
        };
        let start = match start {
            Some(s) if s.stream_sequence >= last => {
                count::<A>("snapshot");
                return Ok(Loaded {
                    state: s.state,
                    version: s.version,
                    last_seq: s.stream_sequence,
                    commits_by_msg_id: s.keys,
                });
            }
            Some(s) => s,
            None => super::snapshot::Restored {
                state: A::State::default(),
                version: 0,
                stream_sequence: 0,
                keys: Default::default(),
            },
        };
        let mut acc = Folding {
            state: start.state,
            version: start.version,
            seen: start.stream_sequence,
            keys: Vec::new(),
        };
        let last_commit = decode_commit(last, &last_msg.payload).map_err(unavailable)?;
        // Versions are contiguous per entity: the events before the last commit's first one
        // that the start does not hold are what is left to read.
        let before_last = last_commit
            .events
            .first()
            .and_then(|e| e.sequence.checked_sub(1))
            .filter(|&v| v >= acc.version);
        let path = match before_last {
            Some(v) if v - acc.version <= DIRECT_READ_MAX_EVENTS => {
                let path = if v == acc.version {
                    "last_commit"
                } else {
                    // No more commits than events: at most `v - version` reads.
                    self.read_direct(&mut acc, &subject, v, last)
                        .await
                        .map_err(unavailable)?;
                    "direct"
                };
                self.fold_commit(&mut acc, last, last_commit, Some(&last_msg.headers))
                    .map_err(unavailable)?;
                path
            }
            _ => {
                self.read_with_consumer(&mut acc, &subject, last)
                    .await
                    .map_err(unavailable)?;
                "consumer"
            }
        };
        count::<A>(path);
        let mut loaded = Loaded {
            state: acc.state,
            version: acc.version,
            last_seq: acc.seen,
            commits_by_msg_id: start.keys,
        };
        for (k, r) in acc.keys.into_iter().rev().take(MAX_REMEMBERED_KEYS) {
            loaded.commits_by_msg_id.entry(k).or_insert(r);
        }
        Ok(loaded)
    }

    /// Reads the commits after `acc.seen` one at a time (`STREAM.MSG.GET`, next message on the
    /// entity's subject, from the stream's leader) until the state reaches `version`, all before
    /// stream sequence `last`, in at most `version - acc.version` round trips.
    async fn read_direct(
        &self,
        acc: &mut Folding<A::State>,
        subject: &str,
        version: u64,
        last: u64,
    ) -> Result<(), String> {
        let timeout = self.shared.settings.io_timeout;
        for _ in acc.version..version {
            if acc.version >= version {
                return Ok(());
            }
            let get = self
                .shared
                .events
                .raw_message_builder()
                .sequence(acc.seen + 1)
                .next_by_subject(subject.to_string())
                .send();
            let m = tokio::time::timeout(timeout, get)
                .await
                .map_err(|_| format!("reading after sequence {} timed out", acc.seen))?
                .map_err(|e| format!("reading after sequence {}: {e}", acc.seen))?;
            if m.sequence >= last {
                break;
            }
            let commit = decode_commit(m.sequence, &m.payload)?;
            self.fold_commit(acc, m.sequence, commit, Some(&m.headers))?;
        }
        if acc.version == version {
            Ok(())
        } else {
            Err(format!(
                "the commits before sequence {last} end at version {}, not {version}",
                acc.version
            ))
        }
    }

    /// Reads the commits after `acc.seen` up to (at least) stream sequence `last` through an
    /// ad-hoc consumer of exactly this entity's subject: unique, in memory, self-expiring, and
    /// deleted by name when done.
    async fn read_with_consumer(
        &self,
        acc: &mut Folding<A::State>,
        subject: &str,
        last: u64,
    ) -> Result<(), String> {
        let deliver_policy = match acc.seen {
            0 => jetstream::consumer::DeliverPolicy::All,
            seq => jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
        };
        let name = format!("cloudlysis-rehydrate-{}", uuid::Uuid::new_v4().simple());
        let consumer = self
            .shared
            .events
            .create_consumer(pull::Config {
                name: Some(name.clone()),
                filter_subject: subject.to_string(),
                ack_policy: jetstream::consumer::AckPolicy::None,
                deliver_policy,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let result = self.fold_consumer(acc, &consumer, last).await;
        if let Err(e) = self.shared.events.delete_consumer(&name).await {
            tracing::debug!(consumer = %name, error = %e, "rehydration consumer not deleted; it expires by itself");
        }
        result
    }

    async fn fold_consumer(
        &self,
        acc: &mut Folding<A::State>,
        consumer: &jetstream::consumer::PullConsumer,
        last: u64,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.shared.settings.io_timeout * 6;
        while acc.seen < last {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("timed out at sequence {} of {last}", acc.seen));
            }
            let mut batch = consumer
                .batch()
                .max_messages(256)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| e.to_string())?;
                let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
                let commit = decode_commit(seq, &m.payload)?;
                self.fold_commit(acc, seq, commit, m.headers.as_ref())?;
                // Everything up to the entity's last commit is in: stop here rather than wait
                // for the batch to expire (it asked for more than the subject holds).
                if acc.seen >= last {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Applies one commit (stream sequence `seq`) and notes its idempotency key, if any.
    fn fold_commit(
        &self,
        acc: &mut Folding<A::State>,
        seq: u64,
        commit: Commit,
        headers: Option<&HeaderMap>,
    ) -> Result<(), String> {
        // Commits made with an idempotency key carry it as their msg id.
        if let Some(id) = headers.and_then(|h| h.get(nats_name(headers::NATS_MSG_ID)))
            && id.as_str() != commit.commit_id
        {
            let fingerprint = headers
                .and_then(|h| h.get(nats_name(headers::NATS_REQUEST_FINGERPRINT)))
                .map(|v| v.as_str().to_string());
            acc.keys.push((
                id.as_str().to_string(),
                IdempotencyRecord {
                    reply: ExecuteReply {
                        version: commit.events.last().map_or(0, |e| e.sequence),
                        event_ids: commit.events.iter().map(|e| e.event_id.clone()).collect(),
                        stream_sequence: seq,
                        replayed: false,
                    },
                    fingerprint,
                },
            ));
        }
        for env in commit.events {
            let event = super::decode_event::<A>(&env)
                .map_err(|e| format!("event {} at stream sequence {seq}: {e}", env.event_id))?;
            A::apply(&mut acc.state, &event);
            acc.version = env.sequence;
        }
        acc.seen = seq;
        Ok(())
    }
}

fn decode_commit(seq: u64, payload: &[u8]) -> Result<Commit, String> {
    serde_json::from_slice(payload)
        .map_err(|e| format!("commit at sequence {seq} does not decode: {e}"))
}
