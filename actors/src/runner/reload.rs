//! `RunnerAdmin/Reload`: re-read the configuration and apply what may change live
//! ([`super::settings::LiveSettings`]). Everything is checked before anything changes: an
//! invalid configuration is refused with the setting named and the old one stays in force.
//! A lower effect concurrency drains that effect's consumer first, so no command in flight is
//! dropped; a disabled workflow's consumers are drained and stopped, and its starts refused.

use std::sync::atomic::Ordering;

use tonic::Status;

use super::node::RunnerNode;
use super::settings::LiveSettings;

impl RunnerNode {
    /// Re-reads the configuration and applies it; what changed.
    pub async fn reload(&self) -> Result<Vec<String>, Status> {
        let Some(source) = self.inner.reload.clone() else {
            return Err(Status::failed_precondition(
                "this runner was started without a configuration source to reload",
            ));
        };
        let _one_at_a_time = self.inner.reload_lock.lock().await;
        let src = source().map_err(Status::invalid_argument)?;
        let next =
            LiveSettings::load(&src, &self.workflows(), &self.effect_types()).map_err(|e| {
                Status::invalid_argument(format!("configuration refused, nothing changed: {e}"))
            })?;
        let mut changes = Vec::new();
        for slot in &self.inner.effects {
            let want = next.concurrency(slot.effect_type);
            let have = slot.concurrency.load(Ordering::SeqCst);
            if want != have {
                self.replace_effect_consumer(slot, want)
                    .await
                    .map_err(|e| {
                        Status::unavailable(format!("effect `{}`: {e}", slot.effect_type))
                    })?;
                changes.push(format!(
                    "effect `{}`: concurrency {have} -> {want}",
                    slot.effect_type
                ));
            }
            let attempts = next
                .effect_max_attempts
                .get(slot.effect_type)
                .copied()
                .unwrap_or(0);
            let before = slot.max_attempts.swap(attempts, Ordering::SeqCst);
            if before != attempts {
                let shown = |n: u32| {
                    if n == 0 {
                        format!("{} (its policy)", slot.policy.max_attempts)
                    } else {
                        n.to_string()
                    }
                };
                changes.push(format!(
                    "effect `{}`: attempts {} -> {}",
                    slot.effect_type,
                    shown(before),
                    shown(attempts)
                ));
            }
        }
        for slot in &self.inner.workflows {
            let want = next.enabled(slot.name);
            if want != slot.enabled.load(Ordering::SeqCst) {
                self.set_workflow_enabled(slot, want)
                    .await
                    .map_err(|e| Status::unavailable(format!("workflow `{}`: {e}", slot.name)))?;
                changes.push(format!(
                    "workflow `{}` {}",
                    slot.name,
                    if want { "enabled" } else { "disabled" }
                ));
            }
        }
        *self.inner.live.lock().unwrap_or_else(|p| p.into_inner()) = next;
        if changes.is_empty() {
            changes.push("nothing changed".into());
        }
        tracing::info!(changes = %changes.join("; "), "runner configuration reloaded");
        Ok(changes)
    }
}
