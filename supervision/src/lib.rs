//! Cloudlysis supervision: OTP-style supervisors over ractor actors, restart policies, and
//! tree snapshots that nodes serve to operators and dashboards.
//!
//! Quick start:
//!
//! ```
//! use std::time::Duration;
//! use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
//! use cloudlysis_supervision::{ChildSpec, SupervisorConfig, SupervisorRef, Strategy};
//!
//! struct Worker;
//! impl BoundedActor for Worker {
//!     type Msg = ();
//!     type State = ();
//!     type Arguments = ();
//!     const KIND: &'static str = "worker";
//!     async fn pre_start(&self, _: BoundedRef<()>, _: ()) -> Result<(), ActorProcessingErr> { Ok(()) }
//!     async fn handle(&self, _: &BoundedRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> { Ok(()) }
//! }
//!
//! # #[tokio::main] async fn main() {
//! let mailbox = BoundedRef::new(Worker::KIND, 16);
//! let root = SupervisorRef::start(
//!     SupervisorConfig::new("root")
//!         .strategy(Strategy::OneForOne)
//!         .intensity(3, Duration::from_secs(5))
//!         .child(ChildSpec::bounded("worker", mailbox.clone(), || (Worker, ()))),
//!     None,
//! ).await.unwrap();
//! mailbox.send(()).await.unwrap();
//! let tree = root.snapshot(Duration::from_secs(1)).await.unwrap();
//! assert_eq!(tree.children[0].name, "worker");
//! root.shutdown(Duration::from_secs(5)).await.unwrap();
//! # }
//! ```
//!
//! Policies (see [`policy`] for the tables):
//!
//! | Erlang/OTP | here |
//! |---|---|
//! | `permanent` / `transient` / `temporary` | [`Restart`] |
//! | `one_for_one` / `one_for_all` / `rest_for_one` | [`Strategy`] |
//! | `intensity` / `period` | [`Intensity`] |
//! | — (Akka's backoff supervisor) | [`Backoff`] with jitter and reset |
//! | `shutdown` timeout per child | [`ChildSpec::shutdown`] |
//! | `start_child` / `terminate_child` | [`SupervisorRef::start_child`] / [`SupervisorRef::stop_child`] |
//!
//! Layout:
//! - [`policy`] — restart types, strategies, intensity, backoff.
//! - [`spec`] — child specifications (plain, bounded actor, nested supervisor).
//! - [`supervisor`] — the supervisor actor and its handle.
//! - [`snapshot`] — serde tree snapshots and `GET /admin/supervision`.
//! - [`error`] — errors.
//!
//! Why not `ractor_supervisor`: see `docs/adr/0004-own-supervisor-over-ractor.md`.

pub mod error;
pub mod policy;
pub mod snapshot;
pub mod spec;
pub mod supervisor;

pub use error::SupervisorError;
pub use policy::{Backoff, Intensity, Restart, Strategy};
pub use snapshot::{ChildSnapshot, MailboxStats, Status, SupervisorSnapshot};
pub use spec::{ChildSpec, Started};
pub use supervisor::{SupervisorConfig, SupervisorMsg, SupervisorRef};
