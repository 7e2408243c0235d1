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
        match self.host.result(d.event.clone()).await {
            Ok(_) => Ok(()),
            // A malformed result can never apply: fail it towards poison.
            Err(e @ RunnerError::InvalidArgument(_)) => Err(HandlerError::new(e.to_string())),
            Err(e) => Err(HandlerError::new(e.to_string())),
        }
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
                .map_err(|e| HandlerError::new(e.to_string()))?;
        }
        Ok(())
    }
}
