//! The runner node: registration of workflows and effects, its settings, its supervision tree,
//! and gRPC serving (`WorkflowService`, `RunnerAdmin`, `NodeAdmin`, health, reflection).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use cloudlysis_proto::runner::runner_admin_server::RunnerAdminServer;
use cloudlysis_proto::workflows::workflow_service_server::WorkflowServiceServer;
use cloudlysis_runtime::config::{ConfigError, ConfigSource, Setting};
use cloudlysis_runtime::consumer::{ConsumerPolicy, ConsumerRole, ConsumerSettings, DurableName};
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_runtime::mailbox::BoundedRef;
use cloudlysis_runtime::subject::{SubjectToken, filter, validate_token};
use cloudlysis_runtime::workflow::{self as wire, EffectCommand, EffectResult};
use cloudlysis_runtime::{kv as buckets, stream};
use cloudlysis_supervision::{Backoff, ChildSpec, SupervisorConfig, SupervisorRef};

use super::effect::Effect;
use super::inputs::{EventInputs, ResultInputs};
use super::instance::{Host, InstanceSettings, WorkflowHost};
use super::outbox::{self, Fault, Relay, RelayActor, RelayCtx, RelayMsg};
use super::worker::{EffectWorker, TimerWorker};
use super::workflow::Workflow;
use crate::consumer::{self, ConsumerMsg, PartitionFn};
use crate::node_admin::NodeAdminService;

macro_rules! setting {
    ($name:ident, $key:literal, $env:literal, $flag:literal, $doc:literal) => {
        #[doc = $doc]
        pub const $name: Setting = Setting {
            key: $key,
            env: $env,
            flag: $flag,
            doc: $doc,
        };
    };
}

setting!(
    GRPC_ADDR,
    "runner.grpc_addr",
    "CLOUDLYSIS_RUNNER_GRPC_ADDR",
    "--grpc-addr",
    "gRPC listen address of the runner node [default: 127.0.0.1:50053]"
);
setting!(
    LANES,
    "runner.lanes",
    "CLOUDLYSIS_RUNNER_LANES",
    "",
    "input lanes per workflow consumer: one instance's inputs stay on one lane [default: 8] [1..=64]"
);
setting!(
    INSTANCE_MAILBOX,
    "runner.instance_mailbox",
    "CLOUDLYSIS_RUNNER_INSTANCE_MAILBOX",
    "",
    "mailbox capacity of a workflow instance actor [default: 64]"
);
setting!(
    INSTANCE_IDLE_TIMEOUT_MS,
    "runner.instance_idle_timeout_ms",
    "CLOUDLYSIS_RUNNER_INSTANCE_IDLE_TIMEOUT_MS",
    "",
    "idle time before an instance actor is passivated, milliseconds [default: 60000]"
);
setting!(
    MAX_INSTANCES,
    "runner.max_instances",
    "CLOUDLYSIS_RUNNER_MAX_INSTANCES",
    "",
    "most live instance actors per workflow; beyond it starts get 429 [default: 100000]"
);
setting!(
    RELAY_LANES,
    "runner.relay_lanes",
    "CLOUDLYSIS_RUNNER_RELAY_LANES",
    "",
    "outbox relay actors (publishing in parallel) [default: 4] [1..=64]"
);
setting!(
    OUTBOX_SWEEP_MS,
    "runner.outbox_sweep_ms",
    "CLOUDLYSIS_RUNNER_OUTBOX_SWEEP_MS",
    "",
    "how often the outbox index is swept for unpublished steps, milliseconds [default: 5000]"
);
setting!(
    MAX_ARMED_TIMERS,
    "runner.max_armed_timers",
    "CLOUDLYSIS_RUNNER_MAX_ARMED_TIMERS",
    "",
    "timers waiting on the server at once (the timer consumer's max_ack_pending); more fire late [default: 100000]"
);
setting!(
    AGGREGATE_ADDR,
    "runner.aggregate_addr",
    "CLOUDLYSIS_RUNNER_AGGREGATE_ADDR",
    "--aggregate-addr",
    "gRPC address of the aggregate node that effects send commands to [default: http://127.0.0.1:50051]"
);

