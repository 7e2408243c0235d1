//! The `View` behaviour: documents folded from aggregate events, stored in NATS KV, queried by
//! key or prefix, isolated by tenant.
//!
//! ```
//! use cloudlysis_actors::projection::view::View;
//! use cloudlysis_runtime::envelope::EventEnvelope;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct Balance { pub balance: i64 }
//!
//! pub struct Balances;
//!
//! impl View for Balances {
//!     const NAME: &'static str = "balances";
//!     const SCHEMA_VERSION: u32 = 1;
//!     type Document = Balance;
//!     fn aggregate_types() -> &'static [&'static str] { &["account"] }
//!     fn key(event: &EventEnvelope) -> Option<String> { Some(event.aggregate_id.clone()) }
//!     fn apply(doc: &mut Balance, event: &EventEnvelope) -> Result<(), String> {
//!         if event.event_type == "Deposited" {
//!             doc.balance += event.payload["amount"].as_i64().ok_or("amount missing")?;
//!         }
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Delivery is at least once and, with `PROJECTION_MAX_IN_FLIGHT > 1`, a failed event may be
//! retried after later events of the same document (see ADR 0006): `apply` should be
//! order-insensitive for the fields it folds, or the view should run with
//! `PROJECTION_MAX_IN_FLIGHT=1`. Each event is applied to a document **at most once**: the
//! document record keeps the stream sequences it applied above the view's checkpoint.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::StoreError;

use async_nats::jetstream::kv;
use bytes::Bytes;
use cloudlysis_runtime::envelope::{Commit, EventEnvelope};
use cloudlysis_runtime::kv as buckets;
use cloudlysis_runtime::mailbox::ActorProcessingErr;
use cloudlysis_runtime::subject::validate_token;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::handler::{Delivery, EventHandler, HandlerError};

/// A projection: which events it follows, how it keys documents, how it folds them.
pub trait View: Send + Sync + 'static {
    /// View name: a subject token (`balances`).
    const NAME: &'static str;
    /// Schema version of the documents.
    const SCHEMA_VERSION: u32;
    /// The document type.
    type Document: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    /// Aggregate types whose events this view follows.
    fn aggregate_types() -> &'static [&'static str];

    /// The document an event belongs to (`None`: the view ignores it). Must be a subject token
    /// (`[A-Za-z0-9_-]`); other keys are refused as a failure of the event.
    fn key(event: &EventEnvelope) -> Option<String>;

    /// Folds one event into its document. An error naks the message (then poison).
    fn apply(doc: &mut Self::Document, event: &EventEnvelope) -> Result<(), String>;
}

/// Decodes an envelope as an event of aggregate `A`, for views that fold typed events:
/// `let OrderEvent::Paid { amount } = decode::<Order>(event)? else { .. }`.
///
/// The aggregate's upcasters bring older events to the current shape; an event written by a
/// newer schema version is refused (the code would misread it), and so is a payload that does
/// not decode. Returned from [`View::apply`], the error is the event's failure (then a poison
/// record) and names the event. See [`crate::aggregate::decode_event`].
pub fn decode<A: crate::aggregate::Aggregate>(event: &EventEnvelope) -> Result<A::Event, String> {
    crate::aggregate::decode_event::<A>(event)
}

/// Most stream sequences a document remembers above the checkpoint.
pub const MAX_APPLIED: usize = 10_000;
/// Most redriven stream sequences a document remembers.
pub const MAX_REDRIVEN: usize = 1_000;

/// How a document is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// The view's document schema version.
    pub schema_version: u32,
    /// Highest stream sequence applied to this document.
    pub last_seq: u64,
    /// The view's checkpoint when `applied` was last pruned: every event at or below it was
    /// applied (or settled) already, so a late copy of one is recognised even after it left
    /// `applied`.
    #[serde(default)]
    pub floor: u64,
    /// Stream sequences applied above `floor` (redelivery guard).
    #[serde(default)]
    pub applied: Vec<u64>,
    /// Stream sequences applied by an operator's redrive of a poison record (they lie at or
    /// below `floor`, which passed them when they were quarantined); at most
    /// [`MAX_REDRIVEN`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redriven: Vec<u64>,
    /// The document.
    pub doc: serde_json::Value,
}

