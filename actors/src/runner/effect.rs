//! The `Effect` behaviour: the only place a behaviour does I/O — call a service, send a mail,
//! send a command to an aggregate — with a typed command and result.
//!
//! ```
//! use cloudlysis_actors::runner::effect::{Effect, EffectContext, EffectError};
//! use serde::{Deserialize, Serialize};
//!
//! pub struct Mail;
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct SendMail { pub to: String }
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Sent { pub message_id: String }
//!
//! impl Effect for Mail {
//!     const TYPE: &'static str = "mail";
//!     type Command = SendMail;
//!     type Output = Sent;
//!
//!     async fn execute(&self, cmd: SendMail, ctx: &EffectContext) -> Result<Sent, EffectError> {
//!         // Pass ctx.command_id to the mail service as its idempotency key.
//!         if cmd.to.is_empty() {
//!             return Err(EffectError::permanent("no recipient"));
//!         }
//!         Ok(Sent { message_id: ctx.command_id.clone() })
//!     }
//! }
//! ```
//!
//! | `execute` returns | the runtime |
//! |---|---|
//! | `Ok(output)` | records it, publishes an `ok` result to the workflow |
//! | `Err(permanent)` | records and publishes a `failed` result at once (the workflow compensates) |
//! | `Err(retryable)` | retries after the policy's backoff; after the last attempt, or past the command's deadline, a `failed` result |
//! | `Err(unknown)` | as retryable, and a final failure says `outcome_unknown` (the attempt may have taken effect) |
//! | takes longer than the attempt timeout | the attempt counts as `unknown` |
//!
//! An effect whose outcome is recorded is never executed again for the same `command_id`:
//! a redelivered or republished command gets the recorded result re-published. An attempt cut
//! short by a crash may run again — so pass [`EffectContext::command_id`] on as the idempotency
//! key wherever the target honours one; otherwise the external side effect is at least once.

use std::future::Future;
use std::time::Duration;

use cloudlysis_runtime::RequestContext;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An effect: a typed command executed with I/O, and its typed output.
pub trait Effect: Send + Sync + 'static {
    /// Effect type: a subject token (`withdraw`). Types starting with `_` are reserved.
    const TYPE: &'static str;
    /// The command, encoded as JSON in the effect command.
    type Command: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The output, encoded as JSON in the effect result.
    type Output: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Retries, backoff and the attempt timeout (default [`RetryPolicy::default`]).
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Executes one attempt. Must finish by `ctx.deadline` (the runtime cuts it off there).
    fn execute(
        &self,
        command: Self::Command,
        ctx: &EffectContext,
    ) -> impl Future<Output = Result<Self::Output, EffectError>> + Send;
}

/// What an attempt knows besides its command.
#[derive(Debug, Clone)]
pub struct EffectContext {
    /// The command's id: pass it on as the idempotency key.
    pub command_id: String,
    /// Tenant, correlation and trace of the instance that issued the command.
    pub request: RequestContext,
    /// Workflow that issued the command.
    pub workflow: String,
    /// Instance that issued the command.
    pub instance: String,
    /// The attempt, 1-based.
    pub attempt: u32,
    /// The attempt must be over by then (the attempt timeout, or the command's deadline if
    /// earlier).
    pub deadline: tokio::time::Instant,
}

impl EffectContext {
    /// Time left until [`EffectContext::deadline`].
    pub fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectErrorKind {
    /// Will not succeed on retry (invalid command, refused by the target): fail at once.
    Permanent,
    /// May succeed on retry; the attempt had no effect.
    Retryable,
    /// May succeed on retry, and the attempt may have taken effect (timed out, connection lost
    /// after sending).
    Unknown,
}

/// An attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EffectError {
    /// Permanent, retryable or unknown.
    pub kind: EffectErrorKind,
    /// What went wrong.
    pub message: String,
}

impl EffectError {
    /// A failure that retrying cannot fix.
    pub fn permanent(msg: impl Into<String>) -> Self {
        Self {
            kind: EffectErrorKind::Permanent,
            message: msg.into(),
        }
    }

    /// A failure worth retrying; the attempt had no effect.
    pub fn retryable(msg: impl Into<String>) -> Self {
        Self {
            kind: EffectErrorKind::Retryable,
            message: msg.into(),
        }
    }

    /// A failure worth retrying after which the attempt may have taken effect.
    pub fn unknown(msg: impl Into<String>) -> Self {
        Self {
            kind: EffectErrorKind::Unknown,
            message: msg.into(),
        }
    }
}

/// Retries of one effect type: at most `max_attempts` attempts, each cut off after
/// `attempt_timeout`, spaced by exponential backoff with jitter.
///
/// | attempt that failed | default delay before the next |
/// |---|---|
/// | 1 | 1 s (± 20 %) |
/// | 2 | 2 s |
/// | 3 | 4 s |
/// | n | min(2^(n-1) s, 60 s) |
///
/// Defaults: 5 attempts, 30 s per attempt. A command's deadline (if it has one) ends the
/// retries earlier: no attempt starts after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub max_attempts: u32,
    /// Delay after the first failed attempt.
    pub initial_backoff: Duration,
    /// Largest delay.
    pub max_backoff: Duration,
    /// Growth per attempt (at least 1).
    pub multiplier: f64,
    /// Share of each delay taken off at random (0 ..= 1), so retries of many commands spread.
    pub jitter: f64,
    /// Longest one attempt may run.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay after attempt `attempt` (1-based) failed, with `unit` in `0..1` drawing the
    /// jitter (the runtime passes a random number; tests pass a fixed one).
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(62) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(exp);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64((capped * (1.0 - jitter)).max(0.0))
    }

    /// Checks the policy; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.attempt_timeout.is_zero() {
            return Err("attempt_timeout must be greater than 0".into());
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err("multiplier must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("jitter must be within 0..=1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(p.backoff(3, 0.0), Duration::from_secs(4));
        assert_eq!(p.backoff(10, 0.0), Duration::from_secs(60));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(800));
        assert!(p.validate().is_ok());
        assert!(
            RetryPolicy {
                max_attempts: 0,
                ..p
            }
            .validate()
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn backoff_stays_within_its_jitter_band_and_cap(attempt in 1u32..200, unit in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let d = p.backoff(attempt, unit);
            prop_assert!(d <= p.max_backoff);
            let undithered = p.backoff(attempt, 0.0);
            prop_assert!(d.as_secs_f64() >= undithered.as_secs_f64() * (1.0 - p.jitter) - 1e-9);
            prop_assert!(p.backoff(attempt + 1, 0.0) >= undithered);
        }
    }
}
