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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

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

/// Formats a time as RFC 3339 UTC with second precision (`2026-11-26T23:40:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_735_200)),
            "2026-11-26T23:20:00Z"
        );
    }
}
