//! The outbox relay: publishes what committed workflow steps issued, exactly once.
//!
//! A step's effect commands, timer commands and workflow events are written into the
//! instance's record (the outbox) in the same revision-checked write as its new state. Then:
//!
//! 1. the instance actor hands the entries to a relay lane ([`Relay::publish`]), which
//!    publishes each with `Nats-Msg-Id = msg_id` (pipelined: every publish is sent, then every
//!    ack awaited) and answers once all are acknowledged;
//! 2. the instance actor clears them with a second revision-checked write and removes the
//!    step's key from the outbox index (`cloudlysis_outbox`, written before the first write).
//!
//! A crash between 1 and 2 leaves the entries in the record and the step in the index. The
//! sweep ([`RelayMsg::Sweep`]) — at start, then every `runner.outbox_sweep_ms` — reads the index
//! (never the whole instance bucket), publishes what it finds again and clears it: within the
//! stream's duplicate window the copies are dropped by their `Nats-Msg-Id`; after it, the effect
//! worker's ledger recognises a command it already ran.
//!
//! The relay runs as `runner.relay_lanes` sibling actors sharing one bounded mailbox budget;
//! an instance always uses the same lane.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, kv};
use bytes::Bytes;
use cloudlysis_runtime::context::{CorrelationId, RequestContext, TenantId};
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::trace::TraceParent;
use cloudlysis_runtime::{kv as buckets, nats, workflow as wire};

use crate::store::StoreError;
use futures::StreamExt;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

use super::record::{InstanceRecord, OutboxEntry, OutboxKind};

/// Actor kind of relay lanes.
pub const KIND: &str = "outbox_relay";
/// Most index entries one sweep looks at.
pub const MAX_SWEEP: usize = 1000;
/// The environment switch of the test-only fault point (see [`Fault`]).
pub const FAULT_ENV: &str = "CLOUDLYSIS_TEST_FAULT";

/// Test-only fault injection, switched on by [`FAULT_ENV`]. Never set it in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `hang-after-outbox-publish`: after the first outbox publish is acknowledged, print
    /// `fault: hanging after outbox publish` to stderr and never clear it — so a test can
    /// kill -9 the process between the publish and the clear.
    HangAfterOutboxPublish,
}

impl Fault {
    /// The fault named by the environment, if any.
    pub fn from_env() -> Option<Self> {
        match std::env::var(FAULT_ENV).ok()?.as_str() {
            "hang-after-outbox-publish" => Some(Self::HangAfterOutboxPublish),
            _ => None,
        }
    }
}

/// The value of an outbox-index key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The instance's record key.
    pub instance_key: String,
    /// When the step was written (Unix ms).
    pub since_ms: u64,
}

/// Messages of a relay lane.
pub enum RelayMsg {
    /// Publish these entries and answer once every one is acknowledged.
    Publish(Vec<OutboxEntry>, RpcReplyPort<Result<(), String>>),
    /// Republish and clear the outboxes the index names (index entries older than `grace`).
    Sweep {
        /// Entries younger than this are left to the instance actor that wrote them.
        grace: Duration,
    },
    /// A sweep of every entry, answered when done (a drain's last step).
    SweepNow(RpcReplyPort<()>),
}

/// What relay lanes and sweeps share.
#[derive(Clone)]
pub struct RelayCtx {
    /// JetStream (publishes).
    pub js: jetstream::Context,
    /// The instance bucket.
    pub instances: kv::Store,
    /// The outbox index.
    pub index: kv::Store,
    /// The stream behind the outbox index (index keys are removed from it directly).
    pub index_stream: jetstream::stream::Stream,
    /// Deadline of each NATS call.
    pub io_timeout: Duration,
    /// Test-only fault point.
    pub fault: Option<Fault>,
    /// Set once the fault fired (it fires once per process).
    pub fault_fired: Arc<std::sync::atomic::AtomicBool>,
}

/// One relay lane.
pub struct RelayActor(pub RelayCtx);