/// Every runner-node setting.
pub const SETTINGS: &[&Setting] = &[
    &GRPC_ADDR,
    &LANES,
    &INSTANCE_MAILBOX,
    &INSTANCE_IDLE_TIMEOUT_MS,
    &MAX_INSTANCES,
    &RELAY_LANES,
    &OUTBOX_SWEEP_MS,
    &MAX_ARMED_TIMERS,
    &AGGREGATE_ADDR,
];

/// Most lanes of a consumer.
pub const MAX_LANES: usize = 64;

/// Tunables of the runner node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunnerSettings {
    /// Consumer settings (`RUNNER_*`): ack wait, max deliver, max in flight. Effect workers
    /// run up to `max_in_flight` commands of one effect type at once.
    pub consumer: ConsumerSettings,
    /// Input lanes per workflow consumer (default 8).
    pub lanes: usize,
    /// Instance actors.
    pub instances: InstanceSettings,
    /// Outbox relay actors (default 4).
    pub relay_lanes: usize,
    /// Sweep interval of the outbox index (default 5 s).
    pub sweep_interval: Duration,
    /// Timers waiting on the server at once (default 100 000).
    pub max_armed_timers: u64,
    /// Deadline of each NATS call (default 5 s).
    pub io_timeout: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            consumer: ConsumerSettings::default(),
            lanes: 8,
            instances: InstanceSettings::default(),
            relay_lanes: 4,
            sweep_interval: Duration::from_secs(5),
            max_armed_timers: 100_000,
            io_timeout: Duration::from_secs(5),
        }
    }
}

impl RunnerSettings {
    /// Reads the settings (env over file over defaults); errors name the setting.
    pub fn load(src: &ConfigSource) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            consumer: ConsumerSettings::load(ConsumerRole::Runner, src)?,
            lanes: src.get_in_range(&LANES, None, d.lanes as u64, 1, MAX_LANES as u64)? as usize,
            instances: InstanceSettings {
                mailbox: src.get_in_range(
                    &INSTANCE_MAILBOX,
                    None,
                    d.instances.mailbox as u64,
                    1,
                    100_000,
                )? as usize,
                idle_timeout: src.get_millis(
                    &INSTANCE_IDLE_TIMEOUT_MS,
                    None,
                    d.instances.idle_timeout,
                    Duration::from_millis(10),
                    Duration::from_secs(24 * 3600),
                )?,
                max_instances: src.get_in_range(
                    &MAX_INSTANCES,
                    None,
                    d.instances.max_instances as u64,
                    1,
                    10_000_000,
                )? as usize,
                input_timeout: d.instances.input_timeout,
            },
            relay_lanes: src.get_in_range(
                &RELAY_LANES,
                None,
                d.relay_lanes as u64,
                1,
                MAX_LANES as u64,
            )? as usize,
            sweep_interval: src.get_millis(
                &OUTBOX_SWEEP_MS,
                None,
                d.sweep_interval,
                Duration::from_millis(50),
                Duration::from_secs(3600),
            )?,
            max_armed_timers: src.get_in_range(
                &MAX_ARMED_TIMERS,
                None,
                d.max_armed_timers,
                1,
                10_000_000,
            )?,
            io_timeout: d.io_timeout,
        })
    }
}

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

/// What registrations build their consumers with.
pub(crate) struct Ctx {
    js: jetstream::Context,
    ledger: jetstream::kv::Store,
    settings: RunnerSettings,
}

type MakeHost = Box<
    dyn FnOnce(RelayCtx, Relay, SupervisorRef, InstanceSettings) -> Arc<dyn WorkflowHost> + Send,
>;
type MakeInputs =
    Box<dyn Fn(&Ctx, Arc<dyn WorkflowHost>) -> Vec<(ChildSpec, BoundedRef<ConsumerMsg>)> + Send>;
type MakeWorker = Box<dyn Fn(&Ctx) -> (ChildSpec, BoundedRef<ConsumerMsg>) + Send>;

