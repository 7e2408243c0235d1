//! `node.admin.v1.NodeAdmin`: describes a node — role, version, node id, uptime, the behaviours
//! it serves, whether it takes work, what it holds through a store outage, and its supervision
//! tree with mailbox statistics.

use std::time::Duration;

use cloudlysis_proto::node::{
    self as pb, DescribeRequest, DescribeResponse, node_admin_server::NodeAdmin,
};
use cloudlysis_supervision::{SupervisorRef, SupervisorSnapshot};
use tonic::{Request, Response, Status};

/// How long `Describe` waits for the tree.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a node takes work now, and (runners) its drain state.
pub type NodeStateFn = std::sync::Arc<dyn Fn() -> (bool, String) + Send + Sync>;

/// The `NodeAdmin` service of one node.
#[derive(Clone)]
pub struct NodeAdminService {
    role: &'static str,
    node_id: String,
    root: SupervisorRef,
    started: std::time::Instant,
    behaviours: Vec<String>,
    state: Option<NodeStateFn>,
    /// The label of the holds this node reports (`"view"`, `"handler"`; see [`Self::holds`]).
    holds: Option<&'static str>,
}

impl NodeAdminService {
    /// A service describing the node whose root supervisor is `root` (started now, serving).
    pub fn new(role: &'static str, node_id: impl Into<String>, root: SupervisorRef) -> Self {
        Self {
            role,
            node_id: node_id.into(),
            root,
            started: std::time::Instant::now(),
            behaviours: Vec::new(),
            state: None,
            holds: None,
        }
    }

    /// Reports the messages held through a store outage under `label` (`"view"` for a
    /// projection node, `"handler"` for a runner) in `Describe`'s `held`. (Holds are counted per
    /// process; each role reports its own kind.)
    pub fn holds(mut self, label: &'static str) -> Self {
        self.holds = Some(label);
        self
    }

    /// Names what the node serves (aggregate types, views, workflows and effect types).
    pub fn behaviours(mut self, behaviours: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.behaviours = behaviours.into_iter().map(Into::into).collect();
        self
    }

    /// Reports whether the node takes work, and its drain state, from `state`.
    pub fn state(mut self, state: NodeStateFn) -> Self {
        self.state = Some(state);
        self
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> pb::node_admin_server::NodeAdminServer<Self> {
        pb::node_admin_server::NodeAdminServer::new(self)
    }
}

#[tonic::async_trait]
impl NodeAdmin for NodeAdminService {
    async fn describe(
        &self,
        _request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        let tree = self
            .root
            .snapshot(DESCRIBE_TIMEOUT)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (serving, drain_state) = self
            .state
            .as_ref()
            .map_or((true, String::new()), |state| state());
        Ok(Response::new(DescribeResponse {
            role: self.role.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_id: self.node_id.clone(),
            supervision: Some(to_proto(&tree)),
            uptime_seconds: self.started.elapsed().as_secs(),
            behaviours: self.behaviours.clone(),
            serving,
            drain_state,
            held: self.holds.map_or_else(Vec::new, |label| {
                crate::holding::held_now(label)
                    .into_iter()
                    .map(|(name, messages, oldest_seconds)| pb::Held {
                        kind: label.to_string(),
                        name: name.to_string(),
                        messages: messages as u64,
                        oldest_seconds,
                    })
                    .collect()
            }),
        }))
    }
}

/// Converts a snapshot to its wire form.
pub fn to_proto(s: &SupervisorSnapshot) -> pb::SupervisorNode {
    pb::SupervisorNode {
        name: s.name.clone(),
        strategy: s.strategy.clone(),
        status: s.status.as_str().to_string(),
        restarts: s.restarts,
        children: s
            .children
            .iter()
            .map(|c| pb::ChildNode {
                name: c.name.clone(),
                kind: c.kind.clone(),
                status: c.status.as_str().to_string(),
                restarts: c.restarts,
                last_failure: c.last_failure.clone(),
                last_failure_at: c.last_failure_at.clone(),
                mailbox: c.mailbox.map(|m| pb::MailboxStats {
                    depth: m.depth,
                    capacity: m.capacity,
                }),
            })
            .collect(),
        supervisors: s.supervisors.iter().map(to_proto).collect(),
    }
}