impl BoundedActor for RelayActor {
    type Msg = RelayMsg;
    type State = ();
    type Arguments = ();
    const KIND: &'static str = KIND;

    async fn pre_start(&self, _: BoundedRef<RelayMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: &BoundedRef<RelayMsg>,
        msg: RelayMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RelayMsg::Publish(entries, reply) => {
                let result = publish_all(&self.0, &entries).await;
                if result.is_ok() {
                    self.0.fault_point().await;
                }
                let _ = reply.send(result);
            }
            RelayMsg::Sweep { grace } => sweep(&self.0, grace).await,
            RelayMsg::SweepNow(reply) => {
                sweep(&self.0, Duration::ZERO).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

impl RelayCtx {
    async fn fault_point(&self) {
        if self.fault == Some(Fault::HangAfterOutboxPublish)
            && !self
                .fault_fired
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            eprintln!("fault: hanging after outbox publish");
            std::future::pending::<()>().await;
        }
    }
}

/// The relay lanes of a node.
#[derive(Clone)]
pub struct Relay {
    lanes: Arc<Vec<BoundedRef<RelayMsg>>>,
    timeout: Duration,
}

impl Relay {
    /// `lanes` relay mailboxes (at least one; siblings of the first), each publish bounded by
    /// `timeout`.
    pub fn new(lanes: Vec<BoundedRef<RelayMsg>>, timeout: Duration) -> Self {
        Self {
            lanes: Arc::new(lanes),
            timeout,
        }
    }

    /// The lanes (for the supervisor's child specs).
    pub fn lanes(&self) -> &[BoundedRef<RelayMsg>] {
        &self.lanes
    }

    /// Publishes `entries` through the lane of `instance_key`; `Ok` once all are acknowledged.
    pub async fn publish(
        &self,
        instance_key: &str,
        entries: Vec<OutboxEntry>,
    ) -> Result<(), String> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        instance_key.hash(&mut h);
        let lane = &self.lanes[(h.finish() % self.lanes.len() as u64) as usize];
        match lane
            .ask(|reply| RelayMsg::Publish(entries, reply), self.timeout)
            .await
        {
            Ok(result) => result,
            Err(e) => Err(format!("outbox relay: {e}")),
        }
    }

    /// Messages queued or being handled on all lanes.
    pub fn depth(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.depth())
            .sum::<usize>()
            .min(self.lanes[0].capacity())
    }

    /// Sweeps every index entry now and waits for it (bounded by `timeout`).
    pub async fn sweep_now(&self, timeout: Duration) -> Result<(), String> {
        self.lanes[0]
            .ask(RelayMsg::SweepNow, timeout)
            .await
            .map_err(|e| format!("outbox sweep: {e}"))
    }

    /// Asks lane 0 for a sweep (dropped when its mailbox is full: the next one comes soon).
    pub fn sweep(&self, grace: Duration) {
        let _ = self.lanes[0].try_send(RelayMsg::Sweep { grace });
    }
}

/// The request context an entry is published with: the instance's tenant, correlation and
/// trace.
fn entry_context(entry: &OutboxEntry) -> Option<RequestContext> {
    let p = &entry.payload;
    let tenant = TenantId::new(p.get("tenant_id")?.as_str()?.to_string()).ok()?;
    let mut ctx = RequestContext::new(tenant);
    if let Some(c) = p
        .get("correlation_id")
        .and_then(|v| v.as_str())
        .and_then(|c| CorrelationId::new(c).ok())
    {
        ctx.correlation_id = c;
    }
    if let Some(t) = p
        .get("traceparent")
        .and_then(|v| v.as_str())
        .and_then(|t| TraceParent::parse(t).ok())
    {
        ctx.traceparent = t;
    }
    Some(ctx)
}

