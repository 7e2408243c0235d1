//! The handlers of a workflow's input consumers: effect results (and timer firings) from
//! `WORKFLOW_EVENTS`, and aggregate events from `AGGREGATE_EVENTS` — each routed to its
//! instance's actor, acknowledged once the instance committed the step (or recognised the input
//! as applied before).

use std::sync::Arc;

use cloudlysis_runtime::envelope::Commit;
use cloudlysis_runtime::mailbox::ActorProcessingErr;
use cloudlysis_runtime::workflow::EffectResult;

use super::error::RunnerError;
use super::instance::WorkflowHost;
use crate::handler::{Delivery, EventHandler, HandlerError};

/// What an input that did not apply means for its message: an outage, a full instance, racing
/// writers or an instance that did not answer in time pass — the message is held and handed in
/// again (inputs are idempotent); anything else (malformed, refused, of another workflow's
/// record) fails it towards poison.
fn input_error(e: RunnerError) -> HandlerError {
    match e {
        RunnerError::StoreUnavailable(_)
        | RunnerError::Busy(_)
        | RunnerError::Conflict(_)
        | RunnerError::Timeout(_) => HandlerError::unavailable(e.to_string()),
        other => HandlerError::new(other.to_string()),
    }
}

/// Feeds effect results and timer firings addressed to one workflow to its instances.
pub(crate) struct ResultInputs {
    pub(crate) workflow: &'static str,
    pub(crate) host: Arc<dyn WorkflowHost>,
}

impl EventHandler for ResultInputs {
    type Event = EffectResult;
    type State = ();
    const KIND: &'static str = "workflow_inputs";

    async fn init(&self) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<EffectResult>, _: &mut ()) -> Result<(), HandlerError> {
        // Results of an effect type several workflows use reach all of them; each takes its own.
        if d.event.workflow != self.workflow {
            return Ok(());
        }
        self.host
            .result(d.event.clone())
            .await
            .map(|_| ())
            .map_err(input_error)
    }
}

/// Feeds the aggregate events a workflow follows to the instances they correlate to.
pub(crate) struct EventInputs {
    pub(crate) aggregate_types: &'static [&'static str],
    pub(crate) host: Arc<dyn WorkflowHost>,
}

impl EventHandler for EventInputs {
    type Event = Commit;
    type State = ();
    const KIND: &'static str = "workflow_inputs";

    async fn init(&self) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<Commit>, _: &mut ()) -> Result<(), HandlerError> {
        for (i, event) in d.event.events.iter().enumerate() {
            if !self
                .aggregate_types
                .contains(&event.aggregate_type.as_str())
            {
                continue;
            }
            self.host
                .event(event.clone(), d.meta.stream_sequence, i as u32)
                .await
                .map_err(input_error)?;
        }
        Ok(())
    }
}
