//! Tree snapshots: a serde view of every supervisor and child in a node, served as JSON at
//! `GET /admin/supervision` (see [`router`]) and over `node.admin.v1.NodeAdmin`.
//!
//! ```json
//! {"name":"root","strategy":"one_for_one","status":"running","restarts":1,
//!  "children":[{"name":"consumer","kind":"jetstream_consumer","status":"running","restarts":1,
//!               "last_failure":"panicked: boom","last_failure_at":"2026-11-26T23:40:00Z",
//!               "mailbox":{"depth":3,"capacity":64}}],
//!  "supervisors":[]}
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

pub use cloudlysis_runtime::time::rfc3339;

use crate::supervisor::SupervisorRef;

/// How long `GET /admin/supervision` waits for the tree.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// Lifecycle of a child or supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Running.
    Running,
    /// Stopped, waiting for its backoff before a restart.
    Restarting,
    /// Stopped and not coming back.
    Stopped,
    /// Failed and not coming back (the supervisor escalated).
    Failed,
}

impl Status {
    /// The snake_case name used in snapshots.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }
}

/// Mailbox depth and capacity of a bounded actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MailboxStats {
    /// Messages queued or being processed.
    pub depth: u64,
    /// `max_in_flight`.
    pub capacity: u64,
}

/// One supervised child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildSnapshot {
    /// Name, unique under its supervisor.
    pub name: String,
    /// Kind (bounded; the metric label).
    pub kind: String,
    /// Status.
    pub status: Status,
    /// Times this child was restarted.
    pub restarts: u64,
    /// Reason of the last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Time of the last failure, RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<String>,
    /// Mailbox statistics, for bounded actors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<MailboxStats>,
}

/// A supervisor, its children and nested supervisors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupervisorSnapshot {
    /// Name.
    pub name: String,
    /// Strategy (`one_for_one`, `one_for_all`, `rest_for_one`).
    pub strategy: String,
    /// Status.
    pub status: Status,
    /// Restarts this supervisor performed.
    pub restarts: u64,
    /// Children in start order (nested supervisors included, with kind `supervisor`).
    pub children: Vec<ChildSnapshot>,
    /// Snapshots of nested supervisors.
    pub supervisors: Vec<SupervisorSnapshot>,
}

impl SupervisorSnapshot {
    /// Finds a child by name anywhere in the tree.
    pub fn find_child(&self, name: &str) -> Option<&ChildSnapshot> {
        self.children
            .iter()
            .find(|c| c.name == name)
            .or_else(|| self.supervisors.iter().find_map(|s| s.find_child(name)))
    }

    /// Finds a supervisor by name anywhere in the tree.
    pub fn find_supervisor(&self, name: &str) -> Option<&SupervisorSnapshot> {
        if self.name == name {
            return Some(self);
        }
        self.supervisors
            .iter()
            .find_map(|s| s.find_supervisor(name))
    }
}

/// `GET /admin/supervision`: the node's tree as JSON (503 when the root does not answer).
pub fn router(root: SupervisorRef) -> Router {
    Router::new()
        .route("/admin/supervision", get(supervision))
        .with_state(root)
}

async fn supervision(State(root): State<SupervisorRef>) -> Response {
    match root.snapshot(SNAPSHOT_TIMEOUT).await {
        Ok(snapshot) => axum::Json(snapshot).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
