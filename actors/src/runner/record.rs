//! The instance record: what the `cloudlysis_workflows` bucket holds for one workflow instance,
//! and the pure step that turns a [`Decision`] into the next record.
//!
//! One record per instance, under `<workflow>.<tenant>.<instance>`, written with a revision
//! check every time:
//!
//! ```json
//! {"schema_version":1,"workflow":"transfer","tenant":"acme","instance":"t-1",
//!  "status":"running","state_version":1,"state":{...},"step":2,
//!  "pending":{"0193…":{"effect_type":"deposit","label":"deposit","issued_at_ms":…}},
//!  "timers":{"timeout":{"timer_id":"0193…","fire_at_ms":…}},
//!  "applied_events":[],"outbox":[{"msg_id":"0193…","subject":"tenant.acme.effect.deposit",…}],
//!  "created_at_ms":…,"updated_at_ms":…}
//! ```
//!
//! The outbox holds what a step issued (effect commands, timer commands, workflow events) and
//! is written in the same revision-checked write as the new state; the relay publishes each
//! entry with its `msg_id` as `Nats-Msg-Id` and a second write clears it. `pending` and `timers`
//! are the redelivery guard: a result whose command is not pending, or a timer that is not armed
//! under the id that fired, has been applied already (or was cancelled) and never reaches
//! `react` again.

use std::collections::BTreeMap;

use cloudlysis_runtime::context::TenantId;
use cloudlysis_runtime::subject::{self, SubjectToken, validate_token};
use cloudlysis_runtime::workflow::{
    self as wire, EffectCommand, TIMER_EFFECT, TimerPayload, WorkflowEvent, event_types,
};
use serde::{Deserialize, Serialize};

use super::workflow::{Decision, FireAt, Outcome, WorkflowError};

/// Version of the record format.
pub const RECORD_SCHEMA_VERSION: u32 = 1;
/// Most aggregate-event positions an instance remembers (its redelivery guard for events).
pub const MAX_APPLIED_EVENTS: usize = 256;
/// Longest a timer may be armed ahead: the minimum retention of `WORKFLOW_COMMANDS` (1 day)
/// would drop a longer one, so the bound is that retention's floor.
pub const MAX_TIMER_AHEAD_MS: u64 = 24 * 3600 * 1000;
/// Most effect commands and timers one step may issue.
pub const MAX_ISSUED_PER_STEP: usize = 64;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Taking inputs.
    Running,
    /// Ended successfully.
    Completed,
    /// Ended with a failure.
    Failed,
}

impl InstanceStatus {
    /// The status as a word.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// An effect command whose result has not arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCommand {
    /// Effect type.
    pub effect_type: String,
    /// The workflow's label for it.
    pub label: String,
    /// When it was issued (Unix ms).
    pub issued_at_ms: u64,
}

/// An armed timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmedTimer {
    /// The command id of its timer command (a firing under another id is stale).
    pub timer_id: String,
    /// When it fires (Unix ms).
    pub fire_at_ms: u64,
}

/// What an outbox entry publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    /// An effect or timer command (`WORKFLOW_COMMANDS`).
    Command,
    /// A workflow event (`WORKFLOW_EVENTS`).
    Event,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// `Nats-Msg-Id` (the command id or event id).
    pub msg_id: String,
    /// Command or event.
    pub kind: OutboxKind,
    /// Concrete subject (built by `runtime::subject`).
    pub subject: String,
    /// The message (an [`EffectCommand`] or [`WorkflowEvent`]).
    pub payload: serde_json::Value,
}

/// One workflow instance, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Record format version ([`RECORD_SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Workflow name.
    pub workflow: String,
    /// Tenant.
    pub tenant: String,
    /// Instance id.
    pub instance: String,
    /// Running, completed or failed.
    pub status: InstanceStatus,
    /// The workflow's `SCHEMA_VERSION` when the state was written.
    pub state_version: u32,
    /// The workflow's state.
    pub state: serde_json::Value,
    /// Inputs applied (1 after the start).
    pub step: u64,
    /// Issued commands awaiting results, by command id.
    #[serde(default)]
    pub pending: BTreeMap<String, PendingCommand>,
    /// Armed timers, by name.
    #[serde(default)]
    pub timers: BTreeMap<String, ArmedTimer>,
    /// Aggregate events applied, as `(stream sequence, index in the commit)`, newest last.
    #[serde(default)]
    pub applied_events: Vec<(u64, u32)>,
    /// Messages of committed steps not yet published.
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
    /// Why the instance failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// True while paused: steps commit, their outbox waits until resumed.
    #[serde(default)]
    pub paused: bool,
    /// True once cancelled (the workflow's compensation runs).
    #[serde(default)]
    pub cancel_requested: bool,
    /// Started at (Unix ms).
    pub created_at_ms: u64,
    /// Last changed at (Unix ms).
    pub updated_at_ms: u64,
    /// Correlation id of the request that started it (carried on every command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Trace context of the start (carried on every command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// How an input relates to an instance before `react` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A result of a pending command: react to it.
    Result,
    /// The armed timer of this name fired: react to it.
    Timer(String),
    /// An event not applied yet: react to it.
    Event,
    /// Already applied (a redelivery or republish): acknowledge, change nothing.
    Duplicate,
    /// Not for this instance any more (it ended, or the timer was cancelled or re-armed).
    Stale,
}

