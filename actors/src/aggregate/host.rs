//! The host of one aggregate type: the registry of live entity actors, spawned on demand under
//! the node's supervisor and bounded by `aggregate.max_entities`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::entity::*;
use super::*;
use async_nats::jetstream::{self, kv};
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::context::TenantId;
use cloudlysis_runtime::mailbox::BoundedRef;
use cloudlysis_supervision::{ChildSpec, Restart, SupervisorRef};
use dashmap::DashMap;

/// Runs commands for one aggregate type (type-erased for the node's registry).
pub(crate) trait Host: Send + Sync {
    fn execute(
        &self,
        req: CommandRequest,
    ) -> futures::future::BoxFuture<'_, Result<ExecuteReply, CommandError>>;
}

/// Shared by a type's host and its entities.
pub(crate) struct HostShared {
    pub(crate) js: jetstream::Context,
    pub(crate) events: jetstream::stream::Stream,
    pub(crate) idempotency: kv::Store,
    /// The snapshot bucket, when this aggregate type takes snapshots.
    pub(crate) snapshots: Option<kv::Store>,
    pub(crate) supervisor: SupervisorRef,
    pub(crate) settings: AggregateSettings,
    pub(crate) incarnation: AtomicU64,
    pub(crate) entities: crate::idle::Registry<EntityMsg>,
    pub(crate) live: metrics::Gauge,
}

impl HostShared {
    pub(crate) fn update_live_gauge(&self) {
        self.live.set(self.entities.len() as f64);
    }
}

