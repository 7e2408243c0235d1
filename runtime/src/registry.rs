//! The node registry: every node writes what it is to the KV bucket `cloudlysis_nodes` (key
//! `<role>.<node id>`) every [`HEARTBEAT`]; a reader treats an entry it has not seen refreshed
//! within [`TTL`] as gone, and a node that drains marks itself `draining` at its next heartbeat
//! and is left out of placement. The bucket's max age (60 s) only cleans up.
//!
//! Placement ([`rendezvous`]): the node for a key is the live node with the highest
//! `hash(node id, key)`, so every Gateway picks the same node for one entity, and when a node
//! leaves only its own keys move.
//!
//! ```
//! use cloudlysis_runtime::registry::{NodeEntry, rendezvous};
//!
//! let nodes: Vec<NodeEntry> = ["a", "b", "c"].iter().map(|id| NodeEntry::new("aggregate", *id, "http://x:1")).collect();
//! let first = rendezvous("acme/account/a-1", &nodes).unwrap().id.clone();
//! assert_eq!(rendezvous("acme/account/a-1", &nodes).unwrap().id, first);
//! ```

use std::time::Duration;

use async_nats::jetstream;
use serde::{Deserialize, Serialize};

use crate::kv::{BucketError, BucketPolicy, ensure_bucket};

/// `node.advertise_addr`: where other processes reach this node's gRPC services.
pub const ADVERTISE_ADDR: crate::config::Setting = crate::config::Setting {
    key: "node.advertise_addr",
    env: "CLOUDLYSIS_NODE_ADVERTISE_ADDR",
    flag: "",
    doc: "gRPC address this node registers for Gateways to reach, e.g. http://10.0.0.5:50051 [default: the bound gRPC address; required when bound to 0.0.0.0]",
};

/// `aggregate.advertise_addr`: where other processes reach the aggregate node of a
/// `cloudlysis all` process (its three nodes cannot share [`ADVERTISE_ADDR`]).
pub const AGGREGATE_ADVERTISE_ADDR: crate::config::Setting = crate::config::Setting {
    key: "aggregate.advertise_addr",
    env: "CLOUDLYSIS_AGGREGATE_ADVERTISE_ADDR",
    flag: "",
    doc: "cloudlysis all with registry placement: gRPC address its aggregate node registers [default: the bound aggregate.grpc_addr]",
};

/// `projection.advertise_addr`: [`AGGREGATE_ADVERTISE_ADDR`] for the projection node.
pub const PROJECTION_ADVERTISE_ADDR: crate::config::Setting = crate::config::Setting {
    key: "projection.advertise_addr",
    env: "CLOUDLYSIS_PROJECTION_ADVERTISE_ADDR",
    flag: "",
    doc: "cloudlysis all with registry placement: gRPC address its projection node registers [default: the bound projection.grpc_addr]",
};

/// `runner.advertise_addr`: [`AGGREGATE_ADVERTISE_ADDR`] for the runner node.
pub const RUNNER_ADVERTISE_ADDR: crate::config::Setting = crate::config::Setting {
    key: "runner.advertise_addr",
    env: "CLOUDLYSIS_RUNNER_ADVERTISE_ADDR",
    flag: "",
    doc: "cloudlysis all with registry placement: gRPC address its runner node registers [default: the bound runner.grpc_addr]",
};

/// The registry bucket.
pub const NODES_BUCKET: &str = "cloudlysis_nodes";
/// How often a node refreshes its entry.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long an entry counts as live after it was last seen.
pub const TTL: Duration = Duration::from_secs(3);
/// `node.leave_grace_ms`: how long a stopping node keeps serving after it left the registry.
pub const LEAVE_GRACE: crate::config::Setting = crate::config::Setting {
    key: "node.leave_grace_ms",
    env: "CLOUDLYSIS_NODE_LEAVE_GRACE_MS",
    flag: "",
    doc: "on SIGTERM a node first leaves the node registry, then keeps serving this long (calls Gateways had already placed on it arrive and are answered) before it stops [default: 1000, 0 – 60000]",
};
/// Default of [`LEAVE_GRACE`].
pub const DEFAULT_LEAVE_GRACE: Duration = Duration::from_secs(1);

/// Schema version of [`NodeEntry`].
pub const SCHEMA_VERSION: u32 = 1;

/// The registry bucket's policy.
pub fn nodes() -> BucketPolicy {
    BucketPolicy {
        name: NODES_BUCKET,
        description: "Cloudlysis node registry: one entry per live node, refreshed by heartbeats",
        history: 1,
        max_age: Duration::from_secs(60),
    }
}

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `aggregate`, `projection` or `runner`.
    pub role: String,
    /// The node's id (a subject token).
    pub id: String,
    /// Where its gRPC services are (`http://host:port`).
    pub grpc_addr: String,
    /// The binary's version.
    pub version: String,
    /// What it serves: aggregate types, views, workflows and effect types.
    #[serde(default)]
    pub behaviours: Vec<String>,
    /// Draining: no new work.
    #[serde(default)]
    pub draining: bool,
    /// Load (calls in flight), for spreading reads.
    #[serde(default)]
    pub load: u64,
}