struct WorkflowRegistration {
    name: &'static str,
    effect_types: &'static [&'static str],
    follows: &'static [&'static str],
    host: MakeHost,
    inputs: MakeInputs,
}

struct EffectRegistration {
    effect_type: &'static str,
    policy: super::effect::RetryPolicy,
    worker: MakeWorker,
}

/// Builds a [`RunnerNode`].
pub struct RunnerNodeBuilder {
    js: jetstream::Context,
    settings: RunnerSettings,
    workflows: Vec<WorkflowRegistration>,
    effects: Vec<EffectRegistration>,
    fault: Option<Fault>,
}

/// Routes an instance's inputs to one lane, so they are handled in order.
fn instance_partition() -> PartitionFn<EffectResult> {
    Arc::new(|r: &EffectResult| hash(&(&r.tenant_id, &r.instance)))
}

fn hash(v: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn token(name: &str) -> SubjectToken {
    SubjectToken::new(name).unwrap_or_else(|_| unreachable!("names are validated in build"))
}

impl RunnerNodeBuilder {
    /// Registers a workflow: its instances run here and its inputs are consumed here.
    pub fn workflow<W: Workflow>(mut self) -> Self {
        let host: MakeHost = Box::new(|relay_ctx, relay, sup, settings| {
            Arc::new(Host::<W>::new(relay_ctx, relay, sup, settings)) as Arc<dyn WorkflowHost>
        });
        let inputs: MakeInputs = Box::new(|ctx: &Ctx, host: Arc<dyn WorkflowHost>| {
            let name = token(W::NAME);
            let mut out = Vec::new();
            let mut filters: Vec<String> = W::effect_types()
                .iter()
                .map(|t| filter::effect_results(&token(t)))
                .collect();
            filters.push(filter::effect_results(&token(wire::TIMER_EFFECT)));
            let policy = ConsumerPolicy {
                durable: DurableName::runner_workflow(&name),
                filter_subjects: filters,
                settings: ctx.settings.consumer,
            };
            let results = host.clone();
            let (tree, handle) = consumer::supervised_lanes(
                format!("workflow-{}", W::NAME),
                ctx.js.clone(),
                stream::WORKFLOW_EVENTS,
                policy,
                None,
                ctx.settings.lanes,
                Some(instance_partition()),
                move || ResultInputs {
                    workflow: W::NAME,
                    host: results.clone(),
                },
            );
            out.push((ChildSpec::supervisor(tree), handle.control));
            if !W::aggregate_types().is_empty() {
                let policy = ConsumerPolicy {
                    durable: DurableName::runner_workflow(&name),
                    filter_subjects: W::aggregate_types()
                        .iter()
                        .map(|t| filter::aggregate_type_events(&token(t)))
                        .collect(),
                    settings: ctx.settings.consumer,
                };
                let partition: PartitionFn<Commit> = Arc::new(|c: &Commit| {
                    let first = c
                        .events
                        .iter()
                        .find_map(|e| W::correlate(e).map(|k| (e.tenant_id.clone(), k.instance)));
                    hash(&first)
                });
                let (tree, handle) = consumer::supervised_lanes(
                    format!("workflow-{}-events", W::NAME),
                    ctx.js.clone(),
                    stream::AGGREGATE_EVENTS,
                    policy,
                    None,
                    ctx.settings.lanes,
                    Some(partition),
                    move || EventInputs {
                        aggregate_types: W::aggregate_types(),
                        host: host.clone(),
                    },
                );
                out.push((ChildSpec::supervisor(tree), handle.control));
            }
            out
        });
        self.workflows.push(WorkflowRegistration {
            name: W::NAME,
            effect_types: W::effect_types(),
            follows: W::aggregate_types(),
            host,
            inputs,
        });
        self
    }

    /// Registers an effect: its commands are executed here.
    pub fn effect<E: Effect>(mut self, effect: E) -> Self {
        let policy = effect.retry_policy();
        let effect = Arc::new(effect);
        let worker: MakeWorker = Box::new(move |ctx: &Ctx| {
            let policy = ConsumerPolicy {
                durable: DurableName::runner_effect(&token(E::TYPE)),
                filter_subjects: vec![filter::effect_commands(&token(E::TYPE))],
                settings: ctx.settings.consumer,
            };
            let lanes = (ctx.settings.consumer.max_in_flight as usize).clamp(1, MAX_LANES);
            let (effect, ledger, js, io) = (
                effect.clone(),
                ctx.ledger.clone(),
                ctx.js.clone(),
                ctx.settings.io_timeout,
            );
            let (tree, handle) = consumer::supervised_lanes(
                format!("effect-{}", E::TYPE),
                ctx.js.clone(),
                stream::WORKFLOW_COMMANDS,
                policy,
                None,
                lanes,
                Some(Arc::new(|c: &EffectCommand| hash(&c.command_id))),
                move || EffectWorker::new(effect.clone(), ledger.clone(), js.clone(), io),
            );
            (ChildSpec::supervisor(tree), handle.control)
        });
        self.effects.push(EffectRegistration {
            effect_type: E::TYPE,
            policy,
            worker,
        });
        self
    }

    /// Switches on a test-only fault point (see [`Fault`]); `cloudlysis runner` reads it from
    /// the environment.
    pub fn fault(mut self, fault: Option<Fault>) -> Self {
        self.fault = fault;
        self
    }

    fn validate(&self) -> Result<(), RunnerNodeError> {
        let bad = |what: &str, name: &str, why: String| {
            Err(RunnerNodeError::Registration(format!(
                "{what} `{name}`: {why}"
            )))
        };
        let mut seen = HashSet::new();
        for w in &self.workflows {
            if let Err(e) = validate_token(w.name) {
                return bad("workflow", w.name, e.to_string());
            }
            if !seen.insert(w.name) {
                return bad("workflow", w.name, "registered twice".into());
            }
            for t in w.effect_types.iter().chain(w.follows) {
                if let Err(e) = validate_token(t) {
                    return bad("workflow", w.name, format!("type `{t}`: {e}"));
                }
                if wire::is_reserved_effect_type(t) {
                    return bad(
                        "workflow",
                        w.name,
                        format!("effect type `{t}` is reserved for the runtime"),
                    );
                }
            }
        }
        let mut seen = HashSet::new();
        for e in &self.effects {
            if let Err(err) = validate_token(e.effect_type) {
                return bad("effect", e.effect_type, err.to_string());
            }
            if wire::is_reserved_effect_type(e.effect_type) {
                return bad(
                    "effect",
                    e.effect_type,
                    "types starting with `_` are reserved for the runtime".into(),
                );
            }
            if !seen.insert(e.effect_type) {
                return bad("effect", e.effect_type, "registered twice".into());
            }
            if let Err(why) = e.policy.validate() {
                return bad("effect", e.effect_type, format!("retry policy: {why}"));
            }
        }
        Ok(())
    }

    /// Ensures the streams and buckets, starts the supervision tree (relay, consumers) and the
    /// outbox sweep.
    pub async fn build(self) -> Result<RunnerNode, RunnerNodeError> {
        self.validate()?;
        register_metrics(
            &self.workflows.iter().map(|w| w.name).collect::<Vec<_>>(),
            &self
                .effects
                .iter()
                .map(|e| e.effect_type)
                .collect::<Vec<_>>(),
        );
        let nats = |e: &dyn std::fmt::Display| RunnerNodeError::Nats(e.to_string());
        let mut streams = vec![stream::workflow_commands(), stream::workflow_events()];
        if self.workflows.iter().any(|w| !w.follows.is_empty()) {
            streams.push(stream::aggregate_events());
        }
        for policy in &streams {
            stream::ensure_stream(&self.js, policy)
                .await
                .map_err(|e| nats(&e))?;
        }
        let instances = buckets::ensure_bucket(&self.js, &buckets::workflows())
            .await
            .map_err(|e| nats(&e))?;
        let index = buckets::ensure_bucket(&self.js, &buckets::outbox())
            .await
            .map_err(|e| nats(&e))?;
        let ledger = buckets::ensure_bucket(&self.js, &buckets::effects())
            .await
            .map_err(|e| nats(&e))?;
        let index_stream = self
            .js
            .get_stream(buckets::outbox_stream())
            .await
            .map_err(|e| nats(&e))?;
        let settings = self.settings;
        let relay_ctx = RelayCtx {
            js: self.js.clone(),
            instances,
            index,
            index_stream,
            io_timeout: settings.io_timeout,
            fault: self.fault,
            fault_fired: Arc::new(AtomicBool::new(false)),
        };
        // Instances are temporary dynamic children of the root; only a storm of restarts of
        // the permanent children (relay, consumers) escalates.
        let first: BoundedRef<RelayMsg> = BoundedRef::new(outbox::KIND, 64);
        let mut lanes = vec![first.clone()];
        lanes.extend((1..settings.relay_lanes.max(1)).map(|_| first.sibling()));
        let relay = Relay::new(lanes, settings.io_timeout * 3);
        let mut root = SupervisorConfig::new("runner-node")
            .intensity(100, Duration::from_secs(10))
            .backoff(Backoff::default());
        for (i, lane) in relay.lanes().iter().enumerate() {
            let ctx = relay_ctx.clone();
            root = root.child(ChildSpec::bounded(
                format!("outbox-relay-{i}"),
                lane.clone(),
                move || (RelayActor(ctx.clone()), ()),
            ));
        }
        let root = SupervisorRef::start(root, None).await?;
        let ctx = Ctx {
            js: self.js.clone(),
            ledger,
            settings,
        };
        let mut hosts: HashMap<&'static str, Arc<dyn WorkflowHost>> = HashMap::new();
        let mut controls = Vec::new();
        let mut workflows = Vec::new();
        for w in self.workflows {
            let host = (w.host)(
                relay_ctx.clone(),
                relay.clone(),
                root.clone(),
                settings.instances,
            );
            for (spec, control) in (w.inputs)(&ctx, host.clone()) {
                root.start_child(spec).await?;
                controls.push(control);
            }
            hosts.insert(w.name, host);
            workflows.push(w.name);
        }
        let mut effects = Vec::new();
        for e in &self.effects {
            let (spec, control) = (e.worker)(&ctx);
            root.start_child(spec).await?;
            controls.push(control);
            effects.push(e.effect_type);
        }
        // Timers: held on the server until due; a deferral is not a failure.
        let timer_settings = ConsumerSettings {
            max_deliver: 1_000_000,
            server_max_ack_pending: Some(settings.max_armed_timers),
            ..settings.consumer
        };
        let (tree, handle) = consumer::supervised_lanes(
            "timers",
            self.js.clone(),
            stream::WORKFLOW_COMMANDS,
            ConsumerPolicy {
                durable: DurableName::runner_timers(),
                filter_subjects: vec![filter::effect_commands(&token(wire::TIMER_EFFECT))],
                settings: timer_settings,
            },
            None,
            4,
            None,
            {
                let (js, io) = (self.js.clone(), settings.io_timeout);
                move || TimerWorker::new(js.clone(), io)
            },
        );
        root.start_child(ChildSpec::supervisor(tree)).await?;
        controls.push(handle.control);
        // The sweep: everything pending at start, then what an instance actor left behind.
        let sweep_relay = relay.clone();
        let interval = settings.sweep_interval;
        let grace = (settings.io_timeout * 2).max(Duration::from_secs(10));
        let sweeper = tokio::spawn(async move {
            sweep_relay.sweep(Duration::ZERO);
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                sweep_relay.sweep(grace);
            }
        });
        workflows.sort_unstable();
        effects.sort_unstable();
        Ok(RunnerNode {
            inner: Arc::new(Inner {
                hosts,
                workflows,
                effects,
                root,
                controls,
                draining: AtomicBool::new(false),
                node_id: uuid::Uuid::new_v4().to_string(),
                _sweeper: AbortOnDrop(sweeper),
            }),
        })
    }
}

