//! Building a runner node: registration of workflows (`workflow::<W>()`) and effect types
//! (`effect(e)`), validation of the names, and `build`, which starts the supervision tree, the
//! consumers and the outbox relay.

use super::drain::Drainer;
use super::effect::{Effect, RetryPolicy};
use super::inputs::{EventInputs, ResultInputs};
use super::instance::{Host, WorkflowHost};
use super::node::*;
use super::outbox::{self, Fault, Relay, RelayActor, RelayCtx, RelayMsg};
use super::settings::{LiveSettings, MAX_LANES, RunnerSettings};
use super::worker::{EffectWorker, RetryNow, TimerWorker};
use super::workflow::Workflow;
use crate::consumer::{self, PartitionFn, SubtreeOptions};
use crate::task::AbortOnDrop;
use async_nats::jetstream;
use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::consumer::{ConsumerPolicy, ConsumerSettings, DurableName};
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_runtime::mailbox::BoundedRef;
use cloudlysis_runtime::subject::{self, SubjectToken, filter, validate_token};
use cloudlysis_runtime::workflow::{self as wire, EffectCommand, EffectResult};
use cloudlysis_runtime::{kv as buckets, stream};
use cloudlysis_supervision::{Backoff, ChildSpec, SupervisorConfig, SupervisorRef};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::Duration;
use tokio::sync::watch;

struct WorkflowRegistration {
    name: &'static str,
    effect_types: &'static [&'static str],
    follows: &'static [&'static str],
    host: MakeHost,
    inputs: MakeInputs,
}

struct EffectRegistration {
    effect_type: &'static str,
    policy: RetryPolicy,
    worker: MakeWorker,
}