impl NodeEntry {
    /// An entry of `role` and `id` at `grpc_addr`, serving nothing yet.
    pub fn new(role: &str, id: &str, grpc_addr: &str) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            role: role.into(),
            id: id.into(),
            grpc_addr: grpc_addr.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            behaviours: Vec::new(),
            draining: false,
            load: 0,
        }
    }

    /// The entry's KV key.
    pub fn key(&self) -> String {
        format!("{}.{}", self.role, self.id)
    }
}

/// FNV-1a, 64 bit: stable across processes and versions (placement must agree everywhere).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // A final mix, so ids that differ in one byte spread over the whole range.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The node `key` is placed on among `nodes` (highest random weight), or `None` when there is
/// none.
pub fn rendezvous<'a>(key: &str, nodes: &'a [NodeEntry]) -> Option<&'a NodeEntry> {
    nodes.iter().max_by_key(|n| (fnv1a(&[&n.id, key]), &n.id))
}

/// A node's registration: refreshed every [`HEARTBEAT`] from `describe` until dropped or
/// [`Registration::deregister`]ed.
pub struct Registration {
    task: tokio::task::JoinHandle<()>,
    kv: jetstream::kv::Store,
    key: String,
    describe: std::sync::Arc<dyn Fn() -> NodeEntry + Send + Sync>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .finish()
    }
}

/// Registers the node `describe` returns (called at every heartbeat, so `draining` and `load`
/// stay current). A failed heartbeat is logged and tried again at the next one.
pub async fn register(
    js: &jetstream::Context,
    describe: impl Fn() -> NodeEntry + Send + Sync + 'static,
) -> Result<Registration, BucketError> {
    let describe: std::sync::Arc<dyn Fn() -> NodeEntry + Send + Sync> =
        std::sync::Arc::new(describe);
    let kv = ensure_bucket(js, &nodes()).await?;
    let first = describe();
    let key = first.key();
    let put = |kv: jetstream::kv::Store, entry: NodeEntry| async move {
        let body = serde_json::to_vec(&entry).unwrap_or_default();
        tokio::time::timeout(HEARTBEAT, kv.put(entry.key(), body.into()))
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
    };
    put(kv.clone(), first).await.map_err(|reason| BucketError {
        bucket: NODES_BUCKET.into(),
        reason,
    })?;
    let store = kv.clone();
    let heartbeat = describe.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = put(store.clone(), heartbeat()).await {
                tracing::warn!(error = %e, "registry heartbeat failed");
            }
        }
    });
    Ok(Registration {
        task,
        kv,
        key,
        describe,
    })
}

impl Registration {
    /// Writes the entry now rather than at the next heartbeat (a runner that starts draining
    /// says so at once).
    pub async fn refresh(&self) {
        let entry = (self.describe)();
        let body = serde_json::to_vec(&entry).unwrap_or_default();
        if let Ok(Err(e)) =
            tokio::time::timeout(HEARTBEAT, self.kv.put(&self.key, body.into())).await
        {
            tracing::warn!(error = %e, "registry refresh failed");
        }
    }

    /// Stops the heartbeats and removes the entry: Gateways watching the registry stop placing
    /// work on this node at once. The node keeps serving what was already sent to it.
    pub async fn leave(&self) {
        self.task.abort();
        let _ = tokio::time::timeout(HEARTBEAT, self.kv.delete(&self.key)).await;
    }

    /// [`leave`](Self::leave), consuming the registration.
    pub async fn deregister(self) {
        self.leave().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaving_node_moves_only_its_own_keys() {
        let nodes: Vec<NodeEntry> = (0..4)
            .map(|i| NodeEntry::new("aggregate", &format!("n{i}"), "http://x:1"))
            .collect();
        let keys: Vec<String> = (0..2000).map(|i| format!("acme/account/a-{i}")).collect();
        let before: Vec<String> = keys
            .iter()
            .map(|k| rendezvous(k, &nodes).unwrap().id.clone())
            .collect();
        // Spread: every node gets a fair part.
        for n in &nodes {
            let mine = before.iter().filter(|id| **id == n.id).count();
            assert!((300..=700).contains(&mine), "{}: {mine}", n.id);
        }
        let rest: Vec<NodeEntry> = nodes.iter().filter(|n| n.id != "n2").cloned().collect();
        for (k, was) in keys.iter().zip(&before) {
            let now = &rendezvous(k, &rest).unwrap().id;
            if was != "n2" {
                assert_eq!(now, was, "{k} moved although its node stayed");
            }
        }
        assert!(rendezvous("k", &[]).is_none());
    }
}
