//! The projection role: views folded from aggregate events into documents in NATS KV, their
//! checkpoints, rebuilds, and the query service.
//!
//! A projection node runs registered views — one durable consumer per view (PerView mode) or
//! one for all of them (Single mode) — tracks each view's checkpoint, and serves
//! `projection.gateway.v1.QueryService` and `projection.admin.v1.ProjectionAdmin`. Queries take
//! the tenant from gRPC metadata only and read keys under `<view>.<tenant>.`, so no query can
//! reach another tenant's documents. `min_sequence` waits (up to the call's deadline) until the
//! view's checkpoint has reached it: read-your-writes after a command.
//!
//! Layout:
//! - [`view`] — the [`View`] behaviour (one file per view for the user) and the store that folds
//!   events into documents with a per-document redelivery guard.
//! - [`typed`] — [`TypedView`]: a view over one aggregate type that folds its decoded events.
//! - [`generation`] — view generations: rebuilding a view while it answers queries.
//! - [`batch`] — a lane's batch writer: one write per document per batch (ADR 0006 (3)).
//! - [`outage`] — a store that does not answer holds the events and is retried, never their
//!   poison.
//! - `node` — the [`ProjectionNode`] and its builder: registration, modes, gRPC serving.
//! - `mode` — [`ProjectionMode`] (PerView or Single), and the refusal of a mode that would apply
//!   events twice.
//! - `controller` — one task per view: starts, switches and retires generations.
//! - `tracker` — checkpoint trackers (ack floor of the durable consumer, ADR 0006).
//! - `query` — `QueryService` (Get, List).
//! - `admin` — `ProjectionAdmin` (rebuild, cancel, describe).

pub mod generation;
pub mod typed;
pub mod view;

mod admin;
pub mod batch;
mod controller;
mod mode;
mod node;
pub mod outage;
mod query;
mod serve;
mod tracker;

pub use controller::{IDLE_POLL, REBUILD_POLL, RETIRE_GRACE, SWITCH_WAIT};
pub use mode::{MODE, ProjectionMode};
pub use node::{
    DEFAULT_LANES, GRPC_ADDR, LANES, MAX_LANES, NATS_TIMEOUT, ProjectionError, ProjectionNode,
    ProjectionNodeBuilder, view_child_name,
};
pub use query::{DEFAULT_PAGE_SIZE, LIST_TIMEOUT, MAX_CONCURRENT_LISTS, MAX_PAGE_SIZE};
pub use tracker::{CHECKPOINT_INTERVAL, MIN_REFRESH, PERSIST_INTERVAL};
pub use typed::{Typed, TypedView, TypedViewOf};
pub use view::View;
