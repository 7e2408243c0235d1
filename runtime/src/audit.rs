//! The audit trail: who did what to which target, when, and how it ended — written by the node
//! that carries out an operator verb (instance pause, cancel, …; poison redrive, …).
//!
//! Records live in the KV bucket [`AUDIT_BUCKET`] (kept 90 days) under
//! `<unix ms, 16 digits>-<uuid>`, so keys sort by time:
//!
//! ```json
//! {"schema_version":1,"time":"2026-12-02T01:00:00Z","actor":"ops@acme","tenant":"acme",
//!  "action":"workflow.cancel","target":"transfer/t-1","outcome":"ok","detail":"…"}
//! ```

use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use crate::kv::{BucketError, BucketPolicy, ensure_bucket};

/// KV bucket of audit records.
pub const AUDIT_BUCKET: &str = "cloudlysis_audit";
/// Record format version.
pub const SCHEMA_VERSION: u32 = 1;

/// The audit bucket's policy: one value per key, kept 90 days.
pub fn bucket() -> BucketPolicy {
    BucketPolicy {
        name: AUDIT_BUCKET,
        description: "Cloudlysis audit trail of operator actions",
        history: 1,
        max_age: Duration::from_secs(90 * 24 * 3600),
    }
}

/// Opens (or creates) the audit bucket.
pub async fn open(js: &jetstream::Context) -> Result<kv::Store, BucketError> {
    ensure_bucket(js, &bucket()).await
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Record format version.
    pub schema_version: u32,
    /// When (RFC 3339 UTC).
    pub time: String,
    /// Who (the authenticated subject; `unknown` when no one was named).
    pub actor: String,
    /// On whose data.
    pub tenant: String,
    /// What (`workflow.pause`, `workflow.cancel`, …).
    pub action: String,
    /// On what (`<workflow>/<instance>`, …).
    pub target: String,
    /// `ok` or `failed` — or the action's own word for what happened (a poison verb's
    /// `applied`, `purged`, `already_gone`).
    pub outcome: String,
    /// More about it: what was done, or why it failed.
    #[serde(default)]
    pub detail: String,
}

impl AuditRecord {
    /// A record stamped now.
    pub fn new(
        actor: &str,
        tenant: &str,
        action: &str,
        target: &str,
        outcome: Result<String, String>,
    ) -> Self {
        let (outcome, detail) = match outcome {
            Ok(detail) => ("ok", detail),
            Err(e) => ("failed", e),
        };
        Self::with_outcome(actor, tenant, action, target, outcome, &detail)
    }

    /// A record stamped now with an action's own `outcome` word (`applied`, `purged`,
    /// `already_gone`, …) and its `detail`.
    pub fn with_outcome(
        actor: &str,
        tenant: &str,
        action: &str,
        target: &str,
        outcome: &str,
        detail: &str,
    ) -> Self {
        let (outcome, detail) = (outcome.to_string(), detail.to_string());
        Self {
            schema_version: SCHEMA_VERSION,
            time: crate::time::rfc3339(SystemTime::now()),
            actor: if actor.is_empty() {
                "unknown".into()
            } else {
                actor.to_string()
            },
            tenant: tenant.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            outcome,
            detail,
        }
    }

    /// Its KV key: time first, so keys sort by time.
    pub fn key(&self) -> String {
        let ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("{ms:016}-{}", uuid::Uuid::new_v4().simple())
    }
}

/// Writes `record` (bounded by `timeout`); a failure is returned, never hidden.
pub async fn write(
    store: &kv::Store,
    record: &AuditRecord,
    timeout: Duration,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout, store.put(record.key(), bytes.into()))
        .await
        .map_err(|_| "writing the audit record timed out".to_string())?
        .map(|_| ())
        .map_err(|e| format!("writing the audit record: {e}"))
}

/// Records an operator's verb: writes an [`AuditRecord`] (bounded by `timeout`) and logs a
/// failure instead of returning it — the verb itself happened, or was refused, either way.
pub async fn record(
    store: &kv::Store,
    (actor, tenant): (&str, &str),
    action: &str,
    target: &str,
    outcome: Result<String, String>,
    timeout: Duration,
) {
    let record = AuditRecord::new(actor, tenant, action, target, outcome);
    if let Err(e) = write(store, &record, timeout).await {
        tracing::warn!(action, target, error = %e, "audit record not written");
    }
}

/// [`record`] with the action's own outcome word and detail (see
/// [`AuditRecord::with_outcome`]).
pub async fn record_outcome(
    store: &kv::Store,
    (actor, tenant): (&str, &str),
    action: &str,
    target: &str,
    (outcome, detail): (&str, &str),
    timeout: Duration,
) {
    let record = AuditRecord::with_outcome(actor, tenant, action, target, outcome, detail);
    if let Err(e) = write(store, &record, timeout).await {
        tracing::warn!(action, target, error = %e, "audit record not written");
    }
}
