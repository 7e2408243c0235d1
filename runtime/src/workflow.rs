//! The Runner's wire formats: effect commands on `WORKFLOW_COMMANDS`, effect results and
//! workflow events on `WORKFLOW_EVENTS`.
//!
//! | message | subject | `Nats-Msg-Id` | published by |
//! |---|---|---|---|
//! | [`EffectCommand`] | `tenant.<t>.effect.<effect_type>` | `command_id` | the outbox relay |
//! | [`EffectResult`] | `tenant.<t>.effect_result.<effect_type>` | `<command_id>:result` ([`result_msg_id`]) | the effect worker |
//! | [`WorkflowEvent`] | `tenant.<t>.workflow.<name>.<instance>` | `event_id` | the outbox relay |
//!
//! A durable timer is an effect command of the reserved type [`TIMER_EFFECT`] (`_timer`) whose
//! payload is a [`TimerPayload`]: the runner's timer consumer holds it until it is due, then
//! publishes its result, which the workflow receives as the timer firing. Effect types starting
//! with `_` are reserved for the runtime.
//!
//! ```json
//! {"schema_version":1,"command_id":"0193…","tenant_id":"acme","effect_type":"withdraw",
//!  "workflow":"transfer","instance":"t-1","label":"withdraw","issued_at_ms":1764633600000,
//!  "deadline_ms":1764633630000,"payload":{"account":"a","amount":5}}
//! ```
//!
//! Decoders ignore unknown fields and accept missing optional ones; `schema_version` changes
//! only with the wire format. Times are Unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The shortest drain grace a runner takes (`runner.drain_grace_ms`, a drain call's `grace_ms`).
pub const DRAIN_GRACE_MIN: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest drain grace a runner takes: a drain waits at most an hour for in-flight effects.
pub const DRAIN_GRACE_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

/// Version of every format in this module.
pub const SCHEMA_VERSION: u32 = 1;

/// The reserved effect type of durable timers.
pub const TIMER_EFFECT: &str = "_timer";

/// True for effect types the runtime reserves (they start with `_`).
pub fn is_reserved_effect_type(effect_type: &str) -> bool {
    effect_type.starts_with('_')
}

/// The `Nats-Msg-Id` of the result of command `command_id`.
pub fn result_msg_id(command_id: &str) -> String {
    format!("{command_id}:result")
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An effect command: what a workflow instance asked an effect worker to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectCommand {
    /// Format version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Unique id of the command: its `Nats-Msg-Id` and the idempotency key effects pass on.
    pub command_id: String,
    /// Tenant of the instance that issued it.
    pub tenant_id: String,
    /// Effect type (a subject token).
    pub effect_type: String,
    /// Workflow that issued it.
    pub workflow: String,
    /// Instance that issued it.
    pub instance: String,
    /// The workflow's name for this step (returned with the result; defaults to the effect type).
    #[serde(default)]
    pub label: String,
    /// When the instance issued it.
    pub issued_at_ms: u64,
    /// No attempt starts after this instant; a command not executed by then fails with
    /// "deadline passed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// The effect's typed command, as JSON.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Correlation id of the request that started the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Trace context of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// How an effect command ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EffectOutcome {
    /// The effect succeeded.
    Ok {
        /// The effect's typed result, as JSON.
        #[serde(default)]
        output: serde_json::Value,
    },
    /// The effect failed for good: a permanent error, retries exhausted, or its deadline passed.
    Failed {
        /// The last error.
        error: String,
        /// True when an attempt may have taken effect although no success was seen (it timed
        /// out or lost its connection, and no later attempt gave a definitive answer).
        #[serde(default)]
        outcome_unknown: bool,
    },
}

/// The result of an effect command, routed back to the instance that issued it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectResult {
    /// Format version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The command this answers.
    pub command_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Effect type.
    pub effect_type: String,
    /// Workflow that issued the command.
    pub workflow: String,
    /// Instance that issued the command.
    pub instance: String,
    /// The command's label.
    #[serde(default)]
    pub label: String,
    /// When the outcome was recorded.
    pub completed_at_ms: u64,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Success or failure.
    pub outcome: EffectOutcome,
    /// Correlation id of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Trace context of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl EffectResult {
    /// True when the effect succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, EffectOutcome::Ok { .. })
    }

    /// The error of a failed effect.
    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            EffectOutcome::Failed { error, .. } => Some(error),
            EffectOutcome::Ok { .. } => None,
        }
    }

    /// True when a failed effect may have taken effect anyway (see
    /// [`EffectOutcome::Failed`]'s `outcome_unknown`).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self.outcome,
            EffectOutcome::Failed {
                outcome_unknown: true,
                ..
            }
        )
    }

    /// The output of a successful effect decoded as `T` (`None` when it failed).
    pub fn output_as<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Option<Result<T, serde_json::Error>> {
        match &self.outcome {
            EffectOutcome::Ok { output } => Some(serde_json::from_value(output.clone())),
            EffectOutcome::Failed { .. } => None,
        }
    }
}