/// A view's checkpoint: the contiguous stream sequence up to which every event is applied.
/// Waiters ([`Checkpoint::wait_for`]) are woken when it rises, and may ask whoever keeps it
/// up to date for an early refresh ([`Checkpoint::refresh_requested`]).
#[derive(Clone, Debug, Default)]
pub struct Checkpoint(Arc<CheckpointInner>);

#[derive(Debug, Default)]
struct CheckpointInner {
    value: AtomicU64,
    raised: tokio::sync::Notify,
    refresh: tokio::sync::Notify,
}

impl Checkpoint {
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.value.load(Ordering::SeqCst)
    }

    /// Raises the checkpoint (never lowers it) and wakes waiters when it rose.
    pub fn raise(&self, to: u64) {
        if self.0.value.fetch_max(to, Ordering::SeqCst) < to {
            self.0.raised.notify_waiters();
        }
    }

    /// Waits until the checkpoint reaches `min` or `deadline` passes; returns the value then.
    /// While waiting it asks for refreshes, so a waiter does not sit out a whole polling
    /// interval.
    pub async fn wait_for(&self, min: u64, deadline: tokio::time::Instant) -> u64 {
        loop {
            let raised = self.0.raised.notified();
            tokio::pin!(raised);
            raised.as_mut().enable();
            let now = self.get();
            if now >= min || tokio::time::Instant::now() >= deadline {
                return now;
            }
            self.0.refresh.notify_one();
            let _ = tokio::time::timeout_at(deadline, raised).await;
        }
    }

    /// Resolves when a waiter wants the checkpoint refreshed before the next regular poll.
    pub async fn refresh_requested(&self) {
        self.0.refresh.notified().await
    }
}

/// Most documents a view store keeps in memory (with their KV revision) to skip the read
/// before a write.
pub const MAX_CACHED_DOCUMENTS: usize = 4096;

enum Cached {
    Hit((DocumentRecord, u64)),
    Miss(Option<kv::Entry>),
}

/// A bounded map of recently written documents and their revisions. When full, an arbitrary
/// entry makes room: a miss costs one KV read, never correctness.
#[derive(Default)]
struct DocCache(std::sync::Mutex<std::collections::HashMap<String, (DocumentRecord, u64)>>);

impl DocCache {
    fn take(&self, key: &str, view: &'static str) -> Option<(DocumentRecord, u64)> {
        let hit = self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        let outcome = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!(cloudlysis_runtime::metrics::names::VIEW_CACHE, "view" => view, "outcome" => outcome)
            .increment(1);
        hit
    }

    fn put(&self, key: &str, record: DocumentRecord, revision: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CACHED_DOCUMENTS
            && !map.contains_key(key)
            && let Some(victim) = map.keys().next().cloned()
        {
            map.remove(&victim);
        }
        map.insert(key.to_string(), (record, revision));
    }
}

/// Applies commits to a view's documents in KV.
pub struct ViewStore<V> {
    kv: kv::Store,
    space: String,
    cache: Arc<DocCache>,
    checkpoint: Checkpoint,
    io_timeout: Duration,
    commits: Arc<AtomicU64>,
    _view: PhantomData<fn() -> V>,
}

impl<V> Clone for ViewStore<V> {
    fn clone(&self) -> Self {
        Self {
            kv: self.kv.clone(),
            space: self.space.clone(),
            cache: self.cache.clone(),
            checkpoint: self.checkpoint.clone(),
            io_timeout: self.io_timeout,
            commits: self.commits.clone(),
            _view: PhantomData,
        }
    }
}

/// What applying one commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Documents written.
    pub written: usize,
    /// Documents that had this commit already (redelivery).
    pub already: usize,
}

