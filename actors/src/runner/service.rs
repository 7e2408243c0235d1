//! The runner node's gRPC services: `runner.gateway.v1.WorkflowService` (start, read, list and
//! operate instances; the tenant comes from gRPC metadata only and is part of every instance
//! key, so no call reaches another tenant's instances) and `runner.admin.v1.RunnerAdmin`
//! (drain, undrain, status, reload).

use cloudlysis_runtime::credential::Caller;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use cloudlysis_proto::runner::runner_admin_server::RunnerAdmin;
use cloudlysis_proto::runner::{
    self as admin, DrainRequest, DrainResponse, ReloadRequest, ReloadResponse, StatusRequest,
    StatusResponse, UndrainRequest,
};
use cloudlysis_proto::workflows::workflow_service_server::WorkflowService;
use cloudlysis_proto::workflows::{
    self as pb, GetRequest, ListRequest, ListResponse, OperateRequest, StartRequest,
};
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::context::{RequestContext, headers};
use cloudlysis_runtime::kv as buckets;
use cloudlysis_runtime::outcome::ErrorKind;
use tonic::{Request, Response, Status};

use super::drain::DrainProgress;
use super::error::RunnerError;
use super::instance::Verb;
use super::node::RunnerNode;
use super::record::{InstanceRecord, InstanceStatus};
use super::worker::LedgerRecord;
use crate::consumer::ConsumerMsg;

/// How long `Drain` waits for in-flight work when the request names no grace.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most instances of one workflow and tenant a `List` reads.
pub const MAX_LIST_SCAN: u64 = 10_000;
/// Largest page of a `List`.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Effect-ledger reads at once while filling in an answer's pending commands.
pub const LEDGER_READS_AT_ONCE: usize = 16;
/// A pending command's `ledger_status` when the ledger did not answer (`last_error` says why).
pub const LEDGER_UNKNOWN: &str = "unknown";

/// The wire form of an instance.
pub fn to_proto(r: &InstanceRecord) -> pb::Instance {
    pb::Instance {
        workflow: r.workflow.clone(),
        instance: r.instance.clone(),
        status: r.status.as_str().to_string(),
        state_json: serde_json::to_vec(&r.state).unwrap_or_default(),
        step: r.step,
        pending: r
            .pending
            .iter()
            .map(|(id, p)| pb::PendingCommand {
                command_id: id.clone(),
                effect_type: p.effect_type.clone(),
                label: p.label.clone(),
                issued_at_ms: p.issued_at_ms,
                ..Default::default()
            })
            .collect(),
        timers: r
            .timers
            .iter()
            .map(|(name, t)| pb::ArmedTimer {
                name: name.clone(),
                fire_at_ms: t.fire_at_ms,
            })
            .collect(),
        failure: r.failure.clone(),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        state_version: r.state_version,
        paused: r.paused,
        cancel_requested: r.cancel_requested,
        applied_events: r
            .applied_events
            .iter()
            .map(|(seq, index)| pb::AppliedEvent {
                stream_sequence: *seq,
                index: *index,
            })
            .collect(),
    }
}

fn drain_proto(p: &DrainProgress) -> DrainResponse {
    DrainResponse {
        drained: p.drained,
        in_flight: p.in_flight,
        state: p.state.as_str().to_string(),
        pending_outbox: p.pending_outbox,
        unacked: p.in_flight,
        detail: p.detail.clone(),
    }
}

fn tokens(workflow: &str, instance: &str) -> Result<SubjectToken, Status> {
    cloudlysis_runtime::subject::validate_token(workflow)
        .map_err(|e| Status::invalid_argument(format!("workflow: {e}")))?;
    SubjectToken::new(instance).map_err(|e| Status::invalid_argument(format!("instance: {e}")))
}

impl RunnerNode {
    fn host(
        &self,
        workflow: &str,
    ) -> Result<&std::sync::Arc<dyn super::instance::WorkflowHost>, Status> {
        self.inner.hosts.get(workflow).ok_or_else(|| {
            RunnerError::UnknownWorkflow {
                name: workflow.to_string(),
                runs: self.workflows().into_iter().map(String::from).collect(),
            }
            .to_status()
        })
    }

    /// Refuses a call at once while this node's NATS client knows its connection is down: every
    /// instance call reads or writes NATS, and would otherwise wait out its deadline (a write
    /// would be queued and land whenever the connection came back, after the caller was told
    /// the outcome is unknown). Marked `not-committed`: the Gateway may try another runner.
    fn store_connected(&self, nothing: &str) -> Result<(), Status> {
        match cloudlysis_runtime::nats::not_connected(&self.inner.ctx.js) {
            None => Ok(()),
            Some(state) => Err(ErrorKind::NotCommitted.mark(Status::unavailable(format!(
                "NATS is not connected ({state}) on this runner node: {nothing}"
            )))),
        }
    }

