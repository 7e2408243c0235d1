//! Child specifications: how to start a child and how to treat it when it stops.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cloudlysis_runtime::mailbox::{self, BoundedActor, BoundedRef};
use ractor::ActorCell;

use crate::policy::Restart;
use crate::snapshot::MailboxStats;
use crate::supervisor::{SupervisorConfig, SupervisorRef};

/// Default time a child gets to stop before it is killed.
pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);

/// What a start function returns: the linked actor, and optionally how to read its mailbox and
/// (for a nested supervisor) its handle.
pub struct Started {
    /// The running actor, linked to the supervisor.
    pub cell: ActorCell,
    /// Reads depth and capacity for snapshots.
    pub mailbox: Option<MailboxProbe>,
    /// Set when the child is itself a supervisor.
    pub supervisor: Option<SupervisorRef>,
}

/// Reads a bounded mailbox's depth and capacity.
pub type MailboxProbe = Arc<dyn Fn() -> MailboxStats + Send + Sync>;

type StartFuture = Pin<Box<dyn Future<Output = Result<Started, String>> + Send>>;
type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// How to start one child and how to treat it when it stops.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique name under the supervisor (not a global registry name).
    pub name: String,
    /// Kind: a bounded metric label (`jetstream_consumer`, `entity`, …).
    pub kind: &'static str,
    /// Restart type (default permanent).
    pub restart: Restart,
    /// Time the child gets to stop before it is killed (default 5 s).
    pub shutdown: Duration,
    pub(crate) start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl ChildSpec {
    /// A child started by `start`, which receives the supervisor's cell and must spawn the actor
    /// linked to it.
    pub fn new<F, Fut>(name: impl Into<String>, kind: &'static str, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Started, String>> + Send + 'static,
    {
        Self {
            name: name.into(),
            kind,
            restart: Restart::Permanent,
            shutdown: DEFAULT_SHUTDOWN,
            start: Arc::new(move |cell| Box::pin(start(cell))),
        }
    }

    /// A [`BoundedActor`] behind `mailbox`; every (re)start builds the actor and its arguments
    /// with `make` and re-attaches the same mailbox, so senders keep their handle.
    pub fn bounded<A, F>(name: impl Into<String>, mailbox: BoundedRef<A::Msg>, make: F) -> Self
    where
        A: BoundedActor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        Self::new(name, A::KIND, move |supervisor| {
            let (make, mailbox) = (make.clone(), mailbox.clone());
            async move {
                let (actor, args) = make();
                let (actor_ref, _) = mailbox::spawn(actor, args, &mailbox, Some(supervisor))
                    .await
                    .map_err(|e| e.to_string())?;
                let probe = mailbox.clone();
                Ok(Started {
                    cell: actor_ref.get_cell(),
                    mailbox: Some(Arc::new(move || MailboxStats {
                        depth: probe.depth() as u64,
                        capacity: probe.capacity() as u64,
                    })),
                    supervisor: None,
                })
            }
        })
    }

    /// A nested supervisor built from `config` on every (re)start.
    pub fn supervisor(config: SupervisorConfig) -> Self {
        let name = config.name.clone();
        Self::new(name, "supervisor", move |parent| {
            let config = config.clone();
            async move {
                let sup = SupervisorRef::start(config, Some(parent))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Started {
                    cell: sup.cell(),
                    mailbox: None,
                    supervisor: Some(sup),
                })
            }
        })
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the shutdown timeout.
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }
}
