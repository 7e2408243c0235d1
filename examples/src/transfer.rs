//! The `transfer` saga: withdraw from account A, then deposit to account B; if the deposit is
//! refused (B closed or never opened) or does not happen before the transfer's timeout, refund
//! A. Its effects send commands to the `account` aggregate through `CommandService` with
//! `Idempotency-Key = command_id`, so a retried effect never moves money twice.
//!
//! Start: `POST /v1/workflows/transfer/{id}` with
//! `{"from": "a", "to": "b", "amount": 500, "timeout_ms": 30000}` (`timeout_ms` optional,
//! default 30 s, at most a day).
//!
//! | stage | input | next |
//! |---|---|---|
//! | withdrawing | withdraw ok | depositing: issue the deposit |
//! | withdrawing | withdraw failed | failed (nothing moved) |
//! | depositing | deposit ok | completed |
//! | depositing | deposit failed (refused, retries exhausted, deadline passed) | refunding: deposit the amount back to A |
//! | refunding | refund ok | failed, "…; refunded" |
//! | withdrawing, depositing | the `timeout` timer | marked timed out and the outstanding effect aborted: a waiting one fails at once, a running one's outcome decides (a withdrawal that went through is refunded) |
//! | withdrawing, depositing | an operator's cancel | the outstanding effect is aborted; its `failed` result leads to the usual compensation (a withdrawal that went through anyway is refunded) |
//!
//! A failure whose outcome is unknown (the command may have committed although no success was
//! seen) is never compensated blindly: the transfer fails with "needs attention" and the amount
//! stays where it is.

use std::time::Duration;

use cloudlysis_actors::runner::workflow::{Decision, Input, ReactContext, Workflow, WorkflowError};
use cloudlysis_actors::runner::{CommandClient, Effect, EffectContext, EffectError, RetryPolicy};
use cloudlysis_runtime::subject::validate_token;
use cloudlysis_runtime::workflow::EffectResult;
use serde::{Deserialize, Serialize};

/// The transfer workflow.
pub struct Transfer;

/// Default time a transfer may take.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Longest timeout a transfer may ask for.
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// How long after the transfer's deadline its effects may still start an attempt. The `timeout`
/// timer decides a timeout (it aborts the outstanding effect); the effects' own deadline is a
/// backstop for a timer that fires late, and lies after it so that the two never race.
pub const EFFECT_DEADLINE_GRACE_MS: u64 = 5_000;

/// What starts a transfer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTransfer {
    /// Account to withdraw from.
    pub from: String,
    /// Account to deposit to.
    pub to: String,
    /// Minor units, > 0.
    pub amount: u64,
    /// Time the transfer may take, milliseconds (default 30 000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Where a transfer is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not started.
    #[default]
    New,
    /// Waiting for the withdrawal.
    Withdrawing,
    /// Waiting for the deposit.
    Depositing,
    /// Waiting for the refund to A.
    Refunding,
    /// Money moved.
    Completed,
    /// Ended without moving money (or with it refunded, or needing attention).
    Failed,
}

/// A transfer's state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferState {
    /// Source account.
    pub from: String,
    /// Target account.
    pub to: String,
    /// Minor units.
    pub amount: u64,
    /// Where it is.
    pub stage: Stage,
    /// Deadline of the transfer (Unix ms).
    pub deadline_ms: u64,
    /// True once the timeout fired.
    #[serde(default)]
    pub timed_out: bool,
    /// True once an operator cancelled it.
    #[serde(default)]
    pub cancelled: bool,
    /// Why it is refunding or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The command of both effects: move `amount` on `account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountMove {
    /// Account id.
    pub account: String,
    /// Minor units.
    pub amount: u64,
}

/// What an account command returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// Account version after the command.
    pub version: u64,
    /// Stream sequence of the commit.
    pub stream_sequence: u64,
    /// True when an earlier attempt had committed it (idempotency key).
    pub replayed: bool,
}

/// Retries of the account effects: up to 8 attempts, 200 ms doubling to 10 s, 10 s per attempt.
pub fn account_retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(10),
        multiplier: 2.0,
        jitter: 0.2,
        attempt_timeout: Duration::from_secs(10),
    }
}

/// The `withdraw` effect: `Withdraw` on the `account` aggregate.
pub struct WithdrawEffect(pub CommandClient);