impl<V: View> ViewStore<V> {
    /// A store on the views bucket, writing generation 0 of the view.
    pub fn new(kv: kv::Store, checkpoint: Checkpoint, io_timeout: Duration) -> Self {
        Self {
            kv,
            space: buckets::view_space(V::NAME, 0),
            cache: Arc::default(),
            checkpoint,
            io_timeout,
            commits: Arc::new(AtomicU64::new(0)),
            _view: PhantomData,
        }
    }

    /// Writes generation `generation` of the view (its own key space; see
    /// [`super::generation`]).
    pub fn generation(mut self, generation: u32) -> Self {
        self.space = buckets::view_space(V::NAME, generation);
        self
    }

    /// Counts applied commits on `counter` (shared across generations) instead of its own.
    pub fn count_commits_on(mut self, counter: Arc<AtomicU64>) -> Self {
        self.commits = counter;
        self
    }

    /// Commits this store applied to at least one document (this process only).
    pub fn commits_applied(&self) -> Arc<AtomicU64> {
        self.commits.clone()
    }

    /// Applies the events of `commit` (stream sequence `seq`) to their documents: each document
    /// is read once, all its events of the commit applied, and written once with a revision
    /// check (a concurrent writer makes it retry). A document that already applied `seq` is
    /// left alone.
    pub async fn apply(&self, commit: &Commit, seq: u64) -> Result<Applied, String> {
        self.apply_as(commit, seq, false).await
    }

    /// Applies a quarantined commit again (an operator's redrive of its poison record): like
    /// [`apply`](Self::apply), except that the floor does not count — the checkpoint passed the
    /// event when it was quarantined, not applied. A document that recorded `seq` (applied or
    /// redriven before) is left alone, so a redrive is applied at most once per document.
    pub async fn redrive(&self, commit: &Commit, seq: u64) -> Result<Applied, String> {
        self.apply_as(commit, seq, true).await
    }

