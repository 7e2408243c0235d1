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
//! - [`settings`] — [`RunnerSettings`] (read at start) and [`LiveSettings`] (reloadable).
//! - `node` — the [`RunnerNode`], its supervision tree and consumers.
//! - `drain` — the drain state machine ([`DrainState`]).
//! - `service` — `WorkflowService` (start, get, list, operator verbs) and `RunnerAdmin` (drain,
//!   undrain, status, reload).
//! - [`error`] — [`RunnerError`].

pub mod command_client;
pub mod effect;
pub mod error;
pub mod outbox;
pub mod record;
pub mod workflow;

mod builder;
mod drain;
mod inputs;
mod instance;
mod node;
mod reload;
mod serve;
mod service;
pub mod settings;
mod worker;

pub use builder::RunnerNodeBuilder;
pub use command_client::CommandClient;
pub use drain::{DrainProgress, DrainState};
pub use effect::{Effect, EffectContext, EffectError, EffectErrorKind, RetryPolicy};
pub use error::RunnerError;
pub use instance::{INSTANCE_KIND, InputOutcome, InstanceSettings, Verb};
pub use node::{ReloadSource, RunnerNode, RunnerNodeError};
pub use service::{DRAIN_TIMEOUT, to_proto};
pub use settings::{
    AGGREGATE_ADDR, DRAIN_GRACE_MS, EFFECT_CONCURRENCY, EFFECT_MAX_ATTEMPTS, ENABLED_WORKFLOWS,
    GRPC_ADDR, INSTANCE_IDLE_TIMEOUT_MS, INSTANCE_MAILBOX, LANES, LiveSettings, MAX_ARMED_TIMERS,
    MAX_INSTANCES, OUTBOX_SWEEP_MS, RELAY_LANES, RunnerSettings, SETTINGS,
};
pub use worker::{LEASE_MARGIN, LedgerRecord, LedgerStatus};
pub use workflow::{
    Correlation, Decision, EffectResultExt, Input, ReactContext, Workflow, WorkflowError,
};