impl Effect for WithdrawEffect {
    const TYPE: &'static str = "withdraw";
    type Command = AccountMove;
    type Output = Moved;

    fn retry_policy(&self) -> RetryPolicy {
        account_retry_policy()
    }

    async fn execute(&self, cmd: AccountMove, ctx: &EffectContext) -> Result<Moved, EffectError> {
        account_command(&self.0, ctx, "Withdraw", &cmd).await
    }
}

/// The `deposit` effect: `Deposit` on the `account` aggregate (also the refund).
pub struct DepositEffect(pub CommandClient);

impl Effect for DepositEffect {
    const TYPE: &'static str = "deposit";
    type Command = AccountMove;
    type Output = Moved;

    fn retry_policy(&self) -> RetryPolicy {
        account_retry_policy()
    }

    async fn execute(&self, cmd: AccountMove, ctx: &EffectContext) -> Result<Moved, EffectError> {
        account_command(&self.0, ctx, "Deposit", &cmd).await
    }
}

async fn account_command(
    client: &CommandClient,
    ctx: &EffectContext,
    command: &str,
    cmd: &AccountMove,
) -> Result<Moved, EffectError> {
    let reply = client
        .execute(
            ctx,
            "account",
            &cmd.account,
            command,
            &serde_json::json!({ "amount": cmd.amount }),
        )
        .await?;
    Ok(Moved {
        version: reply.version,
        stream_sequence: reply.stream_sequence,
        replayed: reply.replayed,
    })
}

impl Workflow for Transfer {
    const NAME: &'static str = "transfer";
    const SCHEMA_VERSION: u32 = 1;
    type State = TransferState;
    type Start = StartTransfer;

    fn effect_types() -> &'static [&'static str] {
        &[WithdrawEffect::TYPE, DepositEffect::TYPE]
    }

    fn react(
        s: &TransferState,
        input: Input<'_, StartTransfer>,
        ctx: &ReactContext,
    ) -> Result<Decision<TransferState>, WorkflowError> {
        match input {
            Input::Start(start) => begin(start, ctx),
            Input::Result(r) => Ok(on_result(s, r)),
            Input::Timer("timeout")
                if matches!(s.stage, Stage::Withdrawing | Stage::Depositing) =>
            {
                // Abort what is outstanding: a command waiting for its next attempt fails at
                // once, a running attempt's outcome decides between completing and refunding.
                Ok(Decision::new(TransferState {
                    timed_out: true,
                    ..s.clone()
                })
                .abort(outstanding(s.stage)))
            }
            // Cancelled: abort what is outstanding; its `failed` result then leads to the usual
            // compensation (nothing to undo after a withdrawal that did not happen, a refund
            // after one that did). A refund in progress is never aborted.
            Input::Cancel(reason) if matches!(s.stage, Stage::Withdrawing | Stage::Depositing) => {
                Ok(Decision::new(TransferState {
                    cancelled: true,
                    reason: Some(format!("cancelled: {reason}")),
                    ..s.clone()
                })
                .abort(outstanding(s.stage)))
            }
            Input::Timer(_) | Input::Event(_) | Input::Cancel(_) => Ok(Decision::new(s.clone())),
        }
    }
}

/// The label of the effect a transfer waits for in `stage`.
fn outstanding(stage: Stage) -> &'static str {
    if stage == Stage::Withdrawing {
        "withdraw"
    } else {
        "deposit"
    }
}

fn begin(
    start: StartTransfer,
    ctx: &ReactContext,
) -> Result<Decision<TransferState>, WorkflowError> {
    for (field, account) in [("from", &start.from), ("to", &start.to)] {
        validate_token(account).map_err(|e| WorkflowError::new(format!("`{field}`: {e}")))?;
    }
    if start.from == start.to {
        return Err(WorkflowError::new(
            "`from` and `to` must be different accounts",
        ));
    }
    if start.amount == 0 || start.amount > crate::account::MAX_AMOUNT {
        return Err(WorkflowError::new(format!(
            "`amount` must be within 1..={} (what an account moves)",
            crate::account::MAX_AMOUNT
        )));
    }
    let timeout = start.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout == 0 || timeout > MAX_TIMEOUT_MS {
        return Err(WorkflowError::new(format!(
            "`timeout_ms` must be within 1..={MAX_TIMEOUT_MS}"
        )));
    }
    let deadline_ms = ctx.now_ms + timeout;
    let state = TransferState {
        from: start.from.clone(),
        to: start.to,
        amount: start.amount,
        stage: Stage::Withdrawing,
        deadline_ms,
        timed_out: false,
        cancelled: false,
        reason: None,
    };
    Ok(Decision::new(state)
        .issue_effect_by::<WithdrawEffect>(
            "withdraw",
            &AccountMove {
                account: start.from,
                amount: start.amount,
            },
            Some(deadline_ms + EFFECT_DEADLINE_GRACE_MS),
        )
        .arm_at("timeout", deadline_ms))
}

