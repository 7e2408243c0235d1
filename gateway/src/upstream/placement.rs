//! Placement from the node registry (`gateway.placement = registry`): a watcher keeps the live
//! view of `cloudlysis_nodes` (an entry seen within the registry TTL and not draining), commands
//! for `(tenant, aggregate type, id)` go to the live aggregate node that serves the type and
//! wins [`rendezvous`] for the entity (so one entity lives on one node), reads go to any live
//! projection node (the least loaded), and runner calls try live runners in rendezvous order of
//! their key. Channels come from the [`ChannelPool`]; a node that leaves (deleted, drained or
//! not refreshed within the TTL) loses its channel.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::registry::{self, NodeEntry, rendezvous};
use futures::StreamExt;
use tokio::time::Instant;

use super::pool::ChannelPool;

/// How often departed nodes are swept out.
pub const SWEEP: Duration = Duration::from_millis(250);

/// The live view of the registry.
#[derive(Debug)]
pub struct Placement {
    nodes: RwLock<HashMap<String, (NodeEntry, Instant)>>,
    /// Channels to the nodes.
    pub pool: Arc<ChannelPool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

impl Placement {
    /// Starts watching the registry of `js`; the view fills within one heartbeat.
    pub async fn start(
        js: async_nats::jetstream::Context,
        pool: Arc<ChannelPool>,
    ) -> Result<Arc<Self>, String> {
        let kv = cloudlysis_runtime::kv::ensure_bucket(&js, &registry::nodes())
            .await
            .map_err(|e| e.to_string())?;
        let me = Arc::new(Self {
            nodes: RwLock::default(),
            pool,
            task: std::sync::Mutex::default(),
        });
        let weak = Arc::downgrade(&me);
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let watch = kv.watch_with_history(">").await;
                let mut watch = match watch {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!(error = %e, "registry watch failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                backoff = Duration::from_millis(100);
                let mut sweep = tokio::time::interval(SWEEP);
                loop {
                    tokio::select! {
                        entry = watch.next() => {
                            let Some(me) = weak.upgrade() else { return };
                            match entry {
                                Some(Ok(e)) => {
                                    // An entry replayed by the watch (at start, on re-watch) is
                                    // as old as its write, not fresh: a node that died a minute
                                    // ago must not count as live.
                                    let written = e.created.unix_timestamp_nanos();
                                    let now = std::time::SystemTime::now()
                                        .duration_since(std::time::UNIX_EPOCH)
                                        .map_or(0, |d| d.as_nanos() as i128);
                                    let age = Duration::from_nanos(
                                        (now - written).clamp(0, i128::from(u64::MAX)) as u64,
                                    );
                                    me.apply(&e.key, e.operation, &e.value, age)
                                }
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "registry watch broke; re-watching");
                                    break;
                                }
                                None => break,
                            }
                        }
                        _ = sweep.tick() => {
                            let Some(me) = weak.upgrade() else { return };
                            me.sweep();
                        }
                    }
                }
            }
        });
        *me.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(me)
    }

    fn apply(&self, key: &str, op: Operation, value: &[u8], age: Duration) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        match op {
            Operation::Put => match serde_json::from_slice::<NodeEntry>(value) {
                Ok(entry) => {
                    if let Some((old, _)) = nodes.get(key)
                        && old.grpc_addr != entry.grpc_addr
                    {
                        self.pool.evict(&old.grpc_addr);
                    }
                    let seen = Instant::now()
                        .checked_sub(age.min(registry::TTL))
                        .unwrap_or_else(Instant::now);
                    nodes.insert(key.to_string(), (entry, seen));
                }
                Err(e) => tracing::warn!(key, error = %e, "unreadable registry entry ignored"),
            },
            Operation::Delete | Operation::Purge => {
                if let Some((old, _)) = nodes.remove(key) {
                    self.pool.evict(&old.grpc_addr);
                }
            }
        }
        Self::report(&nodes);
    }

    /// Drops entries not refreshed within the TTL, and their channels.
    fn sweep(&self) {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = nodes
            .iter()
            .filter(|(_, (_, seen))| seen.elapsed() >= registry::TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some((old, _)) = nodes.remove(&k) {
                tracing::info!(node = %old.id, role = %old.role, "node left the registry (no heartbeat)");
                self.pool.evict(&old.grpc_addr);
            }
        }
        Self::report(&nodes);
    }

    fn report(nodes: &HashMap<String, (NodeEntry, Instant)>) {
        for role in ["aggregate", "projection", "runner"] {
            let n = nodes
                .values()
                .filter(|(e, seen)| e.role == role && !e.draining && seen.elapsed() < registry::TTL)
                .count();
            metrics::gauge!(names::GATEWAY_LIVE_NODES, "role" => role).set(n as f64);
        }
    }

    /// The live nodes of `role` (seen within the TTL, not draining), by id.
    pub fn live(&self, role: &str) -> Vec<NodeEntry> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<NodeEntry> = nodes
            .values()
            .filter(|(e, seen)| e.role == role && !e.draining && seen.elapsed() < registry::TTL)
            .map(|(e, _)| e.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Every node of `role` seen within the TTL, draining ones included, by id.
    pub fn all(&self, role: &str) -> Vec<NodeEntry> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<NodeEntry> = nodes
            .values()
            .filter(|(e, seen)| e.role == role && seen.elapsed() < registry::TTL)
            .map(|(e, _)| e.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The aggregate node for one entity.
    pub fn aggregate_for(&self, tenant: &str, ty: &str, id: &str) -> Option<NodeEntry> {
        let serving: Vec<NodeEntry> = self
            .live("aggregate")
            .into_iter()
            .filter(|n| n.behaviours.iter().any(|b| b == ty))
            .collect();
        rendezvous(&format!("{tenant}/{ty}/{id}"), &serving).cloned()
    }

    /// The least loaded live projection node serving `view`.
    pub fn projection_for(&self, view: &str) -> Option<NodeEntry> {
        self.live("projection")
            .into_iter()
            .filter(|n| n.behaviours.iter().any(|b| b == view))
            .min_by_key(|n| n.load)
    }

    /// Live runners, in rendezvous order of `key` (the first choice first).
    pub fn runners_for(&self, key: &str) -> Vec<NodeEntry> {
        let mut left = self.live("runner");
        let mut out = Vec::with_capacity(left.len());
        while let Some(n) = rendezvous(key, &left).cloned() {
            left.retain(|m| m.id != n.id);
            out.push(n);
        }
        out
    }
}
