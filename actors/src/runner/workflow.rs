//! The `Workflow` behaviour: a long-running business process (a saga) written as one pure
//! function from its state and an input to a [`Decision`].
//!
//! ```
//! use cloudlysis_actors::runner::workflow::{Decision, Input, ReactContext, Workflow, WorkflowError};
//! use serde::{Deserialize, Serialize};
//!
//! /// Sends a welcome mail, gives up after a day.
//! pub struct Welcome;
//!
//! #[derive(Default, Clone, Serialize, Deserialize)]
//! pub struct WelcomeState { sent: bool }
//!
//! #[derive(Deserialize)]
//! pub struct StartWelcome { email: String }
//!
//! impl Workflow for Welcome {
//!     const NAME: &'static str = "welcome";
//!     const SCHEMA_VERSION: u32 = 1;
//!     type State = WelcomeState;
//!     type Start = StartWelcome;
//!
//!     fn effect_types() -> &'static [&'static str] { &["mail"] }
//!
//!     fn react(s: &WelcomeState, input: Input<'_, StartWelcome>, _: &ReactContext) -> Result<Decision<WelcomeState>, WorkflowError> {
//!         match input {
//!             Input::Start(start) => Ok(Decision::new(s.clone())
//!                 .issue("mail", "mail", serde_json::json!({ "to": start.email }))
//!                 .arm_after("give-up", std::time::Duration::from_secs(86_400))),
//!             Input::Result(r) if r.is_ok() => Ok(Decision::new(WelcomeState { sent: true }).cancel("give-up").complete()),
//!             Input::Result(r) => Ok(Decision::new(s.clone()).fail(format!("mail failed: {}", r.error().unwrap_or("")))),
//!             Input::Timer(_) => Ok(Decision::new(s.clone()).fail("no answer within a day")),
//!             Input::Cancel(why) => Ok(Decision::new(s.clone()).cancel("give-up").fail(why)),
//!             Input::Event(_) => Ok(Decision::new(s.clone())),
//!         }
//!     }
//! }
//! ```
//!
//! What the runtime guarantees around `react`:
//!
//! * one input at a time per instance; the state and what the decision issues are committed in
//!   one revision-checked write (the outbox), and published afterwards exactly once;
//! * an input already applied (a redelivered result, a timer that fired, an event seen) is
//!   recognised and never reaches `react` twice;
//! * `react` must be pure — no I/O, no clock: the current time is in [`ReactContext::now_ms`].
//!   It may run more than once for one input when a concurrent writer forces a reload; only the
//!   committed run counts.

use std::time::Duration;

use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_runtime::workflow::EffectResult;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::effect::Effect;

/// A workflow: which inputs drive it and how it reacts to each.
pub trait Workflow: Send + Sync + 'static {
    /// Workflow name: a subject token (`transfer`).
    const NAME: &'static str;
    /// Schema version of [`Workflow::State`] (stored with each instance).
    const SCHEMA_VERSION: u32;
    /// Instance state, serialised into the instance record.
    type State: Serialize + DeserializeOwned + Default + Clone + Send + Sync + 'static;
    /// What starts an instance (`POST /v1/workflows/<name>/<id>` body), decoded from JSON.
    type Start: DeserializeOwned + Send + 'static;

    /// Effect types whose results this workflow receives (the effects it issues).
    fn effect_types() -> &'static [&'static str];

    /// Aggregate types whose events may drive instances (default: none).
    fn aggregate_types() -> &'static [&'static str] {
        &[]
    }

    /// The instance an aggregate event belongs to, and whether it may start one (default:
    /// none — events drive nothing). Results and timers are routed by the runtime.
    fn correlate(_event: &EventEnvelope) -> Option<Correlation> {
        None
    }

    /// Decides what an instance does with one input. Pure: no I/O, no clock.
    fn react(
        state: &Self::State,
        input: Input<'_, Self::Start>,
        ctx: &ReactContext,
    ) -> Result<Decision<Self::State>, WorkflowError>;
}

/// Which instance an aggregate event belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlation {
    /// Instance id (a subject token).
    pub instance: String,
    /// True when the event may start the instance if it does not exist yet.
    pub may_start: bool,
}

