//! The runner node's gRPC services: `runner.gateway.v1.WorkflowService` (start and read
//! instances; the tenant comes from gRPC metadata only and is part of every instance key, so no
//! call reaches another tenant's instances) and `runner.admin.v1.RunnerAdmin` (drain, status).

use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudlysis_proto::runner::runner_admin_server::RunnerAdmin;
use cloudlysis_proto::runner::{
    DrainRequest, DrainResponse, ReloadRequest, ReloadResponse, StatusRequest, StatusResponse,
};
use cloudlysis_proto::workflows::workflow_service_server::WorkflowService;
use cloudlysis_proto::workflows::{self as pb, GetRequest, StartRequest};
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::context::RequestContext;
use tonic::{Request, Response, Status};

use super::error::RunnerError;
use super::node::RunnerNode;
use super::record::InstanceRecord;
use crate::consumer::{ConsumerMsg, ConsumerStatus, DrainReport};

/// How long `Drain` waits for in-flight work.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
            RunnerError::UnknownWorkflow(format!(
                "{workflow}` (this runner runs: `{}",
                self.inner.workflows.join("`, `")
            ))
            .to_status()
        })
    }

    /// Stops every consumer fetching, waits for in-flight work (bounded by `timeout`), and turns
    /// readiness false. Idempotent.
    pub async fn drain(&self, timeout: Duration) -> DrainReport {
        self.inner.draining.store(true, Ordering::SeqCst);
        let asks = self
            .inner
            .controls
            .iter()
            .map(|c| c.ask(ConsumerMsg::Drain, timeout));
        let reports = futures::future::join_all(asks).await;
        let mut total = DrainReport {
            drained: true,
            in_flight: 0,
        };
        for r in reports {
            match r {
                Ok(r) => {
                    total.drained &= r.drained;
                    total.in_flight += r.in_flight;
                }
                Err(_) => total.drained = false,
            }
        }
        total
    }

    /// The state of every consumer of this node.
    pub async fn consumer_status(&self) -> Vec<ConsumerStatus> {
        let asks = self
            .inner
            .controls
            .iter()
            .map(|c| c.ask(ConsumerMsg::Status, Duration::from_secs(2)));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }
}

#[tonic::async_trait]
impl WorkflowService for RunnerNode {
    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let ctx = RequestContext::extract(request.metadata())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let req = request.into_inner();
        let instance = tokens(&req.workflow, &req.instance)?;
        if self.draining() {
            return Err(Status::unavailable("this runner node is draining"));
        }
        let host = self.host(&req.workflow)?;
        let record = host
            .start(ctx.tenant.clone(), instance, req.input_json.into(), ctx)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<pb::Instance>, Status> {
        let ctx = RequestContext::extract(request.metadata())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let req = request.into_inner();
        let instance = tokens(&req.workflow, &req.instance)?;
        let host = self.host(&req.workflow)?;
        match host
            .get(ctx.tenant.clone(), instance)
            .await
            .map_err(|e| e.to_status())?
        {
            Some(record) => Ok(Response::new(to_proto(&record))),
            None => Err(Status::not_found(format!(
                "no instance `{}` of workflow `{}`",
                req.instance, req.workflow
            ))),
        }
    }
}

#[tonic::async_trait]
impl RunnerAdmin for RunnerNode {
    async fn drain(&self, _: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        let report = RunnerNode::drain(self, DRAIN_TIMEOUT).await;
        Ok(Response::new(DrainResponse {
            drained: report.drained,
            in_flight: report.in_flight,
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let in_flight = self
            .consumer_status()
            .await
            .iter()
            .map(|s| s.in_flight)
            .sum();
        Ok(Response::new(StatusResponse {
            draining: self.draining(),
            in_flight,
            enabled_workflows: self.workflows().iter().map(|s| s.to_string()).collect(),
            effect_types: self.effect_types().iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn reload(&self, _: Request<ReloadRequest>) -> Result<Response<ReloadResponse>, Status> {
        Err(Status::unimplemented(
            "Reload is not available in this version: restart the runner node to apply a \
             changed configuration",
        ))
    }
}