impl InstanceRecord {
    /// A new record at step 0 (nothing applied yet).
    pub fn new(
        workflow: &str,
        tenant: &str,
        instance: &str,
        state_version: u32,
        correlation_id: Option<String>,
        traceparent: Option<String>,
        now_ms: u64,
    ) -> Self {
        Self {
            schema_version: RECORD_SCHEMA_VERSION,
            workflow: workflow.to_string(),
            tenant: tenant.to_string(),
            instance: instance.to_string(),
            status: InstanceStatus::Running,
            state_version,
            state: serde_json::Value::Null,
            step: 0,
            pending: BTreeMap::new(),
            timers: BTreeMap::new(),
            applied_events: Vec::new(),
            outbox: Vec::new(),
            failure: None,
            paused: false,
            cancel_requested: false,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            correlation_id,
            traceparent,
        }
    }

    /// True once the instance completed or failed.
    pub fn finished(&self) -> bool {
        self.status != InstanceStatus::Running
    }

    /// Whether an effect result (or timer firing) still needs `react`.
    pub fn admit_result(&self, result: &wire::EffectResult) -> Admission {
        if result.effect_type == TIMER_EFFECT {
            let name = result.label.as_str();
            return match self.timers.get(name) {
                Some(t) if t.timer_id == result.command_id && !self.finished() => {
                    Admission::Timer(name.to_string())
                }
                // Fired and applied, cancelled, re-armed under a new id, or the instance ended.
                _ => Admission::Stale,
            };
        }
        match self.pending.get(&result.command_id) {
            Some(_) if self.finished() => Admission::Stale,
            Some(_) => Admission::Result,
            None => Admission::Duplicate,
        }
    }

    /// Whether an aggregate event (stream sequence, index in its commit) still needs `react`.
    pub fn admit_event(&self, seq: u64, index: u32) -> Admission {
        if self.applied_events.contains(&(seq, index)) {
            Admission::Duplicate
        } else if self.finished() {
            Admission::Stale
        } else {
            Admission::Event
        }
    }

    /// Marks what an admitted input consumed: the pending command, the armed timer, or the
    /// event position.
    pub fn consume(&mut self, result: Option<&wire::EffectResult>, event: Option<(u64, u32)>) {
        if let Some(r) = result {
            if r.effect_type == TIMER_EFFECT {
                self.timers.remove(&r.label);
            } else {
                self.pending.remove(&r.command_id);
            }
        }
        if let Some(pos) = event {
            self.applied_events.push(pos);
            if self.applied_events.len() > MAX_APPLIED_EVENTS {
                let excess = self.applied_events.len() - MAX_APPLIED_EVENTS;
                self.applied_events.drain(..excess);
            }
        }
    }

