//! The `fulfilment` workflow: once an order is paid, hand it to the carrier.
//!
//! An order's `Paid` event starts one instance per order (instance id = order id); the
//! instance issues the `ship` effect, which records `Ship` on the order with the carrier's name;
//! the instance completes when that succeeds and fails with the reason when it does not. An
//! instance can also be started by hand: `POST /v1/workflows/fulfilment/<order>` with
//! `{"order": "<order>"}`.

use cloudlysis_actors::runner::CommandClient;
use cloudlysis_actors::runner::effect::{Effect, EffectContext, EffectError};
use cloudlysis_actors::runner::workflow::{
    Correlation, Decision, Input, ReactContext, Workflow, WorkflowError,
};
use cloudlysis_runtime::envelope::EventEnvelope;
use serde::{Deserialize, Serialize};

/// The carrier every order ships with.
pub const CARRIER: &str = "cloudlysis-post";

/// The fulfilment workflow.
pub struct Fulfilment;

/// Where a fulfilment is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not started.
    #[default]
    Idle,
    /// The `ship` effect is pending.
    Shipping,
    /// The order is shipped.
    Shipped,
}

/// Instance state.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfilmentState {
    /// The order.
    pub order: String,
    /// Where the fulfilment is.
    pub stage: Stage,
}

/// Starts a fulfilment by hand.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartFulfilment {
    /// The order to ship.
    pub order: String,
}

/// The `ship` effect's command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipOrder {
    /// The order to ship.
    pub order: String,
}

/// The `ship` effect's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedOrder {
    /// The order's version after `Shipped`.
    pub version: u64,
}

impl Workflow for Fulfilment {
    const NAME: &'static str = "fulfilment";
    const SCHEMA_VERSION: u32 = 1;
    type State = FulfilmentState;
    type Start = StartFulfilment;

    fn effect_types() -> &'static [&'static str] {
        &[ShipEffect::TYPE]
    }

    fn aggregate_types() -> &'static [&'static str] {
        &["order"]
    }

    fn correlate(event: &EventEnvelope) -> Option<Correlation> {
        (event.event_type == "Paid").then(|| Correlation {
            instance: event.aggregate_id.clone(),
            may_start: true,
        })
    }

    fn react(
        s: &FulfilmentState,
        input: Input<'_, StartFulfilment>,
        _: &ReactContext,
    ) -> Result<Decision<FulfilmentState>, WorkflowError> {
        match input {
            Input::Start(start) => Ok(ship(s, start.order)),
            Input::Event(event) if event.event_type == "Paid" => {
                Ok(ship(s, event.aggregate_id.clone()))
            }
            Input::Result(r) if r.is_ok() => Ok(Decision::new(FulfilmentState {
                stage: Stage::Shipped,
                ..s.clone()
            })
            .complete()),
            Input::Result(r) => Ok(Decision::new(s.clone()).fail(format!(
                "the order could not be shipped: {}",
                r.error().unwrap_or("unknown error")
            ))),
            Input::Cancel(reason) => Ok(Decision::new(s.clone())
                .abort("*")
                .fail(format!("cancelled: {reason}"))),
            Input::Event(_) | Input::Timer(_) => Ok(Decision::new(s.clone())),
        }
    }
}

/// Issues `ship` once: a second `Paid` (or start) while shipping changes nothing.
fn ship(s: &FulfilmentState, order: String) -> Decision<FulfilmentState> {
    if s.stage != Stage::Idle {
        return Decision::new(s.clone());
    }
    let command = ShipOrder {
        order: order.clone(),
    };
    Decision::new(FulfilmentState {
        order,
        stage: Stage::Shipping,
    })
    .issue_effect::<ShipEffect>("ship", &command)
}

/// The `ship` effect: hands the order to [`CARRIER`] and records `Ship` on the `order`
/// aggregate (idempotent: the command id is the idempotency key).
pub struct ShipEffect(pub CommandClient);

impl Effect for ShipEffect {
    const TYPE: &'static str = "ship";
    type Command = ShipOrder;
    type Output = ShippedOrder;

    async fn execute(
        &self,
        cmd: ShipOrder,
        ctx: &EffectContext,
    ) -> Result<ShippedOrder, EffectError> {
        let reply = self
            .0
            .execute(
                ctx,
                "order",
                &cmd.order,
                "Ship",
                &serde_json::json!({ "carrier": CARRIER }),
            )
            .await?;
        Ok(ShippedOrder {
            version: reply.version,
        })
    }
}