/// Registers every series a runner node produces for its workflows and effect types (at 0), so
/// it exports them from its start.
fn register_metrics(workflows: &[&'static str], effects: &[&'static str]) {
    use cloudlysis_runtime::metrics::names;
    for w in workflows {
        let w = *w;
        metrics::counter!(names::WORKFLOW_INSTANCES_STARTED, "workflow" => w).increment(0);
        for status in ["completed", "failed"] {
            metrics::counter!(names::WORKFLOW_INSTANCES_FINISHED, "workflow" => w, "status" => status)
                .increment(0);
        }
        for input in ["start", "result", "timer", "event"] {
            for outcome in ["applied", "duplicate", "stale", "ignored", "failed"] {
                metrics::counter!(names::WORKFLOW_INPUTS, "workflow" => w, "input" => input, "outcome" => outcome)
                    .increment(0);
            }
        }
        metrics::gauge!(names::WORKFLOW_INSTANCES_LIVE, "workflow" => w).set(0.0);
        metrics::counter!(names::TIMERS_FIRED, "workflow" => w).increment(0);
    }
    for e in effects {
        let e = *e;
        for outcome in ["ok", "failed", "replayed", "deferred"] {
            metrics::counter!(names::EFFECTS, "effect_type" => e, "outcome" => outcome)
                .increment(0);
        }
        for outcome in ["ok", "permanent", "retryable", "unknown", "timeout"] {
            metrics::counter!(names::EFFECT_ATTEMPTS, "effect_type" => e, "outcome" => outcome)
                .increment(0);
        }
        let _ = metrics::histogram!(names::EFFECT_DURATION, "effect_type" => e);
    }
    for kind in ["command", "event"] {
        metrics::counter!(names::OUTBOX_PUBLISHED, "kind" => kind).increment(0);
    }
    for counter in [
        names::OUTBOX_DUPLICATES,
        names::OUTBOX_FAILURES,
        names::OUTBOX_SWEPT,
    ] {
        metrics::counter!(counter).increment(0);
    }
    let _ = metrics::histogram!(names::TIMER_LATENESS);
    cloudlysis_runtime::mailbox::register_kind(super::instance::INSTANCE_KIND);
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running runner node. Cheap to clone.
#[derive(Clone)]
pub struct RunnerNode {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) hosts: HashMap<&'static str, Arc<dyn WorkflowHost>>,
    pub(crate) workflows: Vec<&'static str>,
    pub(crate) effects: Vec<&'static str>,
    pub(crate) root: SupervisorRef,
    pub(crate) controls: Vec<BoundedRef<ConsumerMsg>>,
    pub(crate) draining: AtomicBool,
    pub(crate) node_id: String,
    _sweeper: AbortOnDrop,
}