/// Publishes every entry (all sent, then all acks awaited under one deadline).
pub async fn publish_all(ctx: &RelayCtx, entries: &[OutboxEntry]) -> Result<(), String> {
    let work = async {
        let mut acks: Vec<(PublishAckFuture, OutboxKind)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let rctx = entry_context(entry)
                .ok_or_else(|| format!("outbox entry {} has no valid tenant", entry.msg_id))?;
            let headers = nats::publish_headers(&rctx, &entry.msg_id);
            let payload =
                Bytes::from(serde_json::to_vec(&entry.payload).map_err(|e| e.to_string())?);
            let ack = ctx
                .js
                .publish_with_headers(entry.subject.clone(), headers, payload)
                .await
                .map_err(|e| format!("publishing {}: {e}", entry.subject))?;
            acks.push((ack, entry.kind));
        }
        for (ack, kind) in acks {
            let ack = ack.await.map_err(|e| format!("outbox publish: {e}"))?;
            let kind = match kind {
                OutboxKind::Command => "command",
                OutboxKind::Event => "event",
            };
            metrics::counter!(names::OUTBOX_PUBLISHED, "kind" => kind).increment(1);
            if ack.duplicate {
                metrics::counter!(names::OUTBOX_DUPLICATES).increment(1);
            }
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(ctx.io_timeout * 2, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            metrics::counter!(names::OUTBOX_FAILURES).increment(1);
            Err(e)
        }
        Err(_) => {
            metrics::counter!(names::OUTBOX_FAILURES).increment(1);
            Err("outbox publish timed out".into())
        }
    }
}