fn on_result(s: &TransferState, r: &EffectResult) -> Decision<TransferState> {
    let with = |stage: Stage, reason: Option<String>| TransferState {
        stage,
        reason,
        ..s.clone()
    };
    let why = |what: &str| {
        let error = r.error().unwrap_or_default();
        if s.cancelled {
            format!(
                "{what} did not happen: {}",
                s.reason.clone().unwrap_or_default()
            )
        } else if s.timed_out {
            format!("timed out: {what} did not happen in time ({error})")
        } else {
            format!("{what} failed: {error}")
        }
    };
    match (s.stage, r.label.as_str(), r.is_ok()) {
        // Cancelled or timed out while the withdrawal ran, and it went through: give the money
        // back.
        (Stage::Withdrawing, "withdraw", true) if s.cancelled || s.timed_out => {
            let reason = s.reason.clone().or_else(|| {
                Some("timed out: the withdrawal went through after the deadline".to_string())
            });
            Decision::new(with(Stage::Refunding, reason))
                .cancel("timeout")
                .issue_effect::<DepositEffect>(
                    "refund",
                    &AccountMove {
                        account: s.from.clone(),
                        amount: s.amount,
                    },
                )
        }
        (Stage::Withdrawing, "withdraw", true) => Decision::new(with(Stage::Depositing, None))
            .issue_effect_by::<DepositEffect>(
            "deposit",
            &AccountMove {
                account: s.to.clone(),
                amount: s.amount,
            },
            Some(s.deadline_ms + EFFECT_DEADLINE_GRACE_MS),
        ),
        (Stage::Withdrawing, "withdraw", false) if r.outcome_unknown() => {
            let reason = format!(
                "needs attention: the withdrawal's outcome is unknown ({})",
                r.error().unwrap_or_default()
            );
            Decision::new(with(Stage::Failed, Some(reason.clone())))
                .cancel("timeout")
                .fail(reason)
        }
        (Stage::Withdrawing, "withdraw", false) => {
            let reason = why("the withdrawal");
            Decision::new(with(Stage::Failed, Some(reason.clone())))
                .cancel("timeout")
                .fail(reason)
        }
        (Stage::Depositing, "deposit", true) => Decision::new(with(Stage::Completed, None))
            .cancel("timeout")
            .complete(),
        (Stage::Depositing, "deposit", false) if r.outcome_unknown() => {
            let reason = format!(
                "needs attention: the deposit's outcome is unknown ({}); nothing refunded",
                r.error().unwrap_or_default()
            );
            Decision::new(with(Stage::Failed, Some(reason.clone())))
                .cancel("timeout")
                .fail(reason)
        }
        (Stage::Depositing, "deposit", false) => {
            // Compensate: the refund has no deadline — it must happen.
            Decision::new(with(Stage::Refunding, Some(why("the deposit"))))
                .cancel("timeout")
                .issue_effect::<DepositEffect>(
                    "refund",
                    &AccountMove {
                        account: s.from.clone(),
                        amount: s.amount,
                    },
                )
        }
        (Stage::Refunding, "refund", true) => {
            let reason = format!("{}; refunded", s.reason.clone().unwrap_or_default());
            Decision::new(with(Stage::Failed, Some(reason.clone()))).fail(reason)
        }
        (Stage::Refunding, "refund", false) => {
            let reason = format!(
                "needs attention: {}; the refund failed too ({})",
                s.reason.clone().unwrap_or_default(),
                r.error().unwrap_or_default()
            );
            Decision::new(with(Stage::Failed, Some(reason.clone()))).fail(reason)
        }
        _ => Decision::new(s.clone()),
    }
}