    async fn apply_as(&self, commit: &Commit, seq: u64, redrive: bool) -> Result<Applied, String> {
        let mut applied = Applied::default();
        for (kv_key, events) in self.group(commit)? {
            let item = [(seq, events)];
            let outcomes = if redrive {
                // An operator waits for the answer: an outage is reported, not waited out.
                self.apply_many(&kv_key, &item, true)
                    .await
                    .map_err(|e| e.to_string())?
            } else {
                self.apply_held(&kv_key, &item).await?
            };
            match outcomes.into_iter().next().unwrap_or(Ok(false)) {
                Ok(true) => applied.written += 1,
                Ok(false) => applied.already += 1,
                Err(e) => return Err(e),
            }
        }
        if applied.written > 0 {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(applied)
    }

    /// Counts one commit applied to at least one document.
    pub(crate) fn count_commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// The events of `commit` this view follows, by document key (KV key).
    pub(crate) fn group<'c>(
        &self,
        commit: &'c Commit,
    ) -> Result<BTreeMap<String, Vec<&'c EventEnvelope>>, String> {
        let mut by_key: BTreeMap<String, Vec<&EventEnvelope>> = BTreeMap::new();
        for e in &commit.events {
            if !V::aggregate_types().contains(&e.aggregate_type.as_str()) {
                continue;
            }
            let Some(key) = V::key(e) else { continue };
            validate_token(&key).map_err(|err| format!("document key {key:?}: {err}"))?;
            validate_token(&e.tenant_id)
                .map_err(|err| format!("tenant {:?}: {err}", e.tenant_id))?;
            by_key
                .entry(buckets::view_document_key(&self.space, &e.tenant_id, &key))
                .or_default()
                .push(e);
        }
        Ok(by_key)
    }

    /// Applies `items` (stream sequence, that commit's events for this document), in order, to
    /// the document at `kv_key`: one read (or cache hit) and **one** revision-checked write for
    /// all of them (a concurrent writer makes it read and apply again). Each item's outcome:
    /// `Ok(true)` applied, `Ok(false)` applied before (redelivery), `Err` its `apply` failed —
    /// the other items are written without it. `Err` as a whole: reading or writing failed and
    /// nothing was written, because the store did not answer ([`StoreError::Unavailable`]:
    /// try again) or the document cannot be written ([`StoreError::Broken`]).
    pub(crate) async fn apply_many(
        &self,
        kv_key: &str,
        items: &[(u64, Vec<&EventEnvelope>)],
        redrive: bool,
    ) -> Result<Vec<Result<bool, String>>, StoreError> {
        use StoreError::{Broken, Unavailable};
        for attempt in 0..5 {
            // The cached record is current exactly when its revision is the key's last one;
            // the revision-checked write below finds out.
            let cached = if attempt == 0 {
                self.cache.take(kv_key, V::NAME)
            } else {
                None
            };
            let entry = match cached {
                Some(hit) => Cached::Hit(hit),
                None => Cached::Miss(
                    tokio::time::timeout(self.io_timeout, self.kv.entry(kv_key))
                        .await
                        .map_err(|_| Unavailable(format!("reading {kv_key} timed out")))?
                        .map_err(|e| match e.kind() {
                            kv::EntryErrorKind::InvalidKey => {
                                Broken(format!("reading {kv_key}: {e}"))
                            }
                            _ => Unavailable(format!("reading {kv_key}: {e}")),
                        })?,
                ),
            };
            let (mut record, revision) = match entry {
                Cached::Hit((r, rev)) => (r, Some(rev)),
                Cached::Miss(entry) => match entry {
                    Some(e) if e.operation == kv::Operation::Put => {
                        let r: DocumentRecord =
                            serde_json::from_slice(&e.value).map_err(|err| {
                                Broken(format!("document {kv_key} does not decode: {err}"))
                            })?;
                        (r, Some(e.revision))
                    }
                    other => (
                        DocumentRecord {
                            schema_version: V::SCHEMA_VERSION,
                            last_seq: 0,
                            floor: 0,
                            applied: Vec::new(),
                            redriven: Vec::new(),
                            doc: serde_json::to_value(V::Document::default())
                                .map_err(|e| Broken(e.to_string()))?,
                        },
                        other.map(|e| e.revision),
                    ),
                },
            };
            // Applied before: listed, or at or below the floor the set was pruned to (a copy
            // redelivered after another one was applied and the checkpoint passed it).
            let done = |record: &DocumentRecord, seq: u64| {
                if redrive {
                    record.applied.contains(&seq) || record.redriven.contains(&seq)
                } else {
                    seq <= record.floor || record.applied.contains(&seq)
                }
            };
            // A copy of an item redelivered into the same batch is not applied again: it shares
            // the outcome of the first copy (patched in below).
            let mut first_copy = std::collections::HashMap::with_capacity(items.len());
            let copy_of: Vec<Option<usize>> = items
                .iter()
                .enumerate()
                .map(|(i, (seq, _))| match first_copy.entry(*seq) {
                    std::collections::hash_map::Entry::Occupied(o) => Some(*o.get()),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(i);
                        None
                    }
                })
                .collect();
            let mut outcome: Vec<Result<bool, String>> = items
                .iter()
                .zip(&copy_of)
                .map(|((seq, _), copy)| Ok(copy.is_none() && !done(&record, *seq)))
                .collect();
            let share = |outcome: &mut Vec<Result<bool, String>>| {
                for (i, copy) in copy_of.iter().enumerate() {
                    if let Some(first) = copy {
                        outcome[i] = match &outcome[*first] {
                            Ok(_) => Ok(false),
                            Err(e) => Err(e.clone()),
                        };
                    }
                }
            };
            if !outcome.iter().any(|o| matches!(o, Ok(true))) {
                if let Some(rev) = revision {
                    self.cache.put(kv_key, record, rev);
                }
                share(&mut outcome);
                return Ok(outcome);
            }
            // Fold the items due; an item whose apply fails is left out and the fold starts
            // again without it (its partial changes must not be written).
            let doc = loop {
                let mut doc: V::Document = serde_json::from_value(record.doc.clone())
                    .map_err(|e| Broken(format!("document {kv_key} does not fit the view: {e}")))?;
                let mut failed = None;
                for (i, (_, events)) in items.iter().enumerate() {
                    if !matches!(outcome[i], Ok(true)) {
                        continue;
                    }
                    if let Err(e) = events.iter().try_for_each(|e| V::apply(&mut doc, e)) {
                        failed = Some((i, e));
                        break;
                    }
                }
                match failed {
                    None => break doc,
                    Some((i, e)) => outcome[i] = Err(e),
                }
            };
            share(&mut outcome);
            if !outcome.iter().any(|o| matches!(o, Ok(true))) {
                if let Some(rev) = revision {
                    self.cache.put(kv_key, record, rev);
                }
                return Ok(outcome);
            }
            // The checkpoint only rises and everything at or below it is settled: the floor
            // moves up to it and the set keeps what lies above.
            record.floor = record.floor.max(self.checkpoint.get());
            let floor = record.floor;
            record.applied.retain(|s| *s > floor);
            for ((seq, _), o) in items.iter().zip(&outcome) {
                if !matches!(o, Ok(true)) {
                    continue;
                }
                if redrive && *seq <= floor {
                    record.redriven.push(*seq);
                    if record.redriven.len() > MAX_REDRIVEN {
                        record.redriven.remove(0);
                    }
                } else {
                    record.applied.push(*seq);
                }
                record.last_seq = record.last_seq.max(*seq);
            }
            if record.applied.len() > MAX_APPLIED {
                // A document applying more than MAX_APPLIED events above a stalled checkpoint
                // forgets the lowest (the guard's bound; runtime-semantics.md says so).
                let excess = record.applied.len() - MAX_APPLIED;
                record.applied.sort_unstable();
                record.applied.drain(..excess);
            }
            record.doc = serde_json::to_value(&doc).map_err(|e| Broken(e.to_string()))?;
            let bytes =
                Bytes::from(serde_json::to_vec(&record).map_err(|e| Broken(e.to_string()))?);
            let write = async {
                match revision {
                    Some(rev) => self.kv.update(kv_key, bytes, rev).await.map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            StoreError::of_write(kv_key, &e),
                        )
                    }),
                    None => self.kv.create(kv_key, bytes).await.map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            StoreError::of_write(kv_key, &e),
                        )
                    }),
                }
            };
            match tokio::time::timeout(self.io_timeout, write).await {
                Ok(Ok(new_revision)) => {
                    self.cache.put(kv_key, record, new_revision);
                    return Ok(outcome);
                }
                // Another node wrote the document since we read it: read again.
                Ok(Err((true, _))) => continue,
                Ok(Err((false, e))) => return Err(e),
                Err(_) => return Err(Unavailable(format!("writing {kv_key} timed out"))),
            }
        }
        Err(Unavailable(format!(
            "writing {kv_key}: too many concurrent writers"
        )))
    }
}

/// Feeds a view from its consumer, coalescing what arrives while a batch is written (see
/// [`super::batch`]).
pub struct ViewHandler<V>(pub ViewStore<V>);

impl<V: View> EventHandler for ViewHandler<V> {
    type Event = Commit;
    type State = super::batch::Batcher;
    const KIND: &'static str = "view";

    async fn init(&self) -> Result<super::batch::Batcher, ActorProcessingErr> {
        Ok(super::batch::Batcher::start(self.0.clone()))
    }

    async fn handle(
        &self,
        d: &Delivery<Commit>,
        _: &mut super::batch::Batcher,
    ) -> Result<(), HandlerError> {
        self.0
            .apply(&d.event, d.meta.stream_sequence)
            .await
            .map(|_| ())
            .map_err(HandlerError::new)
    }

    async fn accept(
        &self,
        delivery: Delivery<Commit>,
        batcher: &mut super::batch::Batcher,
    ) -> Result<(), ActorProcessingErr> {
        batcher.push(delivery).await
    }
}
