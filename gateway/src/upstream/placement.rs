//! Placement from the node registry (`gateway.placement = registry`): the placement-watcher
//! actor ([`Watcher`], bounded mailbox of [`WATCH_MAILBOX`], supervised in the Gateway's tree)
//! keeps the live view of `cloudlysis_nodes` (an entry seen within the registry TTL and not
//! draining); commands for `(tenant, aggregate type, id)` go to the live aggregate node that
//! serves the type and wins [`rendezvous`] for the entity (so one entity lives on one node),
//! reads go to any live projection node (the least loaded, taking equally loaded ones in turn),
//! and runner calls try live runners in rendezvous order of their key. Channels come from the
//! [`ChannelPool`]; a node that leaves (deleted, drained or not refreshed within the TTL) loses
//! its channel.
//!
//! The watcher's start replays the registry (`watch_with_history`); a broken watch fails the
//! actor, and its supervisor restarts it (with backoff) to watch again — the view it had stays
//! in use meanwhile, entries ageing out by the TTL as usual.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::registry::{self, NodeEntry, rendezvous};
use futures::StreamExt;
use tokio::time::Instant;

use super::AbortOnDrop;
use super::pool::ChannelPool;

/// How often departed nodes are swept out.
pub const SWEEP: Duration = Duration::from_millis(250);
/// Registry changes waiting at once (the watch waits for room: no change is dropped).
pub const WATCH_MAILBOX: usize = 256;
/// Actor kind of the placement watcher.
pub const WATCH_KIND: &str = "placement_watcher";

/// The live view of the registry.
#[derive(Debug)]
pub struct Placement {
    nodes: RwLock<HashMap<String, (NodeEntry, Instant)>>,
    /// Channels to the nodes.
    pub pool: ChannelPool,
    /// Turns among equally loaded nodes for reads.
    turn: AtomicUsize,
}

/// Messages of the placement watcher.
#[derive(Debug)]
pub enum WatchMsg {
    /// A registry entry changed (`age`: how long ago it was written).
    Entry {
        /// `<role>.<node id>`.
        key: String,
        /// Put, delete or purge.
        op: Operation,
        /// The entry.
        value: bytes::Bytes,
        /// Time since its write.
        age: Duration,
    },
    /// Drop entries not refreshed within the TTL.
    Sweep,
    /// The watch ended or broke: fail, to be restarted.
    Broke(String),
}

/// The placement-watcher actor: applies registry changes to the [`Placement`] it serves.
pub struct Watcher {
    /// The view it keeps.
    pub placement: Arc<Placement>,
    /// The registry bucket.
    pub kv: async_nats::jetstream::kv::Store,
}

impl BoundedActor for Watcher {
    type Msg = WatchMsg;
    type State = AbortOnDrop;
    type Arguments = ();
    const KIND: &'static str = WATCH_KIND;

    async fn pre_start(
        &self,
        myself: BoundedRef<WatchMsg>,
        _: (),
    ) -> Result<AbortOnDrop, ActorProcessingErr> {
        let mut watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| format!("cannot watch the node registry: {e}"))?;
        // Feeds the watch and the sweep ticks into the mailbox; stops with the actor.
        let feed = tokio::spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP);
            loop {
                tokio::select! {
                    entry = watch.next() => {
                        let msg = match entry {
                            Some(Ok(e)) => {
                                // An entry replayed by the watch (at start, on re-watch) is as
                                // old as its write, not fresh: a node that died a minute ago
                                // must not count as live.
                                let written = e.created.unix_timestamp_nanos();
                                let now = std::time::SystemTime::now()
                                    .duration_since(std::time::UNIX_EPOCH)
                                    .map_or(0, |d| d.as_nanos() as i128);
                                let age = Duration::from_nanos(
                                    (now - written).clamp(0, i128::from(u64::MAX)) as u64,
                                );
                                WatchMsg::Entry { key: e.key, op: e.operation, value: e.value, age }
                            }
                            Some(Err(e)) => WatchMsg::Broke(e.to_string()),
                            None => WatchMsg::Broke("the registry watch ended".into()),
                        };
                        let broke = matches!(msg, WatchMsg::Broke(_));
                        if myself.send(msg).await.is_err() || broke {
                            return;
                        }
                    }
                    _ = sweep.tick() => {
                        // A full mailbox is busy with changes; the next tick sweeps.
                        let _ = myself.try_send(WatchMsg::Sweep);
                    }
                }
            }
        });
        Ok(AbortOnDrop(feed))
    }

    async fn handle(
        &self,
        _: &BoundedRef<WatchMsg>,
        msg: WatchMsg,
        _: &mut AbortOnDrop,
    ) -> Result<(), ActorProcessingErr> {
        let gone = match msg {
            WatchMsg::Entry {
                key,
                op,
                value,
                age,
            } => self.placement.apply(&key, op, &value, age),
            WatchMsg::Sweep => self.placement.sweep(),
            WatchMsg::Broke(reason) => {
                tracing::warn!(%reason, "registry watch broke; the watcher restarts");
                return Err(reason.into());
            }
        };
        for addr in gone {
            self.placement.pool.evict(&addr).await;
        }
        Ok(())
    }
}

impl Placement {
    /// An empty view using `pool`; a [`Watcher`] fills it within one heartbeat.
    pub fn new(pool: ChannelPool) -> Self {
        Self {
            nodes: RwLock::default(),
            pool,
            turn: AtomicUsize::new(0),
        }
    }

    /// Applies one registry change; the addresses of nodes that left or moved.
    fn apply(&self, key: &str, op: Operation, value: &[u8], age: Duration) -> Vec<String> {
        let mut gone = Vec::new();
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        match op {
            Operation::Put => match serde_json::from_slice::<NodeEntry>(value) {
                Ok(entry) => {
                    if let Some((old, _)) = nodes.get(key)
                        && old.grpc_addr != entry.grpc_addr
                    {
                        gone.push(old.grpc_addr.clone());
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
                    gone.push(old.grpc_addr);
                }
            }
        }
        Self::report(&nodes);
        gone
    }

    /// Drops entries not refreshed within the TTL; their addresses.
    fn sweep(&self) -> Vec<String> {
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<String> = nodes
            .iter()
            .filter(|(_, (_, seen))| seen.elapsed() >= registry::TTL)
            .map(|(k, _)| k.clone())
            .collect();
        let mut gone = Vec::new();
        for k in stale {
            if let Some((old, _)) = nodes.remove(&k) {
                tracing::info!(node = %old.id, role = %old.role, "node left the registry (no heartbeat)");
                gone.push(old.grpc_addr);
            }
        }
        Self::report(&nodes);
        gone
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
        let p = Placement::new(ChannelPool::new(
            cloudlysis_runtime::tls::ClientTls::default(),
            Duration::from_secs(1),
        ));
        *p.nodes.write().unwrap() = map;
        p
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
