//! The runner role: workflows (sagas) that react to aggregate events, effect results and their
//! own durable timers; an exactly-once outbox; effect workers; timers.
//!
//! ```text
//!  Gateway ─Start─▶ WorkflowService ─▶ instance actor ──react──▶ record (state + outbox) in KV
//!                                           ▲                          │ relay
//!  WORKFLOW_EVENTS ── results, timers ──────┤                          ▼
//!  AGGREGATE_EVENTS ─ correlated events ────┘          WORKFLOW_COMMANDS (Nats-Msg-Id = command_id)
//!                                                        │                         │
//!                                              effect worker (ledger)        timer worker
//!                                                        └──── results ──▶ WORKFLOW_EVENTS
//! ```
//!
//! Layout:
//! - [`workflow`] — the [`Workflow`] behaviour (one file per workflow for the user), its inputs
//!   and [`Decision`]s.
//! - [`effect`] — the [`Effect`] behaviour, its errors and [`RetryPolicy`].
//! - [`command_client`] — [`CommandClient`]: effects that send commands to aggregates.
//! - [`record`] — the instance record in KV and the pure step that applies a decision.
//! - `instance` — instance actors: admit, react, commit, flush; the per-workflow registry.
//! - [`outbox`] — the relay lanes, the outbox index and its sweep; the test-only fault point.
//! - `worker` — effect workers (ledger: at most once per `command_id`) and the timer worker.
//! - `inputs` — the handlers of a workflow's input consumers.
//! - `node` — the [`RunnerNode`], its settings and supervision tree.
//! - `service` — `WorkflowService` and `RunnerAdmin`.
//! - [`error`] — [`RunnerError`].

pub mod command_client;
pub mod effect;
pub mod error;
pub mod outbox;
pub mod record;
pub mod workflow;

mod inputs;
mod instance;
mod node;
mod service;
mod worker;

pub use command_client::CommandClient;
pub use effect::{Effect, EffectContext, EffectError, EffectErrorKind, RetryPolicy};
pub use error::RunnerError;
pub use instance::{INSTANCE_KIND, InputOutcome, InstanceSettings};
pub use node::{
    AGGREGATE_ADDR, GRPC_ADDR, INSTANCE_IDLE_TIMEOUT_MS, INSTANCE_MAILBOX, LANES, MAX_ARMED_TIMERS,
    MAX_INSTANCES, OUTBOX_SWEEP_MS, RELAY_LANES, RunnerNode, RunnerNodeBuilder, RunnerNodeError,
    RunnerSettings, SETTINGS,
};
pub use service::{DRAIN_TIMEOUT, to_proto};
pub use worker::{LEASE_MARGIN, LedgerRecord, LedgerStatus};
pub use workflow::{
    Correlation, Decision, EffectResultExt, Input, ReactContext, Workflow, WorkflowError,
};
