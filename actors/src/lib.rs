//! Cloudlysis actors: the behaviour traits (`Aggregate`, `View`, `Workflow`, `Effect`) and the
//! node actors that run them (aggregate, projection, runner, JetStream consumer, outbox relay).
//!
//! Placeholder: filled by the actor-core, command-path and event-path issues.