impl RunnerNode {
    /// A builder on `js` (whose timeout bounds JetStream API calls).
    pub fn builder(js: jetstream::Context, settings: RunnerSettings) -> RunnerNodeBuilder {
        RunnerNodeBuilder {
            js,
            settings,
            workflows: Vec::new(),
            effects: Vec::new(),
            fault: None,
        }
    }

    /// The root supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.inner.root
    }

    /// Workflows registered on this node, sorted.
    pub fn workflows(&self) -> Vec<&'static str> {
        self.inner.workflows.clone()
    }

    /// Effect types executed on this node, sorted.
    pub fn effect_types(&self) -> Vec<&'static str> {
        self.inner.effects.clone()
    }

    /// True once a drain was requested.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Serves `WorkflowService`, `RunnerAdmin`, `NodeAdmin`, gRPC health and reflection on
    /// `listener` until `shutdown` resolves; then stops the supervision tree.
    pub async fn serve_grpc(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<WorkflowServiceServer<RunnerNode>>()
            .await;
        health.set_serving::<RunnerAdminServer<RunnerNode>>().await;
        let admin = NodeAdminService::new(
            "runner",
            self.inner.node_id.clone(),
            self.inner.root.clone(),
        );
        let root = self.inner.root.clone();
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(admin.into_server())
            .add_service(RunnerAdminServer::new(self.clone()))
            .add_service(WorkflowServiceServer::new(self.clone()));
        let result = crate::grpc::with_reflection(router)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(Duration::from_secs(60))),
                shutdown,
            )
            .await;
        let _ = root.shutdown(Duration::from_secs(30)).await;
        result
    }
}