    /// The state of every consumer of this node.
    pub async fn consumer_status(&self) -> Vec<crate::consumer::ConsumerStatus> {
        let controls: Vec<_> = self
            .inner
            .consumers
            .lock()
            .await
            .iter()
            .map(|c| c.control.clone())
            .collect();
        let asks = controls
            .iter()
            .map(|c| c.ask(ConsumerMsg::Status, Duration::from_secs(2)));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }

    /// Fills in each pending command of `instances` (of `tenant`) from the effect ledger:
    /// attempts, status, last error — `ledger_status` empty before the first attempt, and
    /// [`LEDGER_UNKNOWN`] when the ledger did not answer by the read's deadline. At most
    /// [`LEDGER_READS_AT_ONCE`] reads at a time, all within one store deadline (`io_timeout`: a
    /// page of instances costs no more than one read's deadline) and the caller's deadline
    /// (`caller`, from its `grpc-timeout`), whichever comes first.
    async fn with_ledger(
        &self,
        tenant: &str,
        instances: &mut [pb::Instance],
        caller: Option<tokio::time::Instant>,
    ) {
        use futures::StreamExt;
        // Within the caller's deadline too: the answer (a verb already applied) must reach it.
        let own = tokio::time::Instant::now() + self.inner.ctx.settings.io_timeout;
        let deadline = caller.map_or(own, |c| c.min(own));
        let pending = instances.iter_mut().flat_map(|i| i.pending.iter_mut());
        futures::stream::iter(pending)
            .for_each_concurrent(LEDGER_READS_AT_ONCE, |p| async move {
                match self
                    .ledger_of(&p.effect_type, tenant, &p.command_id, deadline)
                    .await
                {
                    Ok(Some(l)) => {
                        p.attempts = l.attempts;
                        p.ledger_status = serde_json::to_value(l.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        p.last_error = l.last_error.unwrap_or_default();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        p.ledger_status = LEDGER_UNKNOWN.into();
                        p.last_error = e;
                    }
                }
            })
            .await;
    }

    /// The ledger's view of a pending command (`None`: no attempt yet), or why it is not known.
    async fn ledger_of(
        &self,
        effect_type: &str,
        tenant: &str,
        command_id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<LedgerRecord>, String> {
        let key = buckets::effect_ledger_key(effect_type, tenant, command_id);
        let entry = tokio::time::timeout_at(deadline, self.inner.ctx.ledger.entry(key))
            .await
            .map_err(|_| "the effect ledger did not answer in time".to_string())?
            .map_err(|e| format!("the effect ledger did not answer: {e}"))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| serde_json::from_slice(&e.value).ok()))
    }

    /// Writes an audit record (a failure to write is logged: the verb itself happened).
    async fn audit(
        &self,
        actor: &str,
        tenant: &str,
        action: &str,
        target: &str,
        outcome: Result<String, String>,
    ) {
        cloudlysis_runtime::audit::record(
            &self.inner.audit,
            (actor, tenant),
            action,
            target,
            outcome,
            self.inner.ctx.settings.io_timeout,
        )
        .await;
    }
}

fn actor_of<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(headers::ACTOR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string()
}

