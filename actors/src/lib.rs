//! Cloudlysis actors: the behaviour traits and the node actors that run them.
//!
//! Layout — one folder per node role, with the pieces they share beside them:
//! - [`aggregate`] — the [`Aggregate`] behaviour, its entities, and the aggregate node
//!   (`CommandService`).
//! - [`projection`] — the [`View`] behaviour, view generations and rebuilds, checkpoints, and
//!   the projection node (`QueryService`, `ProjectionAdmin`).
//! - [`runner`] — the [`Workflow`] and [`Effect`] behaviours, workflow instances, the outbox
//!   relay, effect workers, durable timers, and the runner node (`WorkflowService`,
//!   `RunnerAdmin`).
//! - [`handler`] — [`handler::EventHandler`]: what a consumer dispatches decoded messages to.
//! - [`consumer`] — the JetStream consumer actor (durable pull, bounded dispatch, ack / nak /
//!   poison / skip, drain) and [`consumer::supervised`] to run it under a supervisor.
//! - [`node_admin`] — `node.admin.v1.NodeAdmin` over a node's supervision tree.
//! - [`ops`] — `ops.admin.v1.OpsAdmin`: poison records (list, inspect, redrive, purge) and the
//!   audit trail.
//! - [`store`] — what a failed store read or write means: an outage a handler holds the message
//!   through, or a record that can never be written.
//! - [`kv_scan`] — bounded reads of the latest values under a KV key prefix.
//! - [`grpc`] — gRPC plumbing every node shares (deadlines from `grpc-timeout`).
//! - [`testkit`] — given/when/then tests for aggregates and views, pure (no NATS).

pub mod aggregate;
pub mod consumer;
pub mod grpc;
pub mod handler;
mod health;
mod holding;
mod idle;
pub mod kv_scan;
pub mod node_admin;
pub mod ops;
pub mod projection;
pub mod runner;
pub mod store;
mod task;
pub mod testkit;

pub use aggregate::Aggregate;
pub use projection::View;
pub use runner::{Effect, Workflow};