/// Removes `published` entries from an instance's outbox with a revision-checked write,
/// re-reading on conflicts. Returns the new revision and record when it wrote one.
pub async fn clear(
    ctx: &RelayCtx,
    key: &str,
    mut current: Option<(InstanceRecord, u64)>,
    published: &HashSet<String>,
) -> Result<Option<(InstanceRecord, u64)>, String> {
    for _ in 0..10 {
        let (mut record, revision) = match current.take() {
            Some(c) => c,
            None => match read(ctx, key).await.map_err(|e| e.to_string())? {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        let before = record.outbox.len();
        record.outbox.retain(|e| !published.contains(&e.msg_id));
        if record.outbox.len() == before {
            return Ok(Some((record, revision)));
        }
        let bytes = Bytes::from(serde_json::to_vec(&record).map_err(|e| e.to_string())?);
        match tokio::time::timeout(ctx.io_timeout, ctx.instances.update(key, bytes, revision)).await
        {
            Ok(Ok(rev)) => return Ok(Some((record, rev))),
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Ok(Err(e)) => return Err(format!("clearing the outbox of {key}: {e}")),
            Err(_) => return Err(format!("clearing the outbox of {key} timed out")),
        }
    }
    Err(format!(
        "clearing the outbox of {key}: too many concurrent writers"
    ))
}

/// Reads an instance record and its revision.
pub async fn read(ctx: &RelayCtx, key: &str) -> Result<Option<(InstanceRecord, u64)>, StoreError> {
    let entry = tokio::time::timeout(ctx.io_timeout, ctx.instances.entry(key))
        .await
        .map_err(|_| StoreError::Unavailable(format!("reading {key} timed out")))?
        .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?;
    match entry {
        Some(e) if e.operation == kv::Operation::Put => {
            let record: InstanceRecord = serde_json::from_slice(&e.value).map_err(|err| {
                StoreError::Broken(format!("instance {key} does not decode: {err}"))
            })?;
            Ok(Some((record, e.revision)))
        }
        _ => Ok(None),
    }
}

/// Records that step `index_key` may have unpublished entries (before the write that adds
/// them).
pub async fn mark(ctx: &RelayCtx, index_key: &str, instance_key: &str) -> Result<(), StoreError> {
    let value = IndexEntry {
        instance_key: instance_key.to_string(),
        since_ms: wire::now_ms(),
    };
    let bytes =
        Bytes::from(serde_json::to_vec(&value).map_err(|e| StoreError::Broken(e.to_string()))?);
    tokio::time::timeout(ctx.io_timeout, ctx.index.put(index_key, bytes))
        .await
        .map_err(|_| StoreError::Unavailable("marking the outbox index timed out".into()))?
        .map_err(|e| StoreError::of_write("the outbox index", &e))?;
    Ok(())
}

/// Removes an index key for good (from the bucket's stream: no delete marker stays behind, so
/// the index only ever holds pending steps).
pub async fn unmark(ctx: &RelayCtx, index_key: &str) {
    let work = async {
        ctx.index_stream
            .purge()
            .filter(buckets::outbox_index_subject(index_key))
            .await
            .ok()
    };
    if tokio::time::timeout(ctx.io_timeout, work)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        tracing::debug!(index_key, "outbox index entry not removed; the sweep will");
    }
}

/// One sweep: for every index entry older than `grace`, publish the instance's outbox again,
/// clear it, and remove the entry.
async fn sweep(ctx: &RelayCtx, grace: Duration) {
    let keys = async {
        let keys = ctx.index.keys().await.ok()?;
        Some(
            keys.take(MAX_SWEEP)
                .filter_map(|k| async move { k.ok() })
                .collect::<Vec<String>>()
                .await,
        )
    };
    let Ok(Some(keys)) = tokio::time::timeout(ctx.io_timeout * 4, keys).await else {
        tracing::debug!("outbox sweep: the index could not be read");
        return;
    };
    let now = wire::now_ms();
    for index_key in keys {
        let value = tokio::time::timeout(ctx.io_timeout, ctx.index.get(&index_key)).await;
        let Ok(Ok(Some(bytes))) = value else { continue };
        let Ok(entry) = serde_json::from_slice::<IndexEntry>(&bytes) else {
            unmark(ctx, &index_key).await;
            continue;
        };
        if now.saturating_sub(entry.since_ms) < grace.as_millis() as u64 {
            continue;
        }
        match flush_instance(ctx, &entry.instance_key).await {
            Ok(swept) => {
                if swept > 0 {
                    metrics::counter!(names::OUTBOX_SWEPT).increment(swept as u64);
                    tracing::info!(instance = %entry.instance_key, entries = swept, "outbox sweep republished pending entries");
                }
                unmark(ctx, &index_key).await;
            }
            Err(e) if e == PAUSED => {}
            Err(e) => {
                tracing::warn!(instance = %entry.instance_key, error = %e, "outbox sweep; will retry")
            }
        }
    }
}

/// Entries of the outbox index (counted up to [`MAX_SWEEP`] × 100); `None` when they could not
/// be counted — at once, without asking, while the connection is known down.
pub async fn index_depth(ctx: &RelayCtx) -> Option<u64> {
    if cloudlysis_runtime::nats::not_connected(&ctx.js).is_some() {
        return None;
    }
    let count = async {
        let keys = ctx.index.keys().await.ok()?;
        Some(keys.take(MAX_SWEEP * 100).count().await as u64)
    };
    tokio::time::timeout(ctx.io_timeout * 2, count)
        .await
        .ok()
        .flatten()
}

/// Why [`flush_instance`] left an outbox alone.
pub const PAUSED: &str = "paused";

/// Publishes and clears whatever an instance's outbox holds; returns how many entries. A paused
/// instance's outbox is held: `Err(PAUSED)`, and its index entry stays.
pub async fn flush_instance(ctx: &RelayCtx, key: &str) -> Result<usize, String> {
    let Some((record, revision)) = read(ctx, key).await.map_err(|e| e.to_string())? else {
        return Ok(0);
    };
    if record.outbox.is_empty() {
        return Ok(0);
    }
    if record.paused {
        return Err(PAUSED.into());
    }
    let entries = record.outbox.clone();
    publish_all(ctx, &entries).await?;
    ctx.fault_point().await;
    let published: HashSet<String> = entries.iter().map(|e| e.msg_id.clone()).collect();
    clear(ctx, key, Some((record, revision)), &published).await?;
    Ok(entries.len())
}