#[tonic::async_trait]
impl WorkflowService for RunnerNode {
    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        Caller::of(&request)?.require("workflows", &request.get_ref().workflow)?;
        let ctx = RequestContext::extract(request.metadata())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let req = request.into_inner();
        let instance = tokens(&req.workflow, &req.instance)?;
        let host = self.host(&req.workflow)?;
        if self.draining() {
            return Err(Status::unavailable(
                "this runner node is draining: nothing was started; start it on another runner",
            ));
        }
        if !self.enabled_workflows().contains(&req.workflow.as_str()) {
            return Err(Status::unavailable(format!(
                "workflow `{}` is disabled on this runner (runner.enabled_workflows): nothing was \
                 started",
                req.workflow
            )));
        }
        self.store_connected("nothing was started")?;
        let record = host
            .start(ctx.tenant.clone(), instance, req.input_json.into(), ctx)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<pb::Instance>, Status> {
        Caller::of(&request)?.require("workflows", &request.get_ref().workflow)?;
        let ctx = RequestContext::extract(request.metadata())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let caller = crate::grpc::deadline(request.metadata());
        let req = request.into_inner();
        let instance = tokens(&req.workflow, &req.instance)?;
        let host = self.host(&req.workflow)?;
        self.store_connected("nothing was read")?;
        let Some(record) = host
            .get(ctx.tenant.clone(), instance)
            .await
            .map_err(|e| e.to_status())?
        else {
            return Err(Status::not_found(format!(
                "no instance `{}` of workflow `{}`",
                req.instance, req.workflow
            )));
        };
        let mut out = [to_proto(&record)];
        self.with_ledger(ctx.tenant.as_str(), &mut out, caller)
            .await;
        let [out] = out;
        Ok(Response::new(out))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Caller::of(&request)?.require("workflows", &request.get_ref().workflow)?;
        let ctx = RequestContext::extract(request.metadata())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let caller = crate::grpc::deadline(request.metadata());
        let req = request.into_inner();
        cloudlysis_runtime::subject::validate_token(&req.workflow)
            .map_err(|e| Status::invalid_argument(format!("workflow: {e}")))?;
        self.host(&req.workflow)?;
        if !req.cursor.is_empty() {
            cloudlysis_runtime::subject::validate_token(&req.cursor)
                .map_err(|e| Status::invalid_argument(format!("cursor: {e}")))?;
        }
        // `paused` is a flag beside the status, selected by the same filter.
        let (status, paused) = match req.status.as_str() {
            "" => (None, false),
            "running" => (Some(InstanceStatus::Running), false),
            "completed" => (Some(InstanceStatus::Completed), false),
            "failed" => (Some(InstanceStatus::Failed), false),
            "paused" => (None, true),
            other => {
                return Err(Status::invalid_argument(format!(
                    "status `{other}`: expected running, completed, failed or paused"
                )));
            }
        };
        let page = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        self.store_connected("nothing was read")?;
        let prefix = format!("{}.{}.", req.workflow, ctx.tenant);
        let scan = tokio::time::timeout(
            Duration::from_secs(10),
            crate::kv_scan::latest_under(
                &self.inner.ctx.js,
                buckets::WORKFLOWS_BUCKET,
                &prefix,
                MAX_LIST_SCAN,
            ),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("listing instances timed out"))?
        .map_err(|e| match e {
            crate::kv_scan::ScanError::TooMany { found, max } => {
                Status::failed_precondition(format!(
                    "{found} instances of `{}` for this tenant; a list reads at most {max}",
                    req.workflow
                ))
            }
            crate::kv_scan::ScanError::Nats(e) => Status::unavailable(e),
        })?;
        let now = cloudlysis_runtime::workflow::now_ms();
        let mut found: Vec<InstanceRecord> = scan
            .into_iter()
            .filter(|(id, _)| req.cursor.is_empty() || *id > req.cursor)
            .filter_map(|(_, bytes)| serde_json::from_slice::<InstanceRecord>(&bytes).ok())
            .filter(|r| status.is_none_or(|s| r.status == s) && (!paused || r.paused))
            .filter(|r| now.saturating_sub(r.updated_at_ms) >= req.idle_for_ms)
            .collect();
        found.sort_by(|a, b| a.instance.cmp(&b.instance));
        let more = found.len() > page;
        found.truncate(page);
        let next_cursor = if more {
            found.last().map(|r| r.instance.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let mut instances: Vec<pb::Instance> = found.iter().map(to_proto).collect();
        self.with_ledger(ctx.tenant.as_str(), &mut instances, caller)
            .await;
        Ok(Response::new(ListResponse {
            instances,
            next_cursor,
        }))
    }

    async fn operate(
        &self,
        request: Request<OperateRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        Caller::of(&request)?.require(
            "workflows",
            &format!("{}:operate", request.get_ref().workflow),
        )?;
        let ctx = RequestContext::extract(request.metadata())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let actor = actor_of(&request);
        let caller = crate::grpc::deadline(request.metadata());
        let req = request.into_inner();
        let instance = tokens(&req.workflow, &req.instance)?;
        let host = self.host(&req.workflow)?;
        let verb = Verb::parse(&req.verb, &req.reason).map_err(|e| e.to_status())?;
        self.store_connected("nothing was done")?;
        let target = format!("{}/{}", req.workflow, req.instance);
        let result = host
            .operate(ctx.tenant.clone(), instance, verb.clone())
            .await;
        let outcome = match &result {
            Ok((_, detail)) => Ok(detail.clone()),
            Err(e) => Err(e.to_string()),
        };
        self.audit(&actor, ctx.tenant.as_str(), verb.action(), &target, outcome)
            .await;
        let (record, _) = result.map_err(|e| e.to_status())?;
        let mut out = [to_proto(&record)];
        self.with_ledger(ctx.tenant.as_str(), &mut out, caller)
            .await;
        let [out] = out;
        Ok(Response::new(out))
    }
}

#[tonic::async_trait]
impl RunnerAdmin for RunnerNode {
    async fn drain(
        &self,
        request: Request<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        let actor = actor_of(&request);
        let req = request.into_inner();
        let grace = req
            .grace_ms
            .map(Duration::from_millis)
            .unwrap_or(self.inner.ctx.settings.drain_grace);
        let (min, max) = (
            cloudlysis_runtime::workflow::DRAIN_GRACE_MIN,
            cloudlysis_runtime::workflow::DRAIN_GRACE_MAX,
        );
        if !(min..=max).contains(&grace) {
            return Err(Status::invalid_argument(format!(
                "grace_ms {}: must be {} – {} (nothing was changed)",
                grace.as_millis(),
                min.as_millis(),
                max.as_millis()
            )));
        }
        let progress = RunnerNode::drain(self, grace, req.wait).await;
        self.audit(
            &actor,
            "",
            "runner.drain",
            &self.inner.node_id,
            Ok(progress.state.as_str().into()),
        )
        .await;
        Ok(Response::new(drain_proto(&progress)))
    }

    async fn undrain(
        &self,
        request: Request<UndrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        let actor = actor_of(&request);
        let progress = RunnerNode::undrain(self).await;
        self.audit(
            &actor,
            "",
            "runner.undrain",
            &self.inner.node_id,
            Ok("serving".into()),
        )
        .await;
        Ok(Response::new(drain_proto(&progress)))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let statuses = self.consumer_status().await;
        let entries = self.inner.consumers.lock().await.clone();
        // The server's counts of each consumer, asked all at once under one deadline — and
        // not at all while the connection is known down (0: not known), so Status answers
        // with what the node itself knows instead of waiting out a deadline per consumer.
        let connected = cloudlysis_runtime::nats::not_connected(&self.inner.ctx.js).is_none();
        let infos = futures::future::join_all(entries.iter().map(|e| async move {
            if !connected {
                return None;
            }
            let info = async {
                let stream = self.inner.ctx.js.get_stream(e.stream).await.ok()?;
                stream.consumer_info(&e.durable).await.ok()
            };
            tokio::time::timeout(self.inner.ctx.settings.io_timeout, info)
                .await
                .ok()
                .flatten()
        }))
        .await;
        let mut consumers = Vec::new();
        for (e, info) in entries.iter().zip(infos) {
            let mine = statuses
                .iter()
                .find(|s| s.durable == e.durable && s.stream == e.stream);
            consumers.push(admin::ConsumerStatus {
                stream: e.stream.to_string(),
                durable: e.durable.clone(),
                pending: info.as_ref().map_or(0, |i| i.num_pending),
                ack_pending: info.as_ref().map_or(0, |i| i.num_ack_pending as u64),
                redelivered: info.as_ref().map_or(0, |i| i.num_redelivered as u64),
                in_flight: mine.map_or(0, |s| s.in_flight),
                fetching: mine.is_some_and(|s| s.fetching),
            });
        }
        let effects = self
            .inner
            .effects
            .iter()
            .map(|slot| {
                let durable = cloudlysis_runtime::consumer::DurableName::runner_effect(
                    &SubjectToken::new(slot.effect_type)
                        .unwrap_or_else(|_| unreachable!("validated")),
                )
                .to_string();
                admin::EffectStatus {
                    effect_type: slot.effect_type.to_string(),
                    in_flight: statuses
                        .iter()
                        .filter(|s| s.durable == durable)
                        .map(|s| s.in_flight)
                        .sum(),
                    concurrency: slot.concurrency.load(Ordering::SeqCst),
                    max_attempts: match slot.max_attempts.load(Ordering::SeqCst) {
                        0 => slot.policy.max_attempts,
                        n => n,
                    },
                }
            })
            .collect();
        Ok(Response::new(StatusResponse {
            draining: self.draining(),
            in_flight: statuses.iter().map(|s| s.in_flight).sum(),
            enabled_workflows: self
                .enabled_workflows()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            effect_types: self.effect_types().iter().map(|s| s.to_string()).collect(),
            node_id: self.inner.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.inner.started.elapsed().as_secs(),
            drain_state: self.drain_progress().state.as_str().to_string(),
            effects,
            outbox_depth: self.outbox_depth().await,
            consumers,
        }))
    }

    async fn reload(
        &self,
        request: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        let actor = actor_of(&request);
        let result = self.reload().await;
        let outcome = match &result {
            Ok(changes) => Ok(changes.join("; ")),
            Err(e) => Err(e.message().to_string()),
        };
        self.audit(&actor, "", "runner.reload", &self.inner.node_id, outcome)
            .await;
        let changes = result?;
        Ok(Response::new(ReloadResponse {
            enabled_workflows: self
                .enabled_workflows()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_in_flight: self
                .inner
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .default_concurrency as u32,
            effects: self
                .inner
                .effects
                .iter()
                .map(|slot| admin::EffectStatus {
                    effect_type: slot.effect_type.to_string(),
                    in_flight: 0,
                    concurrency: slot.concurrency.load(Ordering::SeqCst),
                    max_attempts: match slot.max_attempts.load(Ordering::SeqCst) {
                        0 => slot.policy.max_attempts,
                        n => n,
                    },
                })
                .collect(),
            changes,
        }))
    }
}
