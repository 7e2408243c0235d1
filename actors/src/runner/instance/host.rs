//! The host of one workflow's instances on a node: starts, inputs and operator verbs reach
//! the instance actor of `(tenant, instance)`, spawned on demand under the node's `instances`
//! supervisor and bounded by `runner.max_instances` (see [`super`] for one step).

use super::*;

/// Runs the instances of one workflow (type-erased for the node's registry).
pub(crate) trait WorkflowHost: Send + Sync {
    fn start(
        &self,
        tenant: TenantId,
        instance: SubjectToken,
        input: Bytes,
        ctx: RequestContext,
    ) -> BoxFuture<'_, Result<InstanceRecord, RunnerError>>;

    fn result(&self, result: EffectResult) -> BoxFuture<'_, Result<InputOutcome, RunnerError>>;

    fn event(
        &self,
        event: EventEnvelope,
        seq: u64,
        index: u32,
    ) -> BoxFuture<'_, Result<InputOutcome, RunnerError>>;

    fn get(
        &self,
        tenant: TenantId,
        instance: SubjectToken,
    ) -> BoxFuture<'_, Result<Option<InstanceRecord>, RunnerError>>;

    /// Runs an operator verb on an instance; the instance as it is after, and what happened.
    fn operate(
        &self,
        tenant: TenantId,
        instance: SubjectToken,
        verb: Verb,
    ) -> BoxFuture<'_, Result<(InstanceRecord, String), RunnerError>>;
}

/// Shared by a workflow's host and its instance actors.
pub(crate) struct HostShared {
    pub(crate) relay_ctx: RelayCtx,
    pub(crate) ledger: kv::Store,
    pub(crate) relay: Relay,
    pub(crate) supervisor: SupervisorRef,
    pub(crate) settings: InstanceSettings,
    pub(super) incarnation: AtomicU64,
    pub(super) instances: crate::idle::Registry<InstanceMsg>,
    pub(super) live: metrics::Gauge,
}

/// The host of one workflow.
pub(crate) struct Host<W> {
    shared: Arc<HostShared>,
    _workflow: PhantomData<fn() -> W>,
}

impl<W: Workflow> Host<W> {
    pub(crate) fn new(
        relay_ctx: RelayCtx,
        relay: Relay,
        supervisor: SupervisorRef,
        settings: InstanceSettings,
        ledger: kv::Store,
    ) -> Self {
        let host = Self {
            shared: Arc::new(HostShared {
                relay_ctx,
                ledger,
                relay,
                supervisor,
                settings,
                incarnation: AtomicU64::new(0),
                instances: DashMap::new(),
                live: metrics::gauge!(names::WORKFLOW_INSTANCES_LIVE, "workflow" => W::NAME),
            }),
            _workflow: PhantomData,
        };
        // Passivation: instances idle for `idle_timeout` stop at the next sweep.
        crate::idle::spawn_sweeper(
            &host.shared,
            host.shared.settings.idle_timeout / 2,
            |h: &HostShared| &h.instances,
            || InstanceMsg::CheckIdle,
        );
        host
    }

    /// The mailbox of an instance's actor, spawned when needed. A start that fails leaves no
    /// slot behind.
    async fn mailbox(
        &self,
        tenant: &TenantId,
        instance: &SubjectToken,
    ) -> Result<BoundedRef<InstanceMsg>, RunnerError> {
        let key = buckets::workflow_instance_key(W::NAME, tenant.as_str(), instance.as_str());
        if !self.shared.instances.contains_key(&key)
            && self.shared.instances.len() >= self.shared.settings.max_instances
        {
            return Err(RunnerError::Busy(format!(
                "{} live `{}` instances (runner.max_instances); retry later",
                self.shared.settings.max_instances,
                W::NAME
            )));
        }
        let slot = self
            .shared
            .instances
            .entry(key.clone())
            .or_default()
            .clone();
        self.shared.live.set(self.shared.instances.len() as f64);
        let spawn = Self::spawn(
            self.shared.clone(),
            key.clone(),
            tenant.clone(),
            instance.clone(),
        );
        let started = slot
            .get_or_try_init(|| async move {
                // Its own task: a caller that gives up cannot leave a half-started actor.
                tokio::spawn(spawn)
                    .await
                    .map_err(|e| RunnerError::Unavailable(format!("instance start failed: {e}")))?
            })
            .await
            .cloned();
        if started.is_err() {
            self.shared
                .instances
                .remove_if(&key, |_, v| Arc::ptr_eq(v, &slot) && v.get().is_none());
            self.shared.live.set(self.shared.instances.len() as f64);
        }
        started
    }

    async fn spawn(
        shared: Arc<HostShared>,
        key: String,
        tenant: TenantId,
        instance: SubjectToken,
    ) -> Result<BoundedRef<InstanceMsg>, RunnerError> {
        let mailbox = BoundedRef::new(INSTANCE_KIND, shared.settings.mailbox);
        let n = shared.incarnation.fetch_add(1, Ordering::Relaxed);
        let supervisor = shared.supervisor.clone();
        let spec = ChildSpec::bounded(format!("{key}#{n}"), mailbox.clone(), move || {
            (
                InstanceActor::<W> {
                    key: key.clone(),
                    tenant: tenant.clone(),
                    instance: instance.clone(),
                    shared: shared.clone(),
                    _workflow: PhantomData,
                },
                (),
            )
        })
        // A failed instance actor is not restarted; the next input spawns a fresh one.
        .restart(Restart::Temporary);
        supervisor
            .start_child(spec)
            .await
            .map_err(|e| RunnerError::Unavailable(e.to_string()))?;
        Ok(mailbox)
    }