    /// Applies a decision as the next step: new state, outbox entries for every command, timer
    /// and workflow event it produces, pending commands, armed timers, and the outcome.
    /// `input_event` is the workflow event recording the input (`started`, `result_received`,
    /// …) with its details; `new_id` makes command and event ids.
    pub fn step<S: Serialize>(
        &mut self,
        decision: Decision<S>,
        input_event: (&str, serde_json::Value),
        now_ms: u64,
        mut new_id: impl FnMut() -> String,
    ) -> Result<(), WorkflowError> {
        if let Some(why) = decision.invalid {
            return Err(WorkflowError(why));
        }
        if decision.issue.len() + decision.arm.len() > MAX_ISSUED_PER_STEP {
            return Err(WorkflowError(format!(
                "one step issued {} commands and timers; at most {MAX_ISSUED_PER_STEP}",
                decision.issue.len() + decision.arm.len()
            )));
        }
        let tenant = TenantId::new(self.tenant.clone())
            .map_err(|e| WorkflowError(format!("tenant {:?}: {e}", self.tenant)))?;
        let workflow = SubjectToken::new(self.workflow.clone())
            .map_err(|e| WorkflowError(format!("workflow {:?}: {e}", self.workflow)))?;
        let instance = SubjectToken::new(self.instance.clone())
            .map_err(|e| WorkflowError(format!("instance {:?}: {e}", self.instance)))?;
        let state = serde_json::to_value(&decision.state)
            .map_err(|e| WorkflowError(format!("state does not encode: {e}")))?;
        self.step += 1;
        self.state = state;
        self.updated_at_ms = now_ms;
        let step = self.step;
        let mut events: Vec<(&str, serde_json::Value)> = vec![input_event];

        for name in &decision.cancel {
            self.timers.remove(name);
        }
        for (name, at) in &decision.arm {
            if name.is_empty() || name.len() > 128 {
                return Err(WorkflowError(format!(
                    "timer name {name:?} must be 1..=128 bytes"
                )));
            }
            let fire_at_ms = match at {
                FireAt::At(ms) => *ms,
                FireAt::After(d) => now_ms.saturating_add(d.as_millis() as u64),
            };
            if fire_at_ms.saturating_sub(now_ms) > MAX_TIMER_AHEAD_MS {
                return Err(WorkflowError(format!(
                    "timer `{name}` is {} ms ahead; timers may be armed at most {MAX_TIMER_AHEAD_MS} ms ahead",
                    fire_at_ms - now_ms
                )));
            }
            let timer_id = new_id();
            let command = EffectCommand {
                schema_version: wire::SCHEMA_VERSION,
                command_id: timer_id.clone(),
                tenant_id: self.tenant.clone(),
                effect_type: TIMER_EFFECT.to_string(),
                workflow: self.workflow.clone(),
                instance: self.instance.clone(),
                label: name.clone(),
                issued_at_ms: now_ms,
                deadline_ms: None,
                payload: serde_json::to_value(TimerPayload {
                    name: name.clone(),
                    fire_at_ms,
                })
                .unwrap_or_default(),
                correlation_id: self.correlation_id.clone(),
                traceparent: self.traceparent.clone(),
            };
            self.push_command(&tenant, TIMER_EFFECT, &command)?;
            self.timers.insert(
                name.clone(),
                ArmedTimer {
                    timer_id,
                    fire_at_ms,
                },
            );
        }
        for issue in &decision.issue {
            validate_token(&issue.effect_type)
                .map_err(|e| WorkflowError(format!("effect type {:?}: {e}", issue.effect_type)))?;
            if wire::is_reserved_effect_type(&issue.effect_type) {
                return Err(WorkflowError(format!(
                    "effect type `{}` is reserved for the runtime",
                    issue.effect_type
                )));
            }
            let command_id = new_id();
            let label = if issue.label.is_empty() {
                issue.effect_type.clone()
            } else {
                issue.label.clone()
            };
            let command = EffectCommand {
                schema_version: wire::SCHEMA_VERSION,
                command_id: command_id.clone(),
                tenant_id: self.tenant.clone(),
                effect_type: issue.effect_type.clone(),
                workflow: self.workflow.clone(),
                instance: self.instance.clone(),
                label: label.clone(),
                issued_at_ms: now_ms,
                deadline_ms: issue.deadline_ms,
                payload: issue.payload.clone(),
                correlation_id: self.correlation_id.clone(),
                traceparent: self.traceparent.clone(),
            };
            self.push_command(&tenant, &issue.effect_type, &command)?;
            self.pending.insert(
                command_id.clone(),
                PendingCommand {
                    effect_type: issue.effect_type.clone(),
                    label: label.clone(),
                    issued_at_ms: now_ms,
                },
            );
            events.push((
                event_types::EFFECT_ISSUED,
                serde_json::json!({
                    "command_id": command_id,
                    "effect_type": issue.effect_type,
                    "label": label,
                }),
            ));
        }
        match decision.outcome {
            Some(Outcome::Completed) => {
                self.status = InstanceStatus::Completed;
                events.push((event_types::COMPLETED, serde_json::Value::Null));
            }
            Some(Outcome::Failed(reason)) => {
                self.status = InstanceStatus::Failed;
                events.push((event_types::FAILED, serde_json::json!({ "reason": reason })));
                self.failure = Some(reason);
            }
            None => {}
        }
        if self.finished() {
            // A finished instance waits for nothing: later firings are stale anyway.
            self.timers.clear();
        }
        let event_subject = subject::workflow_event(&tenant, &workflow, &instance);
        for (event_type, data) in events {
            let event = WorkflowEvent {
                schema_version: wire::SCHEMA_VERSION,
                event_id: new_id(),
                tenant_id: self.tenant.clone(),
                workflow: self.workflow.clone(),
                instance: self.instance.clone(),
                step,
                event_type: event_type.to_string(),
                occurred_at_ms: now_ms,
                data,
                correlation_id: self.correlation_id.clone(),
                traceparent: self.traceparent.clone(),
            };
            self.outbox.push(OutboxEntry {
                msg_id: event.event_id.clone(),
                kind: OutboxKind::Event,
                subject: event_subject.clone(),
                payload: serde_json::to_value(&event).unwrap_or_default(),
            });
        }
        Ok(())
    }

    fn push_command(
        &mut self,
        tenant: &TenantId,
        effect_type: &str,
        command: &EffectCommand,
    ) -> Result<(), WorkflowError> {
        let ty = SubjectToken::new(effect_type)
            .map_err(|e| WorkflowError(format!("effect type {effect_type:?}: {e}")))?;
        self.outbox.push(OutboxEntry {
            msg_id: command.command_id.clone(),
            kind: OutboxKind::Command,
            subject: subject::effect_command(tenant, &ty),
            payload: serde_json::to_value(command)
                .map_err(|e| WorkflowError(format!("command does not encode: {e}")))?,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
