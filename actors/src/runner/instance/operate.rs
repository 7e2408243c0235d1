//! Operator verbs on one instance, run by its actor (so they are ordered with its inputs):
//!
//! | verb | does | again |
//! |---|---|---|
//! | `pause` | the instance keeps applying its inputs and committing its steps, but publishes nothing (commands, timers, events wait in its outbox); it may end while paused, and its last events then wait for the resume | no change |
//! | `resume` | publishes what waited, and everything after | no change |
//! | `cancel` | `react(Cancel)` decides the compensation — the commands it aborts are cancelled in their ledgers (no further attempt; a `failed` "cancelled" result is published) unless an attempt runs right now, whose outcome then decides | no change |
//! | `retry_now` | every pending command waiting in backoff is tried at once | retries again |
//!
//! Verbs on an instance that ended are refused (`FAILED_PRECONDITION`), except repeats of a
//! pause, resume or cancel that already happened.

use cloudlysis_runtime::workflow::{self as wire, EffectCommand, event_types};

use super::*;
use crate::runner::worker::{Cancelled, cancel_command, retry_command_now};

/// An operator verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// Hold the instance's messages.
    Pause,
    /// Publish them again.
    Resume,
    /// Run the workflow's compensation, with a reason.
    Cancel(String),
    /// Skip the backoff of its failing effects.
    RetryNow,
}

impl Verb {
    /// Parses a verb name (`pause`, `resume`, `cancel`, `retry_now`).
    pub fn parse(verb: &str, reason: &str) -> Result<Self, RunnerError> {
        match verb {
            "pause" => Ok(Self::Pause),
            "resume" => Ok(Self::Resume),
            "cancel" => Ok(Self::Cancel(if reason.is_empty() {
                "cancelled by an operator".into()
            } else {
                reason.to_string()
            })),
            "retry_now" | "retry-now" => Ok(Self::RetryNow),
            other => Err(RunnerError::InvalidArgument(format!(
                "`{other}` is not a verb: expected pause, resume, cancel or retry_now"
            ))),
        }
    }

    /// The audit action (`workflow.pause`, …).
    pub fn action(&self) -> &'static str {
        match self {
            Self::Pause => "workflow.pause",
            Self::Resume => "workflow.resume",
            Self::Cancel(_) => "workflow.cancel",
            Self::RetryNow => "workflow.retry_now",
        }
    }

    pub(super) fn input(&self) -> &'static str {
        match self {
            Self::Cancel(_) => "cancel",
            _ => "operate",
        }
    }
}

/// The pending commands of `record` that `decision` aborts.
pub(super) fn aborted<S>(
    record: &InstanceRecord,
    decision: &crate::runner::workflow::Decision<S>,
) -> Vec<(String, crate::runner::record::PendingCommand)> {
    record
        .pending
        .iter()
        .filter(|(_, p)| decision.abort.iter().any(|l| l == "*" || *l == p.label))
        .map(|(id, p)| (id.clone(), p.clone()))
        .collect()
}