/// The host of one aggregate type.
pub(crate) struct AggregateHost<A> {
    pub(crate) shared: Arc<HostShared>,
    pub(crate) _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> AggregateHost<A> {
    #[cfg(test)]
    pub(crate) fn new(
        js: jetstream::Context,
        events: jetstream::stream::Stream,
        idempotency: kv::Store,
        supervisor: SupervisorRef,
        settings: AggregateSettings,
    ) -> Self {
        Self::with_snapshots(js, events, idempotency, None, supervisor, settings)
    }

    /// [`AggregateHost::new`] with the snapshot bucket (used only when `A` takes snapshots).
    pub(crate) fn with_snapshots(
        js: jetstream::Context,
        events: jetstream::stream::Stream,
        idempotency: kv::Store,
        snapshots: Option<kv::Store>,
        supervisor: SupervisorRef,
        settings: AggregateSettings,
    ) -> Self {
        super::snapshot::register::<A>();
        super::rehydrate::register::<A>();
        let host = Self {
            shared: Arc::new(HostShared {
                js,
                events,
                idempotency,
                snapshots: snapshots.filter(|_| A::snapshots().is_some()),
                supervisor,
                settings,
                incarnation: AtomicU64::new(0),
                entities: DashMap::new(),
                live: metrics::gauge!(
                    cloudlysis_runtime::metrics::names::ENTITIES,
                    "aggregate_type" => A::TYPE
                ),
            }),
            _aggregate: PhantomData,
        };
        // Passivation: entities idle for `idle_timeout` stop at the next sweep.
        crate::idle::spawn_sweeper(
            &host.shared,
            host.shared.settings.idle_timeout / 2,
            |h: &HostShared| &h.entities,
            || EntityMsg::CheckIdle,
        );
        host
    }

    /// Starts an entity under the supervisor. Runs as its own task so a caller that gives up
    /// mid-way cannot leave a started entity behind an empty registry slot.
    async fn spawn(
        shared: Arc<HostShared>,
        key: String,
        tenant: TenantId,
        id: SubjectToken,
    ) -> Result<BoundedRef<EntityMsg>, CommandError> {
        let mailbox = BoundedRef::new(ENTITY_KIND, shared.settings.mailbox);
        let n = shared.incarnation.fetch_add(1, Ordering::Relaxed);
        let supervisor = shared.supervisor.clone();
        // Unique under the node's one supervisor across every aggregate type and incarnation.
        let name = format!("{}/{key}#{n}", A::TYPE);
        let spec = ChildSpec::bounded(name.clone(), mailbox.clone(), move || {
            (
                Entity::<A> {
                    key: key.clone(),
                    tenant: tenant.clone(),
                    id: id.clone(),
                    shared: shared.clone(),
                    _aggregate: PhantomData,
                },
                (),
            )
        })
        // Temporary: a failed entity is not restarted by the supervisor (no intensity storm
        // from one bad aggregate); the next command for the key spawns a fresh one.
        .restart(Restart::Temporary);
        match supervisor.start_child(spec).await {
            Ok(()) => Ok(mailbox),
            Err(e) => {
                // A start that timed out may still complete later (the request waits in the
                // supervisor's mailbox): stop it, so no orphan entity outlives its slot.
                if matches!(e, cloudlysis_supervision::SupervisorError::Timeout { .. }) {
                    let _ = supervisor.stop_child(&name).await;
                }
                Err(CommandError::Unavailable(format!(
                    "entity start failed: {e}"
                )))
            }
        }
    }
}

impl<A: Aggregate> Host for AggregateHost<A> {
    fn execute(
        &self,
        req: CommandRequest,
    ) -> futures::future::BoxFuture<'_, Result<ExecuteReply, CommandError>> {
        Box::pin(async move {
            // Malformed commands are refused before any entity is spawned for them.
            decode_command::<A>(&req.command_type, &req.payload)?;
            let key = format!("{}.{}", req.ctx.tenant, req.aggregate_id);
            let now = tokio::time::Instant::now();
            let deadline = req
                .deadline
                .unwrap_or(now + self.shared.settings.command_timeout)
                .min(now + self.shared.settings.command_timeout);
            let mut req = req;
            req.deadline = Some(deadline);
            let timeout = deadline.saturating_duration_since(now);
            // Two tries: the first may hit an entity that is passivating.
            for _ in 0..2 {
                if !self.shared.entities.contains_key(&key)
                    && self.shared.entities.len() >= self.shared.settings.max_entities
                {
                    return Err(CommandError::Busy(format!(
                        "{} live `{}` entities (aggregate.max_entities); retry later",
                        self.shared.settings.max_entities,
                        A::TYPE
                    )));
                }
                let slot = self.shared.entities.entry(key.clone()).or_default().clone();
                self.shared.update_live_gauge();
                let started = slot
                    .get_or_try_init(|| {
                        let spawn = Self::spawn(
                            self.shared.clone(),
                            key.clone(),
                            req.ctx.tenant.clone(),
                            req.aggregate_id.clone(),
                        );
                        async move {
                            tokio::spawn(spawn).await.map_err(|e| {
                                CommandError::Unavailable(format!("entity start failed: {e}"))
                            })?
                        }
                    })
                    .await;
                let mailbox = match started {
                    Ok(m) => m.clone(),
                    Err(e) => {
                        // No entity behind the slot: free it, or it would count against
                        // `max_entities` until a command for this key came again.
                        self.shared
                            .entities
                            .remove_if(&key, |_, v| Arc::ptr_eq(v, &slot) && v.get().is_none());
                        self.shared.update_live_gauge();
                        return Err(e);
                    }
                };
                let Some(reservation) = mailbox.try_reserve() else {
                    return Err(CommandError::Busy(format!(
                        "{}/{}",
                        A::TYPE,
                        req.aggregate_id
                    )));
                };
                let (tx, rx) = ractor::concurrency::oneshot();
                let claim = Arc::new(Claim::default());
                match reservation.send(EntityMsg::Execute(
                    Box::new(req.clone()),
                    claim.clone(),
                    tx.into(),
                )) {
                    Ok(()) => {
                        return match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(result)) => result,
                            // The entity stopped (panicked) mid-command: if it had started
                            // publishing, the commit may have landed.
                            Ok(Err(_)) if !claim.abandon() => Err(CommandError::OutcomeUnknown(
                                "the entity stopped while publishing the commit".into(),
                            )),
                            Ok(Err(_)) => Err(CommandError::Unavailable(
                                "the entity stopped before answering; nothing was committed".into(),
                            )),
                            // The deadline passed. Nothing was committed only if no publish
                            // had started — and, once abandoned, none will.
                            Err(_) if claim.abandon() => Err(CommandError::Timeout(timeout)),
                            Err(_) => Err(CommandError::OutcomeUnknown(format!(
                                "the deadline ({timeout:?}) passed while the commit was being \
                                 published"
                            ))),
                        };
                    }
                    Err(_) => {
                        self.shared
                            .entities
                            .remove_if(&key, |_, v| Arc::ptr_eq(v, &slot));
                    }
                }
            }
            Err(CommandError::Unavailable(
                "the entity could not be started".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudlysis_runtime::kv as buckets;
    use cloudlysis_runtime::{RequestContext, stream};
    use cloudlysis_supervision::SupervisorConfig;
    use cloudlysis_test_support::NatsServer;
    use serde::{Deserialize, Serialize};

    struct Counter;

    #[derive(Deserialize)]
    #[serde(tag = "type", content = "payload")]
    enum Cmd {
        Bump,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", content = "payload")]
    enum Evt {
        Bumped,
    }

    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        const SCHEMA_VERSION: u32 = 1;
        type State = u64;
        type Command = Cmd;
        type Event = Evt;
        fn handle(_: &u64, _: Cmd, _: &CommandContext) -> Result<Vec<Evt>, Rejection> {
            Ok(vec![Evt::Bumped])
        }
        fn apply(s: &mut u64, _: &Evt) {
            *s += 1;
        }
    }

    /// An entity whose start fails frees its registry slot: failures do not add up against
    /// `max_entities` (before the fix, the slots stayed until a command for the same key came,
    /// and after `max_entities` failed starts every new entity got "busy" for good).
    #[tokio::test]
    async fn a_failed_entity_start_leaves_no_slot_behind() {
        let server = NatsServer::start().await.unwrap();
        let js = server.jetstream().await;
        stream::ensure_stream(&js, &stream::aggregate_events())
            .await
            .unwrap();
        let events = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
        let idempotency = buckets::ensure_bucket(&js, &buckets::idempotency())
            .await
            .unwrap();
        // A supervisor that is gone: every entity start fails.
        let supervisor = SupervisorRef::start(SupervisorConfig::new("gone"), None)
            .await
            .unwrap();
        supervisor
            .shutdown(std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let settings = AggregateSettings {
            max_entities: 2,
            ..AggregateSettings::default()
        };
        let host = AggregateHost::<Counter>::new(js, events, idempotency, supervisor, settings);
        for i in 0..5 {
            let err = host
                .execute(CommandRequest {
                    ctx: RequestContext::new(TenantId::new("acme").unwrap()),
                    aggregate_id: SubjectToken::new(format!("c{i}")).unwrap(),
                    command_type: "Bump".into(),
                    payload: Default::default(),
                    expected_version: None,
                    deadline: None,
                })
                .await
                .unwrap_err();
            assert!(
                matches!(err, CommandError::Unavailable(ref m) if m.contains("entity start failed")),
                "start {i}: {err:?}"
            );
        }
        assert_eq!(host.shared.entities.len(), 0, "no slot left behind");
    }
}