/// What an instance reacts to.
#[derive(Debug)]
pub enum Input<'a, S> {
    /// The instance is being started with this input.
    Start(S),
    /// An aggregate event the workflow follows, correlated to this instance.
    Event(&'a EventEnvelope),
    /// The result of an effect command this instance issued.
    Result(&'a EffectResult),
    /// A timer of this instance fired (its name).
    Timer(&'a str),
    /// An operator cancelled the instance (the reason): decide its compensation — typically
    /// [`Decision::abort`] the commands still pending, then compensate when their results come.
    Cancel(&'a str),
}

/// Typed access to an effect's result, for `react`.
pub trait EffectResultExt {
    /// The typed output of a successful effect `E` (`None` when it failed or is of another
    /// type; `Some(Err)` when the output does not decode as `E::Output`).
    fn output<E: Effect>(&self) -> Option<Result<E::Output, serde_json::Error>>;
}

impl EffectResultExt for EffectResult {
    fn output<E: Effect>(&self) -> Option<Result<E::Output, serde_json::Error>> {
        (self.effect_type == E::TYPE)
            .then(|| self.output_as::<E::Output>())
            .flatten()
    }
}

/// What `react` knows besides state and input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactContext {
    /// Tenant of the instance.
    pub tenant: String,
    /// Instance id.
    pub instance: String,
    /// Steps the instance has taken before this one.
    pub step: u64,
    /// Now, in Unix milliseconds (the same for every run of this input).
    pub now_ms: u64,
}

/// A workflow refused an input (for a start: HTTP 422; otherwise the input fails and is
/// retried, then quarantined as poison).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorkflowError(pub String);

impl WorkflowError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// An effect command a decision issues.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Effect type.
    pub effect_type: String,
    /// The workflow's name for this step, returned with the result.
    pub label: String,
    /// The command, as JSON.
    pub payload: serde_json::Value,
    /// No attempt starts after this instant (Unix ms).
    pub deadline_ms: Option<u64>,
}

/// When a timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireAt {
    /// At this instant (Unix ms).
    At(u64),
    /// This long after the step's `now_ms`.
    After(Duration),
}

/// How an instance ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Completed successfully.
    Completed,
    /// Failed, with a reason.
    Failed(String),
}

/// What an instance does after an input: its new state, the effect commands to issue, timers
/// to arm or cancel, and whether it ends.
#[derive(Debug, Clone)]
pub struct Decision<S> {
    /// The new state.
    pub state: S,
    /// Effect commands to issue, in order.
    pub issue: Vec<Issue>,
    /// Timers to arm (a timer of the same name is replaced).
    pub arm: Vec<(String, FireAt)>,
    /// Timers to cancel, by name.
    pub cancel: Vec<String>,
    /// Set when the instance ends with this step.
    pub outcome: Option<Outcome>,
    /// Labels of pending commands to abort (`*`: all of them).
    pub abort: Vec<String>,
    /// A typed command that did not serialise (refused when the decision is committed).
    pub(crate) invalid: Option<String>,
}

impl<S> Decision<S> {
    /// A decision that only updates the state.
    pub fn new(state: S) -> Self {
        Self {
            state,
            issue: Vec::new(),
            arm: Vec::new(),
            cancel: Vec::new(),
            outcome: None,
            abort: Vec::new(),
            invalid: None,
        }
    }

    /// Issues an effect command of type `effect_type` (untyped).
    pub fn issue(mut self, effect_type: &str, label: &str, payload: serde_json::Value) -> Self {
        self.issue.push(Issue {
            effect_type: effect_type.to_string(),
            label: label.to_string(),
            payload,
            deadline_ms: None,
        });
        self
    }

    /// Issues a typed command of effect `E`, labelled `label`.
    pub fn issue_effect<E: Effect>(self, label: &str, command: &E::Command) -> Self {
        self.issue_effect_by::<E>(label, command, None)
    }

    /// Issues a typed command of effect `E` that must not start after `deadline_ms` (a command
    /// not executed by then fails with "deadline passed" and is known not to have run).
    pub fn issue_effect_by<E: Effect>(
        mut self,
        label: &str,
        command: &E::Command,
        deadline_ms: Option<u64>,
    ) -> Self {
        match serde_json::to_value(command) {
            Ok(payload) => self.issue.push(Issue {
                effect_type: E::TYPE.to_string(),
                label: label.to_string(),
                payload,
                deadline_ms,
            }),
            Err(e) => {
                self.invalid = Some(format!(
                    "command for effect `{}` does not encode: {e}",
                    E::TYPE
                ))
            }
        }
        self
    }

    /// Arms timer `name` to fire at `at_ms` (Unix ms).
    pub fn arm_at(mut self, name: &str, at_ms: u64) -> Self {
        self.arm.push((name.to_string(), FireAt::At(at_ms)));
        self
    }

    /// Arms timer `name` to fire `after` this step.
    pub fn arm_after(mut self, name: &str, after: Duration) -> Self {
        self.arm.push((name.to_string(), FireAt::After(after)));
        self
    }

    /// Cancels timer `name` armed by an earlier step (nothing happens when it is not armed).
    /// Cancels apply before arms: arming a name again replaces its timer anyway.
    pub fn cancel(mut self, name: &str) -> Self {
        self.cancel.push(name.to_string());
        self
    }

    /// Aborts the pending commands labelled `label` (`*`: all): no further attempt of them
    /// starts, and each answers with a `failed` result ("cancelled …") — unless an attempt is
    /// running right now, whose outcome then decides. Commands that finished are not affected.
    pub fn abort(mut self, label: &str) -> Self {
        self.abort.push(label.to_string());
        self
    }

    /// Ends the instance successfully.
    pub fn complete(mut self) -> Self {
        self.outcome = Some(Outcome::Completed);
        self
    }

    /// Ends the instance as failed.
    pub fn fail(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Some(Outcome::Failed(reason.into()));
        self
    }
}