impl<W: Workflow> InstanceActor<W> {
    pub(super) async fn operate(
        &self,
        verb: Verb,
        state: &mut InstanceState,
    ) -> Result<(InstanceRecord, String), RunnerError> {
        for _ in 0..MAX_TRIES {
            let mut aborting = Vec::new();
            let Some((record, revision)) = self.load(state, true).await? else {
                return Err(RunnerError::NotFound(format!(
                    "no instance `{}` of workflow `{}`",
                    self.instance,
                    W::NAME
                )));
            };
            let ended = || {
                RunnerError::Rejected(format!(
                    "instance `{}` has ended ({})",
                    self.instance,
                    record.status.as_str()
                ))
            };
            let mut next = record.clone();
            let detail = match &verb {
                Verb::Pause if record.paused => return Ok((record, "already paused".into())),
                Verb::Pause if record.finished() => return Err(ended()),
                Verb::Pause => {
                    next.paused = true;
                    "paused: its steps commit but publish nothing until resumed".to_string()
                }
                Verb::Resume if !record.paused => return Ok((record, "not paused".into())),
                Verb::Resume => {
                    next.paused = false;
                    format!("resumed; {} held messages published", record.outbox.len())
                }
                Verb::Cancel(_) if record.cancel_requested => {
                    return Ok((record, "already cancelled".into()));
                }
                Verb::Cancel(_) | Verb::RetryNow if record.finished() => return Err(ended()),
                Verb::RetryNow => {
                    let detail = self.retry_now(&record).await?;
                    return Ok((record, detail));
                }
                Verb::Cancel(reason) => {
                    let current = decode_state::<W>(&record)?;
                    let react = self.ctx(record.step);
                    let decision = W::react(&current, Input::Cancel(reason), &react)
                        .map_err(|e| RunnerError::Rejected(e.0))?;
                    aborting = aborted(&record, &decision);
                    next.cancel_requested = true;
                    next.step(
                        decision,
                        (
                            event_types::CANCEL_REQUESTED,
                            serde_json::json!({ "reason": reason }),
                        ),
                        react.now_ms,
                        new_id,
                    )
                    .map_err(|e| RunnerError::Rejected(e.0))?;
                    String::new()
                }
            };
            match self.write(&next, Some(revision)).await {
                Ok(rev) => {
                    self.finished_metric(!record.finished(), &next);
                    let committed = self.flush(next, rev, state).await;
                    let detail = match &verb {
                        Verb::Cancel(reason) => {
                            format!(
                                "cancelled; {}",
                                self.abort_pending(&record, &aborting, reason).await
                            )
                        }
                        _ => detail,
                    };
                    return Ok((committed, detail));
                }
                Err(WriteError::Conflict) => state.cached = None,
                Err(WriteError::Failed(e)) => {
                    state.cached = None;
                    return Err(e.into());
                }
            }
        }
        Err(RunnerError::Conflict(format!(
            "instance {}: too many concurrent writers",
            self.key
        )))
    }

    /// Cancels `commands` (pending in `record`); says what became of them.
    pub(super) async fn abort_pending(
        &self,
        record: &InstanceRecord,
        commands: &[(String, crate::runner::record::PendingCommand)],
        reason: &str,
    ) -> String {
        if commands.is_empty() {
            return "no pending command aborted".into();
        }
        let (mut stopped, mut running, mut finished, mut failed) = (0, 0, 0, Vec::new());
        for (command_id, pending) in commands {
            let cmd = EffectCommand {
                schema_version: wire::SCHEMA_VERSION,
                command_id: command_id.clone(),
                tenant_id: record.tenant.clone(),
                effect_type: pending.effect_type.clone(),
                workflow: record.workflow.clone(),
                instance: record.instance.clone(),
                label: pending.label.clone(),
                issued_at_ms: pending.issued_at_ms,
                deadline_ms: None,
                payload: serde_json::Value::Null,
                correlation_id: record.correlation_id.clone(),
                traceparent: record.traceparent.clone(),
            };
            let io = self.shared.relay_ctx.io_timeout;
            match cancel_command(
                &self.shared.ledger,
                &self.shared.relay_ctx.js,
                &cmd,
                reason,
                io,
            )
            .await
            {
                Ok(Cancelled::Stopped) => stopped += 1,
                Ok(Cancelled::Running) => running += 1,
                Ok(Cancelled::Finished) => finished += 1,
                Err(e) => failed.push(e),
            }
        }
        let mut detail = format!(
            "{stopped} pending commands aborted, {running} running (their outcome decides), \
             {finished} already finished"
        );
        if !failed.is_empty() {
            detail += &format!("; not cancelled: {}", failed.join("; "));
        }
        detail
    }

    /// Cuts the backoff of every pending command short; says how many were waiting.
    async fn retry_now(&self, record: &InstanceRecord) -> Result<String, RunnerError> {
        let client = self.shared.relay_ctx.js.client();
        let mut woken = 0;
        for (command_id, pending) in &record.pending {
            if retry_command_now(
                &self.shared.ledger,
                &client,
                &pending.effect_type,
                &record.tenant,
                command_id,
                self.shared.relay_ctx.io_timeout,
            )
            .await
            .map_err(RunnerError::Unavailable)?
            {
                woken += 1;
            }
        }
        Ok(format!(
            "{woken} of {} pending commands were waiting in backoff and are retried now",
            record.pending.len()
        ))
    }
}
