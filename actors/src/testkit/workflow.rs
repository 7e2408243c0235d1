//! The workflow kit: feed an instance inputs one at a time, as the runner does, and assert
//! the commands it issues, the timers it arms, its state and how it ends.
//!
//! ```text
//! let mut kit = testkit::workflow::<Transfer>();
//! kit.start_json(json!({"from": "a", "to": "b", "amount": 5})).then_issues(&["withdraw"]);
//! kit.result_ok("withdraw", json!({"version": 2})).then_issues(&["deposit"]);
//! kit.result_ok("deposit", json!({"version": 1})).then_completes();
//! ```

use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_runtime::workflow::{EffectOutcome, EffectResult};

use super::TENANT;
use crate::runner::workflow::{Decision, Input, Outcome, ReactContext, Workflow, WorkflowError};

/// The instance id the kit's instance has.
pub const INSTANCE: &str = "wf-1";
/// The kit's clock (Unix ms); each step advances it by [`STEP_MS`].
pub const START_MS: u64 = 1_767_225_600_000;
/// How far the kit's clock moves per input.
pub const STEP_MS: u64 = 1_000;

/// Starts a workflow test with a fresh instance.
pub fn workflow<W: Workflow>() -> WorkflowKit<W> {
    WorkflowKit {
        state: W::State::default(),
        step: 0,
        ended: None,
        pending: Vec::new(),
    }
}

/// One workflow instance under test. Each input reacts on the state the previous decision
/// left (a refused input leaves it unchanged, as the runner does).
pub struct WorkflowKit<W: Workflow> {
    state: W::State,
    step: u64,
    ended: Option<Outcome>,
    /// Issued commands without a result yet: (effect type, label).
    pending: Vec<(String, String)>,
}

impl<W: Workflow> WorkflowKit<W> {
    /// The instance's state now.
    pub fn state(&self) -> &W::State {
        &self.state
    }

    /// How the instance ended, if it has.
    pub fn ended(&self) -> Option<&Outcome> {
        self.ended.as_ref()
    }

    /// Starts the instance with a typed start input.
    pub fn start(&mut self, start: W::Start) -> Reacted<'_, W> {
        self.react(Input::Start(start))
    }

    /// Starts the instance with the JSON body of `POST /v1/workflows/<name>/<id>`. Panics when
    /// it does not decode (the Gateway's 400).
    #[track_caller]
    pub fn start_json(&mut self, body: serde_json::Value) -> Reacted<'_, W> {
        match serde_json::from_value::<W::Start>(body) {
            Ok(start) => self.start(start),
            Err(e) => panic!("workflow `{}`: the start does not decode: {e}", W::NAME),
        }
    }

    /// Feeds an aggregate event (it must correlate to an instance, as the runner requires).
    #[track_caller]
    pub fn event(&mut self, event: &EventEnvelope) -> Reacted<'_, W> {
        if W::correlate(event).is_none() {
            panic!(
                "workflow `{}`: {} {}#{} ({}) correlates to no instance; the runner would not deliver it",
                W::NAME,
                event.aggregate_type,
                event.aggregate_id,
                event.sequence,
                event.event_type
            );
        }
        self.react(Input::Event(event))
    }

    /// Feeds the successful result of the pending command labelled `label`.
    #[track_caller]
    pub fn result_ok(&mut self, label: &str, output: serde_json::Value) -> Reacted<'_, W> {
        let result = self.result(label, EffectOutcome::Ok { output });
        self.react(Input::Result(&result))
    }

    /// Feeds the failed result of the pending command labelled `label`.
    #[track_caller]
    pub fn result_failed(&mut self, label: &str, error: &str) -> Reacted<'_, W> {
        let result = self.result(
            label,
            EffectOutcome::Failed {
                error: error.into(),
                outcome_unknown: false,
            },
        );
        self.react(Input::Result(&result))
    }

    /// Fires timer `name`.
    pub fn timer(&mut self, name: &str) -> Reacted<'_, W> {
        self.react(Input::Timer(name))
    }

    /// An operator cancels the instance.
    pub fn cancel(&mut self, reason: &str) -> Reacted<'_, W> {
        self.react(Input::Cancel(reason))
    }

    #[track_caller]
    fn result(&mut self, label: &str, outcome: EffectOutcome) -> EffectResult {
        let Some(i) = self.pending.iter().position(|(_, l)| l == label) else {
            panic!(
                "workflow `{}`: no pending command labelled `{label}`; pending: {:?}",
                W::NAME,
                self.pending
            );
        };
        let (effect_type, label) = self.pending.remove(i);
        EffectResult {
            schema_version: cloudlysis_runtime::workflow::SCHEMA_VERSION,
            command_id: format!("{INSTANCE}-{label}-{}", self.step),
            tenant_id: TENANT.into(),
            effect_type,
            workflow: W::NAME.into(),
            instance: INSTANCE.into(),
            label,
            completed_at_ms: START_MS + self.step * STEP_MS,
            attempts: 1,
            outcome,
            correlation_id: None,
            traceparent: None,
        }
    }

    fn react(&mut self, input: Input<'_, W::Start>) -> Reacted<'_, W> {
        let ctx = ReactContext {
            tenant: TENANT.into(),
            instance: INSTANCE.into(),
            step: self.step,
            now_ms: START_MS + self.step * STEP_MS,
        };
        let decision = W::react(&self.state, input, &ctx);
        if let Ok(d) = &decision {
            self.step += 1;
            self.state = d.state.clone();
            for issue in &d.issue {
                self.pending
                    .push((issue.effect_type.clone(), issue.label.clone()));
            }
            if d.abort.iter().any(|l| l == "*") {
                self.pending.clear();
            }
            if d.outcome.is_some() {
                self.ended = d.outcome.clone();
            }
        }
        Reacted {
            kit: self,
            decision,
        }
    }
}

