//! NATS KV buckets Cloudlysis uses, with one policy each, and [`ensure_bucket`]: create a missing
//! bucket or use the existing one. Existing buckets are never updated — and, unlike streams,
//! not validated yet: an operator who changes a bucket's max age changes how long records live.
//!
//! | bucket | holds | history | max age |
//! |---|---|---|---|
//! | `cloudlysis_poison` | poison records (see [`crate::poison`]) | 1 | none |
//! | `cloudlysis_idempotency` | command results by idempotency key | 1 | 24 h |
//! | `cloudlysis_views` | view documents, `<view>.<tenant>.<key>` | 1 | none |
//! | `cloudlysis_checkpoints` | view checkpoints, `<view>` | 1 | none |
//! | `cloudlysis_workflows` | workflow instances, `<workflow>.<tenant>.<instance>` | 1 | none |
//! | `cloudlysis_outbox` | outbox index: instances with unpublished entries, `<workflow>.<tenant>.<instance>.<step>` | 1 | none |
//! | `cloudlysis_effects` | effect ledger: attempts and outcome per command, `<effect_type>.<tenant>.<command_id>` | 1 | 30 days |
//! | `cloudlysis_snapshots` | aggregate snapshots (opt-in per aggregate type), `<aggregate_type>.<tenant>.<aggregate_id>` | 1 | none |

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};

/// One bucket's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPolicy {
    /// Bucket name.
    pub name: &'static str,
    /// What it holds.
    pub description: &'static str,
    /// Revisions kept per key.
    pub history: i64,
    /// Max age of entries; zero keeps them forever.
    pub max_age: Duration,
}

/// The poison-record bucket.
pub fn poison() -> BucketPolicy {
    BucketPolicy {
        name: crate::poison::POISON_BUCKET,
        description: "Cloudlysis poison records: messages quarantined after repeated failure",
        history: 1,
        max_age: Duration::ZERO,
    }
}

/// Name of the idempotency bucket.
pub const IDEMPOTENCY_BUCKET: &str = "cloudlysis_idempotency";

/// The idempotency bucket: the first result of a command per idempotency key, kept 24 h.
pub fn idempotency() -> BucketPolicy {
    BucketPolicy {
        name: IDEMPOTENCY_BUCKET,
        description: "Cloudlysis command results by idempotency key",
        history: 1,
        max_age: Duration::from_secs(24 * 3600),
    }
}

/// The KV key of an idempotency record: `<tenant>.<aggregate_type>.<aggregate_id>.<key>`; every
/// part is a validated token.
pub fn idempotency_key(
    tenant: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    key: &str,
) -> String {
    [tenant, ".", aggregate_type, ".", aggregate_id, ".", key].concat()
}

/// Name of the aggregate-snapshot bucket.
pub const SNAPSHOTS_BUCKET: &str = "cloudlysis_snapshots";

/// The aggregate-snapshot bucket: the latest snapshot of each entity of an aggregate type that
/// takes snapshots. A lost snapshot only costs a longer replay, so one revision is kept.
pub fn snapshots() -> BucketPolicy {
    BucketPolicy {
        name: SNAPSHOTS_BUCKET,
        description: "Cloudlysis aggregate snapshots",
        history: 1,
        max_age: Duration::ZERO,
    }
}

/// The KV key of an entity's snapshot: `<aggregate_type>.<tenant>.<aggregate_id>`; every part
/// is a validated token.
pub fn snapshot_key(aggregate_type: &str, tenant: &str, aggregate_id: &str) -> String {
    [aggregate_type, ".", tenant, ".", aggregate_id].concat()
}

/// Name of the view-document bucket.
pub const VIEWS_BUCKET: &str = "cloudlysis_views";
/// Name of the view-checkpoint bucket.
pub const CHECKPOINTS_BUCKET: &str = "cloudlysis_checkpoints";

/// The view-document bucket.
pub fn views() -> BucketPolicy {
    BucketPolicy {
        name: VIEWS_BUCKET,
        description: "Cloudlysis view documents",
        history: 1,
        max_age: Duration::ZERO,
    }
}

/// The view-checkpoint bucket: each view's generation record (which generation answers
/// queries, which one a rebuild is building) under [`view_generation_key`], and each view
/// generation's checkpoint under [`view_checkpoint_key`] (recorded for operators at most once a
/// second; nodes derive the live value from the durable consumer's ack floor).
pub fn checkpoints() -> BucketPolicy {
    BucketPolicy {
        name: CHECKPOINTS_BUCKET,
        description: "Cloudlysis view checkpoints and generations",
        history: 1,
        max_age: Duration::ZERO,
    }
}

/// The KV key of a view document: `<view>.<tenant>.<key>`; every part is a validated token, so
/// one tenant's keys can never be addressed through another tenant's prefix.
pub fn view_document_key(view: &str, tenant: &str, key: &str) -> String {
    // Built for every event a view applies: one allocation, no formatting machinery.
    [view, ".", tenant, ".", key].concat()
}

/// The key space of one generation of a view: `<view>` for generation 0, `<view>=g<n>` for the
/// generation built by the n-th rebuild. `=` is not a token character, so no view name collides
/// with another view's generation. Document keys are [`view_document_key`]`(space, tenant, key)`.
pub fn view_space(view: &str, generation: u32) -> String {
    match generation {
        0 => view.to_string(),
        n => format!("{view}=g{n}"),
    }
}

/// The subject filter of every document of one view generation inside the views bucket's
/// stream (for purging a retired generation): `$KV.<bucket>.<space>.>`.
pub fn view_space_filter(space: &str) -> String {
    format!("$KV.{VIEWS_BUCKET}.{space}.>")
}

