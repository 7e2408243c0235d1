//! Cloudlysis as a library: build your own node binary from your own crate.
//!
//! [`App`] registers a developer's behaviours (aggregates, views, workflows, effects) and
//! provides every role subcommand over them; the shipped `cloudlysis` binary is that builder
//! with the demo domain (`src/main.rs`). The other modules are the subcommands' wiring.

mod all;
pub mod app;
mod bench;
mod bench_entities;
mod bench_fairness;
mod bench_http;
mod bench_overload;
mod bench_rehydration;
mod bench_views;
mod bench_workflows;
mod cli;
pub mod demo;
mod dev;
mod dev_nats;
pub mod harness;
mod nodes;
mod platform;
mod poison;
mod roles;
mod streams;

pub use app::{App, Behaviours, RegistrationError};
