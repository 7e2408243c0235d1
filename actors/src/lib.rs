//! Cloudlysis actors: the behaviour traits and the node actors that run them.
//!
//! Layout:
//! - [`aggregate`] — the [`aggregate::Aggregate`] behaviour and its entity actors.
//! - [`aggregate_node`] — the aggregate node: registry, `CommandService`, gRPC serving.
//! - [`handler`] — [`handler::EventHandler`]: what a consumer dispatches decoded messages to.
//! - [`consumer`] — the JetStream consumer actor (durable pull, bounded dispatch, ack / nak /
//!   poison / skip, drain) and [`consumer::supervised`] to run it under a supervisor.
//! - [`view`] — the [`view::View`] behaviour and the store that folds events into documents.
//! - [`view_generation`] — view generations: rebuilding a view while it answers queries.
//! - [`projection_node`] — the projection node: views, checkpoints, `QueryService`,
//!   `ProjectionAdmin`.
//! - [`node_admin`] — `node.admin.v1.NodeAdmin` over a node's supervision tree.
//!
//! The runner behaviours arrive with their issue.

pub mod aggregate;
pub mod aggregate_node;
pub mod consumer;
pub mod handler;
pub mod node_admin;
pub mod projection_node;
pub mod view;
pub mod view_generation;