/// The decision of one input, to assert on.
pub struct Reacted<'k, W: Workflow> {
    kit: &'k WorkflowKit<W>,
    decision: Result<Decision<W::State>, WorkflowError>,
}

impl<W: Workflow> Reacted<'_, W> {
    /// The decision (or refusal), for assertions the kit does not offer.
    pub fn decision(&self) -> &Result<Decision<W::State>, WorkflowError> {
        &self.decision
    }

    #[track_caller]
    fn accepted(&self) -> &Decision<W::State> {
        match &self.decision {
            Ok(d) => d,
            Err(e) => panic!("workflow `{}`: the input was refused: {e}", W::NAME),
        }
    }

    /// Asserts the decision issued commands to exactly these effect types, in order.
    #[track_caller]
    pub fn then_issues(self, effect_types: &[&str]) -> Self {
        let d = self.accepted();
        let issued: Vec<&str> = d.issue.iter().map(|i| i.effect_type.as_str()).collect();
        assert_eq!(
            issued,
            effect_types,
            "workflow `{}`: issued commands (expected left, actual right)",
            W::NAME
        );
        self
    }

    /// Asserts the decision armed timer `name`.
    #[track_caller]
    pub fn then_arms(self, name: &str) -> Self {
        let d = self.accepted();
        assert!(
            d.arm.iter().any(|(n, _)| n == name),
            "workflow `{}`: timer `{name}` not armed; armed: {:?}",
            W::NAME,
            d.arm
        );
        self
    }

    /// Asserts the instance completed with this input.
    #[track_caller]
    pub fn then_completes(self) -> Self {
        let d = self.accepted();
        assert_eq!(
            d.outcome,
            Some(Outcome::Completed),
            "workflow `{}`: expected completion",
            W::NAME
        );
        self
    }

    /// Asserts the instance failed with a reason containing `containing`.
    #[track_caller]
    pub fn then_fails(self, containing: &str) -> Self {
        let d = self.accepted();
        match &d.outcome {
            Some(Outcome::Failed(reason)) if reason.contains(containing) => self,
            other => panic!(
                "workflow `{}`: expected a failure containing {containing:?}, got {other:?}",
                W::NAME
            ),
        }
    }

    /// Asserts the input was refused with a message containing `containing` (a start: 422).
    #[track_caller]
    pub fn then_refused(self, containing: &str) {
        match &self.decision {
            Err(e) if e.to_string().contains(containing) => {}
            other => panic!(
                "workflow `{}`: expected a refusal containing {containing:?}, got {:?}",
                W::NAME,
                other.as_ref().map(|d| (&d.issue, &d.outcome))
            ),
        }
    }

    /// Commands issued and still without a result, as (effect type, label).
    pub fn pending(&self) -> &[(String, String)] {
        &self.kit.pending
    }
}
