//! Placement from the node registry (`gateway.placement = registry`): a watcher keeps the live
//! view of `cloudlysis_nodes` (an entry seen within the registry TTL and not draining), commands
//! for `(tenant, aggregate type, id)` go to the live aggregate node that serves the type and
//! wins [`rendezvous`] for the entity (so one entity lives on one node), reads go to any live
//! projection node (the least loaded, taking equally loaded ones in turn), and runner calls try live runners in rendezvous order of
//! their key. Channels come from the [`ChannelPool`]; a node that leaves (deleted, drained or
//! not refreshed within the TTL) loses its channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Turns among equally loaded nodes for reads.
    turn: AtomicUsize,
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
            turn: AtomicUsize::new(0),
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

    /// The least loaded live projection node serving `view` (equally loaded ones in turn).
    pub fn projection_for(&self, view: &str) -> Option<NodeEntry> {
        let serving: Vec<NodeEntry> = self
            .live("projection")
            .into_iter()
            .filter(|n| n.behaviours.iter().any(|b| b == view))
            .collect();
        self.least_loaded(serving)
    }

    /// The least loaded live projection node, whatever it serves (operator calls answered from
    /// shared KV), equally loaded ones in turn.
    pub fn any_projection(&self) -> Option<NodeEntry> {
        self.least_loaded(self.live("projection"))
    }

    /// The node of `nodes` with the lowest reported load; among equally loaded ones, each in
    /// turn — loads come with heartbeats, so between two of them every read would otherwise go
    /// to the same node.
    fn least_loaded(&self, nodes: Vec<NodeEntry>) -> Option<NodeEntry> {
        let min = nodes.iter().map(|n| n.load).min()?;
        let mut tied: Vec<NodeEntry> = nodes.into_iter().filter(|n| n.load == min).collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % tied.len();
        Some(tied.swap_remove(turn))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(nodes: &[(&str, u64)]) -> Placement {
        let now = Instant::now();
        let map = nodes
            .iter()
            .map(|(id, load)| {
                let mut e = NodeEntry::new("projection", id, &format!("http://{id}:1"));
                e.behaviours = vec!["balances".into()];
                e.load = *load;
                (e.key(), (e, now))
            })
            .collect();
        Placement {
            nodes: RwLock::new(map),
            pool: Arc::new(ChannelPool::new(Duration::from_secs(1))),
            task: std::sync::Mutex::default(),
            turn: AtomicUsize::new(0),
        }
    }

    fn picks(p: &Placement, n: usize) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for _ in 0..n {
            *out.entry(p.projection_for("balances").unwrap().id)
                .or_default() += 1;
        }
        out
    }

    /// Equally loaded projection nodes share the reads (before, every read went to the node
    /// with the smallest id until a heartbeat reported a different load).
    #[tokio::test]
    async fn equally_loaded_nodes_take_reads_in_turn() {
        let p = placement(&[("p1", 0), ("p2", 0), ("p3", 0)]);
        let got = picks(&p, 30);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.values().all(|&n| n == 10), "{got:?}");
    }

    /// The least loaded node takes the reads while the others report more load.
    #[tokio::test]
    async fn the_least_loaded_node_takes_the_reads() {
        let p = placement(&[("p1", 7), ("p2", 2), ("p3", 2), ("p4", 9)]);
        let got = picks(&p, 10);
        assert_eq!(got.get("p2"), Some(&5), "{got:?}");
        assert_eq!(got.get("p3"), Some(&5), "{got:?}");
        assert_eq!(p.any_projection().map(|n| n.load), Some(2));
    }
}
