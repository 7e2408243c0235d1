//! The running runner node: its registered workflows and effect types, its supervision tree,
//! and the consumers it runs (and replaces on a reload). Registration and start are in
//! `builder`; its gRPC services in `serve`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use cloudlysis_proto::workflows::workflow_service_server::WorkflowServiceServer;
use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::mailbox::BoundedRef;
use cloudlysis_supervision::{ChildSpec, SupervisorRef};
use tokio::sync::watch;

use super::drain::Drainer;
use super::effect::RetryPolicy;
use super::instance::WorkflowHost;
use super::outbox::{Relay, RelayCtx};
use super::settings::{LiveSettings, RunnerSettings};
use super::worker::RetryNow;
use crate::consumer::ConsumerMsg;
use crate::task::AbortOnDrop;

/// `max_ack_pending` of every effect consumer: a ceiling for all runners together. Each node's
/// effect concurrency (`runner.max_in_flight`, `runner.effect_concurrency`; reloadable, at most
/// this) bounds what that node fetches.
pub const EFFECT_ACK_PENDING_CEILING: u64 = 10_000;

/// The runner node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunnerNodeError {
    /// A workflow or effect name is invalid, reserved or registered twice.
    #[error("{0}")]
    Registration(String),
    /// NATS failed.
    #[error("{0}")]
    Nats(String),
    /// The supervision tree could not start.
    #[error(transparent)]
    Supervision(#[from] cloudlysis_supervision::SupervisorError),
}

/// Re-reads the configuration for `RunnerAdmin/Reload` (env and the config file, as at start).
pub type ReloadSource = Arc<dyn Fn() -> Result<ConfigSource, String> + Send + Sync>;

/// Who a consumer works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Workflow(&'static str),
    Effect(&'static str),
    Timers,
}

/// One consumer subtree the node runs.
#[derive(Clone)]
pub(crate) struct ConsumerEntry {
    /// Its child name under the root.
    pub(crate) child: String,
    pub(crate) stream: &'static str,
    pub(crate) durable: String,
    pub(crate) control: BoundedRef<ConsumerMsg>,
    pub(crate) owner: Owner,
}

/// A consumer subtree to start and the entry that tracks it.
pub(crate) struct ConsumerSpec {
    pub(crate) spec: ChildSpec,
    pub(crate) entry: ConsumerEntry,
}

/// What registrations build their consumers with.
pub(crate) struct Ctx {
    pub(crate) js: jetstream::Context,
    pub(crate) ledger: jetstream::kv::Store,
    pub(crate) settings: RunnerSettings,
    pub(crate) intake: watch::Receiver<bool>,
    pub(crate) retry_now: Arc<RetryNow>,
}

pub(crate) type MakeHost = Box<
    dyn FnOnce(
            RelayCtx,
            Relay,
            SupervisorRef,
            super::instance::InstanceSettings,
            jetstream::kv::Store,
        ) -> Arc<dyn WorkflowHost>
        + Send,
>;
pub(crate) type MakeInputs =
    Arc<dyn Fn(&Ctx, Arc<dyn WorkflowHost>) -> Vec<ConsumerSpec> + Send + Sync>;
pub(crate) type MakeWorker = Arc<dyn Fn(&Ctx, u64, Arc<AtomicU32>) -> ConsumerSpec + Send + Sync>;

/// A registered workflow on a running node.
pub(crate) struct WorkflowSlot {
    pub(crate) name: &'static str,
    pub(crate) host: Arc<dyn WorkflowHost>,
    pub(crate) inputs: MakeInputs,
    pub(crate) enabled: AtomicBool,
}

/// A registered effect type on a running node.
pub(crate) struct EffectSlot {
    pub(crate) effect_type: &'static str,
    pub(crate) policy: RetryPolicy,
    pub(crate) worker: MakeWorker,
    pub(crate) concurrency: AtomicU64,
    /// Attempts per command when set (0: the policy's).
    pub(crate) max_attempts: Arc<AtomicU32>,
}