/// The payload of a timer command ([`TIMER_EFFECT`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerPayload {
    /// The workflow's name for the timer.
    pub name: String,
    /// When it fires.
    pub fire_at_ms: u64,
}

/// Workflow event types.
pub mod event_types {
    /// An instance was started.
    pub const STARTED: &str = "started";
    /// An instance reacted to an aggregate event.
    pub const EVENT_RECEIVED: &str = "event_received";
    /// An instance received an effect result.
    pub const RESULT_RECEIVED: &str = "result_received";
    /// A timer of the instance fired.
    pub const TIMER_FIRED: &str = "timer_fired";
    /// An instance issued an effect command.
    pub const EFFECT_ISSUED: &str = "effect_issued";
    /// An instance completed.
    pub const COMPLETED: &str = "completed";
    /// An instance failed.
    pub const FAILED: &str = "failed";
    /// An operator cancelled an instance (its compensation follows).
    pub const CANCEL_REQUESTED: &str = "cancel_requested";
}

/// One fact of an instance's history, published after the step that produced it committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowEvent {
    /// Format version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Unique id (also `Nats-Msg-Id`).
    pub event_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Workflow.
    pub workflow: String,
    /// Instance.
    pub instance: String,
    /// The instance step that produced it (1 = the start).
    pub step: u64,
    /// One of [`event_types`].
    pub event_type: String,
    /// When the step committed.
    pub occurred_at_ms: u64,
    /// Details (the effect issued, the result received, the failure reason, ...).
    #[serde(default)]
    pub data: serde_json::Value,
    /// Correlation id of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Trace context of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders_ignore_unknown_fields_and_accept_missing_optionals() {
        let json = r#"{"schema_version":1,"command_id":"c","tenant_id":"t","effect_type":"e",
            "workflow":"w","instance":"i","issued_at_ms":1,"future":true}"#;
        let c: EffectCommand = serde_json::from_str(json).unwrap();
        assert_eq!(c.label, "");
        assert!(c.deadline_ms.is_none());
        let back = serde_json::to_value(&c).unwrap();
        assert!(back.get("deadline_ms").is_none());
        let r = r#"{"schema_version":1,"command_id":"c","tenant_id":"t","effect_type":"e",
            "workflow":"w","instance":"i","completed_at_ms":2,
            "outcome":{"status":"failed","error":"boom"}}"#;
        let r: EffectResult = serde_json::from_str(r).unwrap();
        assert_eq!(
            r.outcome,
            EffectOutcome::Failed {
                error: "boom".into(),
                outcome_unknown: false
            }
        );
    }

    #[test]
    fn outcomes_are_tagged_by_status() {
        let ok = serde_json::to_value(EffectOutcome::Ok {
            output: serde_json::json!({"v": 1}),
        })
        .unwrap();
        assert_eq!(ok, serde_json::json!({"status": "ok", "output": {"v": 1}}));
        assert_eq!(result_msg_id("abc"), "abc:result");
        assert!(is_reserved_effect_type(TIMER_EFFECT));
        assert!(!is_reserved_effect_type("withdraw"));
    }
}