/// Builds a [`RunnerNode`].
pub struct RunnerNodeBuilder {
    js: jetstream::Context,
    settings: RunnerSettings,
    workflows: Vec<WorkflowRegistration>,
    effects: Vec<EffectRegistration>,
    fault: Option<Fault>,
    live: Option<LiveSettings>,
    live_from: Option<ConfigSource>,
    reload: Option<ReloadSource>,
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
        let host: MakeHost = Box::new(|relay_ctx, relay, sup, settings, ledger| {
            Arc::new(Host::<W>::new(relay_ctx, relay, sup, settings, ledger))
                as Arc<dyn WorkflowHost>
        });
        let inputs: MakeInputs = Arc::new(|ctx: &Ctx, host: Arc<dyn WorkflowHost>| {
            let name = token(W::NAME);
            let mut out = Vec::new();
            let mut filters: Vec<String> = W::effect_types()
                .iter()
                .map(|t| filter::effect_results(&token(t)))
                .collect();
            filters.push(filter::effect_results(&token(wire::TIMER_EFFECT)));
            let durable = DurableName::runner_workflow(&name);
            let policy = ConsumerPolicy {
                durable: durable.clone(),
                filter_subjects: filters,
                settings: ctx.settings.consumer,
            };
            let results = host.clone();
            let child = format!("workflow-{}", W::NAME);
            let (tree, handle) = consumer::supervised_with(
                child.clone(),
                ctx.js.clone(),
                stream::WORKFLOW_EVENTS,
                policy,
                SubtreeOptions {
                    lanes: ctx.settings.lanes,
                    partition: Some(instance_partition()),
                    intake: Some(ctx.intake.clone()),
                    ..Default::default()
                },
                move || ResultInputs {
                    workflow: W::NAME,
                    host: results.clone(),
                },
            );
            out.push(ConsumerSpec {
                spec: ChildSpec::supervisor(tree),
                entry: ConsumerEntry {
                    child,
                    stream: stream::WORKFLOW_EVENTS,
                    durable: durable.to_string(),
                    control: handle.control,
                    owner: Owner::Workflow(W::NAME),
                },
            });
            if !W::aggregate_types().is_empty() {
                let policy = ConsumerPolicy {
                    durable: durable.clone(),
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
                let child = format!("workflow-{}-events", W::NAME);
                let host = host.clone();
                let (tree, handle) = consumer::supervised_with(
                    child.clone(),
                    ctx.js.clone(),
                    stream::AGGREGATE_EVENTS,
                    policy,
                    SubtreeOptions {
                        lanes: ctx.settings.lanes,
                        partition: Some(partition),
                        intake: Some(ctx.intake.clone()),
                        ..Default::default()
                    },
                    move || EventInputs {
                        aggregate_types: W::aggregate_types(),
                        host: host.clone(),
                    },
                );
                out.push(ConsumerSpec {
                    spec: ChildSpec::supervisor(tree),
                    entry: ConsumerEntry {
                        child,
                        stream: stream::AGGREGATE_EVENTS,
                        durable: durable.to_string(),
                        control: handle.control,
                        owner: Owner::Workflow(W::NAME),
                    },
                });
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

    /// Registers an effect: its commands are executed here (see [`EFFECT_ACK_PENDING_CEILING`]).
    pub fn effect<E: Effect>(mut self, effect: E) -> Self {
        let policy = effect.retry_policy();
        let effect = Arc::new(effect);
        let worker: MakeWorker = Arc::new(
            move |ctx: &Ctx, concurrency: u64, attempts: Arc<AtomicU32>| {
                let durable = DurableName::runner_effect(&token(E::TYPE));
                // The durable's max_ack_pending is a fixed ceiling shared by every runner; each
                // node's concurrency (reloadable) bounds what it fetches, so a reload never has
                // to rewrite the durable.
                let settings = ConsumerSettings {
                    max_in_flight: concurrency.max(1),
                    server_max_ack_pending: Some(EFFECT_ACK_PENDING_CEILING),
                    ..ctx.settings.consumer
                };
                let policy = ConsumerPolicy {
                    durable: durable.clone(),
                    filter_subjects: vec![filter::effect_commands(&token(E::TYPE))],
                    settings,
                };
                let lanes = (concurrency as usize).clamp(1, MAX_LANES);
                let (effect, ledger, js, io, retry_now) = (
                    effect.clone(),
                    ctx.ledger.clone(),
                    ctx.js.clone(),
                    ctx.settings.io_timeout,
                    ctx.retry_now.clone(),
                );
                let child = format!("effect-{}", E::TYPE);
                let (tree, handle) = consumer::supervised_with(
                    child.clone(),
                    ctx.js.clone(),
                    stream::WORKFLOW_COMMANDS,
                    policy,
                    SubtreeOptions {
                        lanes,
                        partition: Some(Arc::new(|c: &EffectCommand| hash(&c.command_id))),
                        intake: Some(ctx.intake.clone()),
                        ..Default::default()
                    },
                    move || {
                        EffectWorker::new(effect.clone(), ledger.clone(), js.clone(), io)
                            .with_attempts(attempts.clone())
                            .with_retry_now(retry_now.clone())
                    },
                );
                ConsumerSpec {
                    spec: ChildSpec::supervisor(tree),
                    entry: ConsumerEntry {
                        child,
                        stream: stream::WORKFLOW_COMMANDS,
                        durable: durable.to_string(),
                        control: handle.control,
                        owner: Owner::Effect(E::TYPE),
                    },
                }
            },
        );
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

    /// The live settings to start with (default: every workflow enabled, every effect type at
    /// `runner.max_in_flight`, the effects' own retry policies).
    pub fn live(mut self, live: LiveSettings) -> Self {
        self.live = Some(live);
        self
    }

    /// Reads the live settings to start with from `src` once every workflow and effect is
    /// registered (names in them are checked against the registrations).
    pub fn live_from(mut self, src: ConfigSource) -> Self {
        self.live_from = Some(src);
        self
    }

    /// Where `RunnerAdmin/Reload` re-reads the configuration (without it, Reload answers
    /// `FAILED_PRECONDITION`).
    pub fn reload_from(mut self, source: ReloadSource) -> Self {
        self.reload = Some(source);
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
    pub async fn build(mut self) -> Result<RunnerNode, RunnerNodeError> {
        self.validate()?;
        if let Some(src) = self.live_from.take() {
            let workflows: Vec<&str> = self.workflows.iter().map(|w| w.name).collect();
            let effects: Vec<&str> = self.effects.iter().map(|e| e.effect_type).collect();
            self.live = Some(
                LiveSettings::load(&src, &workflows, &effects)
                    .map_err(|e| RunnerNodeError::Registration(e.to_string()))?,
            );
        }
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
        let audit = cloudlysis_runtime::audit::open(&self.js)
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
        let first: BoundedRef<RelayMsg> = BoundedRef::new(outbox::KIND, 64);
        let mut lanes = vec![first.clone()];
        lanes.extend((1..settings.relay_lanes.max(1)).map(|_| first.sibling()));
        let relay = Relay::new(lanes, settings.io_timeout * 3);
        // Instances are temporary dynamic children of the root; only a storm of restarts of
        // the permanent children (relay, consumers) escalates.
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
        let (intake_tx, intake_rx) = watch::channel(false);
        let retry_now = Arc::new(RetryNow::default());
        let ctx = Ctx {
            js: self.js.clone(),
            ledger: ledger.clone(),
            settings,
            intake: intake_rx,
            retry_now: retry_now.clone(),
        };
        let live = self.live.unwrap_or_else(|| LiveSettings {
            default_concurrency: settings.consumer.max_in_flight,
            ..Default::default()
        });
        let mut consumers = Vec::new();
        let mut workflows = Vec::new();
        let mut hosts: HashMap<&'static str, Arc<dyn WorkflowHost>> = HashMap::new();
        for w in self.workflows {
            let host = (w.host)(
                relay_ctx.clone(),
                relay.clone(),
                root.clone(),
                settings.instances,
                ledger.clone(),
            );
            let enabled = live.enabled(w.name);
            if enabled {
                for c in (w.inputs)(&ctx, host.clone()) {
                    root.start_child(c.spec).await?;
                    consumers.push(c.entry);
                }
            }
            hosts.insert(w.name, host.clone());
            workflows.push(WorkflowSlot {
                name: w.name,
                host,
                inputs: w.inputs,
                enabled: AtomicBool::new(enabled),
            });
        }
        let mut effects = Vec::new();
        for e in self.effects {
            let concurrency = live.concurrency(e.effect_type);
            let attempts = Arc::new(AtomicU32::new(
                live.effect_max_attempts
                    .get(e.effect_type)
                    .copied()
                    .unwrap_or(0),
            ));
            let c = (e.worker)(&ctx, concurrency, attempts.clone());
            root.start_child(c.spec).await?;
            consumers.push(c.entry);
            effects.push(EffectSlot {
                effect_type: e.effect_type,
                policy: e.policy,
                worker: e.worker,
                concurrency: AtomicU64::new(concurrency),
                max_attempts: attempts,
            });
        }
        workflows.sort_by_key(|w| w.name);
        effects.sort_by_key(|e| e.effect_type);
        // Timers: held on the server until due; a deferral is not a failure.
        let timer_settings = ConsumerSettings {
            max_deliver: 1_000_000,
            server_max_ack_pending: Some(settings.max_armed_timers),
            ..settings.consumer
        };
        let (tree, handle) = consumer::supervised_with(
            "timers",
            self.js.clone(),
            stream::WORKFLOW_COMMANDS,
            ConsumerPolicy {
                durable: DurableName::runner_timers(),
                filter_subjects: vec![filter::effect_commands(&token(wire::TIMER_EFFECT))],
                settings: timer_settings,
            },
            SubtreeOptions {
                lanes: 4,
                intake: Some(ctx.intake.clone()),
                ..Default::default()
            },
            {
                let (js, io) = (self.js.clone(), settings.io_timeout);
                move || TimerWorker::new(js.clone(), io)
            },
        );
        root.start_child(ChildSpec::supervisor(tree)).await?;
        consumers.push(ConsumerEntry {
            child: "timers".into(),
            stream: stream::WORKFLOW_COMMANDS,
            durable: DurableName::runner_timers().to_string(),
            control: handle.control,
            owner: Owner::Timers,
        });
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
        // Retry-now requests from any node wake the attempts waiting here.
        let client = self.js.client();
        let waiters = retry_now.clone();
        let listener = tokio::spawn(async move {
            let Ok(mut sub) = client.subscribe(subject::RUNNER_RETRY_NOW).await else {
                tracing::warn!("retry-now requests cannot be received on this node");
                return;
            };
            while let Some(msg) = sub.next().await {
                if let Ok(id) = std::str::from_utf8(&msg.payload) {
                    waiters.wake(id);
                }
            }
        });
        Ok(RunnerNode {
            inner: Arc::new(Inner {
                hosts,
                workflows,
                effects,
                ctx,
                root,
                consumers: tokio::sync::Mutex::new(consumers),
                intake: intake_tx,
                drain: Drainer::default(),
                live: std::sync::Mutex::new(live),
                reload: self.reload,
                reload_lock: tokio::sync::Mutex::new(()),
                health: tonic_health::server::HealthReporter::new(),
                relay,
                relay_ctx,
                audit,
                node_id: uuid::Uuid::new_v4().to_string(),
                started: std::time::Instant::now(),
                _tasks: vec![AbortOnDrop(sweeper), AbortOnDrop(listener)],
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
        for input in ["start", "result", "timer", "event", "cancel"] {
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
        for outcome in ["ok", "failed", "replayed", "deferred", "cancelled"] {
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
    for handler in ["workflow_inputs", "effect_worker", "timer_worker"] {
        metrics::counter!(names::HANDLER_RETRIES, "handler" => handler).increment(0);
        metrics::gauge!(names::HANDLER_OLDEST_HELD, "handler" => handler).set(0.0);
    }
    metrics::gauge!(names::OUTBOX_DEPTH).set(0.0);
    metrics::gauge!(names::RUNNER_DRAIN_STATE).set(0.0);
    let _ = metrics::histogram!(names::TIMER_LATENESS);
    cloudlysis_runtime::mailbox::register_kind(super::instance::INSTANCE_KIND);
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
            live: None,
            live_from: None,
            reload: None,
        }
    }
}