/// A running runner node. Cheap to clone.
#[derive(Clone)]
pub struct RunnerNode {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) hosts: HashMap<&'static str, Arc<dyn WorkflowHost>>,
    pub(crate) workflows: Vec<WorkflowSlot>,
    pub(crate) effects: Vec<EffectSlot>,
    pub(crate) ctx: Ctx,
    pub(crate) root: SupervisorRef,
    pub(crate) consumers: tokio::sync::Mutex<Vec<ConsumerEntry>>,
    /// `true`: every consumer stops fetching (a drain).
    pub(crate) intake: watch::Sender<bool>,
    pub(crate) drain: Drainer,
    pub(crate) live: std::sync::Mutex<LiveSettings>,
    pub(crate) reload: Option<ReloadSource>,
    /// One reload at a time.
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    /// The node's gRPC health, shared by its server and its in-process callers (`serve.rs`).
    pub(crate) health: tonic_health::server::HealthReporter,
    pub(crate) relay: Relay,
    pub(crate) relay_ctx: RelayCtx,
    pub(crate) audit: jetstream::kv::Store,
    pub(crate) node_id: String,
    pub(crate) started: std::time::Instant,
    pub(crate) _tasks: Vec<AbortOnDrop>,
}

impl RunnerNode {
    /// The root supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.inner.root
    }

    /// Workflows registered on this node, sorted.
    pub fn workflows(&self) -> Vec<&'static str> {
        self.inner.workflows.iter().map(|w| w.name).collect()
    }

    /// Workflows that take inputs and starts here now, sorted.
    pub fn enabled_workflows(&self) -> Vec<&'static str> {
        self.inner
            .workflows
            .iter()
            .filter(|w| w.enabled.load(Ordering::SeqCst))
            .map(|w| w.name)
            .collect()
    }

    /// Effect types executed on this node, sorted.
    pub fn effect_types(&self) -> Vec<&'static str> {
        self.inner.effects.iter().map(|e| e.effect_type).collect()
    }

    /// The node id (also `NodeAdmin/Describe`'s).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Starts a consumer subtree and tracks it.
    pub(crate) async fn start_consumer(&self, c: ConsumerSpec) -> Result<(), String> {
        self.inner
            .root
            .start_child(c.spec)
            .await
            .map_err(|e| e.to_string())?;
        self.inner.consumers.lock().await.push(c.entry);
        Ok(())
    }

    /// Drains a consumer subtree (in-flight messages finish, up to the ack wait) and stops it.
    pub(crate) async fn stop_consumer(&self, child: &str) -> Result<(), String> {
        let entry = {
            let mut all = self.inner.consumers.lock().await;
            let Some(i) = all.iter().position(|c| c.child == child) else {
                return Ok(());
            };
            all.remove(i)
        };
        let wait = self.inner.ctx.settings.consumer.ack_wait + Duration::from_secs(1);
        let _ = entry.control.ask(ConsumerMsg::Drain, wait).await;
        match self.inner.root.stop_child(child).await {
            Ok(()) | Err(cloudlysis_supervision::SupervisorError::NoSuchChild { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Restarts effect `slot`'s consumer with `concurrency` commands at once, draining the old
    /// one first so nothing in flight is dropped.
    pub(crate) async fn replace_effect_consumer(
        &self,
        slot: &EffectSlot,
        concurrency: u64,
    ) -> Result<(), String> {
        self.stop_consumer(&format!("effect-{}", slot.effect_type))
            .await?;
        let c = (slot.worker)(&self.inner.ctx, concurrency, slot.max_attempts.clone());
        self.start_consumer(c).await?;
        slot.concurrency.store(concurrency, Ordering::SeqCst);
        Ok(())
    }

    /// Starts (`true`) or stops a workflow's input consumers.
    pub(crate) async fn set_workflow_enabled(
        &self,
        slot: &WorkflowSlot,
        enabled: bool,
    ) -> Result<(), String> {
        if slot.enabled.swap(enabled, Ordering::SeqCst) == enabled {
            return Ok(());
        }
        if enabled {
            for c in (slot.inputs)(&self.inner.ctx, slot.host.clone()) {
                self.start_consumer(c).await?;
            }
        } else {
            let children: Vec<String> = self
                .inner
                .consumers
                .lock()
                .await
                .iter()
                .filter(|c| c.owner == Owner::Workflow(slot.name))
                .map(|c| c.child.clone())
                .collect();
            for child in children {
                self.stop_consumer(&child).await?;
            }
        }
        Ok(())
    }

    /// Sets the gRPC health of `WorkflowService` and of the whole server (the empty service
    /// name that load balancers and probes ask for): serving unless draining. `RunnerAdmin`
    /// stays serving, so a draining node can still be watched and undrained.
    pub(crate) async fn set_health(&self, serving: bool) {
        use tonic_health::ServingStatus;
        let h = &self.inner.health;
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        h.set_service_status("", status).await;
        if serving {
            h.set_serving::<WorkflowServiceServer<RunnerNode>>().await;
        } else {
            h.set_not_serving::<WorkflowServiceServer<RunnerNode>>()
                .await;
        }
    }
}