    /// Sends to an instance and waits for its answer. `wait` waits for mailbox room
    /// (consumers: backpressure); otherwise a full mailbox is `Busy` (gRPC callers).
    async fn call<R: Send + 'static>(
        &self,
        tenant: &TenantId,
        instance: &SubjectToken,
        wait: bool,
        build: impl Fn(RpcReplyPort<Result<R, RunnerError>>) -> InstanceMsg,
    ) -> Result<R, RunnerError> {
        let timeout = self.shared.settings.input_timeout;
        // Two tries: the first may reach an actor that is passivating.
        for _ in 0..2 {
            let mailbox = self.mailbox(tenant, instance).await?;
            let (tx, rx) = ractor::concurrency::oneshot();
            let msg = build(tx.into());
            let sent = if wait {
                mailbox.send(msg).await.map_err(|_| ())
            } else {
                match mailbox.try_send(msg) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(_)) => {
                        return Err(RunnerError::Busy(format!(
                            "instance {}/{instance} is busy",
                            W::NAME
                        )));
                    }
                    Err(TrySendError::Closed(_)) => Err(()),
                }
            };
            if sent.is_err() {
                let key =
                    buckets::workflow_instance_key(W::NAME, tenant.as_str(), instance.as_str());
                self.shared.instances.remove_if(&key, |_, v| {
                    v.get().is_some_and(|m| m.same_mailbox(&mailbox))
                });
                continue;
            }
            return match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(RunnerError::Unavailable(
                    "the instance stopped before answering".into(),
                )),
                Err(_) => Err(RunnerError::Timeout(timeout)),
            };
        }
        Err(RunnerError::Unavailable(
            "the instance actor could not be started".into(),
        ))
    }
}

impl<W: Workflow> WorkflowHost for Host<W> {
    fn start(
        &self,
        tenant: TenantId,
        instance: SubjectToken,
        input: Bytes,
        ctx: RequestContext,
    ) -> BoxFuture<'_, Result<InstanceRecord, RunnerError>> {
        Box::pin(async move {
            // Malformed input is refused before any actor is spawned for it.
            decode_start::<W>(&input)?;
            self.call(&tenant, &instance, false, |reply| InstanceMsg::Start {
                input: input.clone(),
                ctx: Box::new(ctx.clone()),
                reply,
            })
            .await
        })
    }

    fn result(&self, result: EffectResult) -> BoxFuture<'_, Result<InputOutcome, RunnerError>> {
        Box::pin(async move {
            let tenant = TenantId::new(result.tenant_id.clone())
                .map_err(|e| RunnerError::InvalidArgument(format!("result tenant: {e}")))?;
            let instance = SubjectToken::new(result.instance.clone())
                .map_err(|e| RunnerError::InvalidArgument(format!("result instance: {e}")))?;
            let result = Box::new(result);
            self.call(&tenant, &instance, true, |reply| InstanceMsg::Result {
                result: result.clone(),
                reply,
            })
            .await
        })
    }

    fn event(
        &self,
        event: EventEnvelope,
        seq: u64,
        index: u32,
    ) -> BoxFuture<'_, Result<InputOutcome, RunnerError>> {
        Box::pin(async move {
            let Some(correlation) = W::correlate(&event) else {
                return Ok(InputOutcome::Ignored);
            };
            let tenant = TenantId::new(event.tenant_id.clone())
                .map_err(|e| RunnerError::InvalidArgument(format!("event tenant: {e}")))?;
            let instance = SubjectToken::new(correlation.instance.clone()).map_err(|e| {
                RunnerError::InvalidArgument(format!("correlated instance id: {e}"))
            })?;
            let event = Box::new(event);
            self.call(&tenant, &instance, true, |reply| InstanceMsg::Event {
                event: event.clone(),
                seq,
                index,
                may_start: correlation.may_start,
                reply,
            })
            .await
        })
    }

    fn get(
        &self,
        tenant: TenantId,
        instance: SubjectToken,
    ) -> BoxFuture<'_, Result<Option<InstanceRecord>, RunnerError>> {
        Box::pin(async move {
            let key = buckets::workflow_instance_key(W::NAME, tenant.as_str(), instance.as_str());
            outbox::read(&self.shared.relay_ctx, &key)
                .await
                .map(|r| r.map(|(record, _)| record))
                .map_err(RunnerError::from)
        })
    }

    fn operate(
        &self,
        tenant: TenantId,
        instance: SubjectToken,
        verb: Verb,
    ) -> BoxFuture<'_, Result<(InstanceRecord, String), RunnerError>> {
        Box::pin(async move {
            self.call(&tenant, &instance, false, |reply| InstanceMsg::Operate {
                verb: verb.clone(),
                reply,
            })
            .await
        })
    }
}

/// Decodes a start input.
pub(super) fn decode_start<W: Workflow>(input: &[u8]) -> Result<W::Start, RunnerError> {
    let bytes: &[u8] = if input.is_empty() { b"null" } else { input };
    serde_json::from_slice(bytes).map_err(|e| {
        RunnerError::InvalidArgument(format!(
            "the input does not fit workflow `{}`: {e}",
            W::NAME
        ))
    })
}