/// Name of the stream behind the views bucket.
pub fn views_stream() -> String {
    format!("KV_{VIEWS_BUCKET}")
}

/// The key of a view's generation record in the checkpoints bucket: `<view>.generation`.
pub fn view_generation_key(view: &str) -> String {
    format!("{view}.generation")
}

/// The key of a view generation's recorded checkpoint in the checkpoints bucket:
/// `<space>.checkpoint`, holding `{"sequence", "generation", "updated_at"}`.
pub fn view_checkpoint_key(space: &str) -> String {
    format!("{space}.checkpoint")
}

/// The key, in the checkpoints bucket, of the views the Single-mode consumer feeds (a JSON list
/// of names).
pub const SINGLE_MODE_VIEWS_KEY: &str = "single-mode.views";

/// Name of the workflow-instance bucket.
pub const WORKFLOWS_BUCKET: &str = "cloudlysis_workflows";
/// Name of the outbox-index bucket.
pub const OUTBOX_BUCKET: &str = "cloudlysis_outbox";
/// Name of the effect-ledger bucket.
pub const EFFECTS_BUCKET: &str = "cloudlysis_effects";

/// The workflow-instance bucket: one record per instance (state, pending commands, armed
/// timers, outbox), every update revision-checked.
pub fn workflows() -> BucketPolicy {
    BucketPolicy {
        name: WORKFLOWS_BUCKET,
        description: "Cloudlysis workflow instances",
        history: 1,
        max_age: Duration::ZERO,
    }
}

/// The outbox index: one key per instance step whose outbox entries may not be published yet,
/// so a runner finds pending work at start without reading every instance. Entries are removed
/// from the bucket's stream (no delete markers) once the outbox is clear.
pub fn outbox() -> BucketPolicy {
    BucketPolicy {
        name: OUTBOX_BUCKET,
        description: "Cloudlysis outbox index: instance steps with unpublished commands",
        history: 1,
        max_age: Duration::ZERO,
    }
}

/// The effect ledger: per command, the attempts made and the outcome, so an effect whose outcome
/// is recorded is never executed again. Kept 30 days: longer than `WORKFLOW_COMMANDS` keeps a
/// command (7 days by default).
pub fn effects() -> BucketPolicy {
    BucketPolicy {
        name: EFFECTS_BUCKET,
        description: "Cloudlysis effect ledger: attempts and outcomes by command id",
        history: 1,
        max_age: Duration::from_secs(30 * 24 * 3600),
    }
}

/// The KV key of a workflow instance: `<workflow>.<tenant>.<instance>`.
pub fn workflow_instance_key(workflow: &str, tenant: &str, instance: &str) -> String {
    format!("{workflow}.{tenant}.{instance}")
}

/// The outbox-index key of step `step` of an instance: `<instance key>.<step>`.
pub fn outbox_index_key(instance_key: &str, step: u64) -> String {
    format!("{instance_key}.{step}")
}

/// The subject of an outbox-index key inside its bucket's stream (to remove it for good).
pub fn outbox_index_subject(index_key: &str) -> String {
    format!("$KV.{OUTBOX_BUCKET}.{index_key}")
}

/// Name of the stream behind the outbox-index bucket.
pub fn outbox_stream() -> String {
    format!("KV_{OUTBOX_BUCKET}")
}

/// The effect-ledger key of a command: `<effect_type>.<tenant>.<command_id>`.
pub fn effect_ledger_key(effect_type: &str, tenant: &str, command_id: &str) -> String {
    format!("{effect_type}.{tenant}.{command_id}")
}

/// A bucket could not be opened or created.
#[derive(Debug, thiserror::Error)]
#[error("KV bucket {bucket}: {reason}")]
pub struct BucketError {
    /// Bucket name.
    pub bucket: String,
    /// What went wrong.
    pub reason: String,
}

/// Opens the bucket, creating it from the policy when missing.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    policy: &BucketPolicy,
) -> Result<kv::Store, BucketError> {
    if let Ok(store) = js.get_key_value(policy.name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: policy.name.to_string(),
        description: policy.description.to_string(),
        history: policy.history,
        max_age: policy.max_age,
        storage: StorageType::File,
        num_replicas: crate::stream::replicas(),
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Lost a creation race: the other creator's bucket is just as good.
        Err(create_err) => js
            .get_key_value(policy.name)
            .await
            .map_err(|_| BucketError {
                bucket: policy.name.to_string(),
                reason: create_err.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_keys_are_exact() {
        assert_eq!(view_space("balances", 0), "balances");
        assert_eq!(view_space("balances", 2), "balances=g2");
        assert_eq!(
            view_document_key(&view_space("balances", 2), "acme", "acc-1"),
            "balances=g2.acme.acc-1"
        );
        assert_eq!(
            view_space_filter("balances=g2"),
            "$KV.cloudlysis_views.balances=g2.>"
        );
        assert_eq!(view_generation_key("balances"), "balances.generation");
        assert_eq!(view_checkpoint_key("balances=g2"), "balances=g2.checkpoint");
        assert_eq!(views_stream(), "KV_cloudlysis_views");
    }

    #[test]
    fn generation_spaces_never_collide_with_view_names() {
        // View names are subject tokens ([A-Za-z0-9_-]); a generation space always holds `=`.
        let space = view_space("balances", 1);
        assert!(crate::subject::validate_token(&space).is_err() || space.contains('='));
        assert_ne!(view_space("balances", 1), view_space("balances-g1", 0));
        assert_ne!(view_space("balances", 1), view_space("balances_g1", 0));
    }
}
