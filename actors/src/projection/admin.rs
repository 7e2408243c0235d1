//! `projection.admin.v1.ProjectionAdmin`: rebuild a view, cancel a rebuild, describe the
//! views of a node. Rebuilds and cancels — done or refused — are written to the audit trail
//! (`view.rebuild`, `view.rebuild_cancel`, target the view) with the caller's actor and tenant.

use cloudlysis_proto::projection_admin::projection_admin_server::ProjectionAdmin;
use cloudlysis_proto::projection_admin::{
    CancelRebuildRequest, CancelRebuildResponse, DescribeViewsRequest, DescribeViewsResponse,
    RebuildViewRequest, RebuildViewResponse, ViewStatus,
};
use cloudlysis_runtime::subject::validate_token;
use tonic::{Request, Response, Status};

use super::generation::{self as view_generation, RebuildError};

/// Deadline of the audit record of a rebuild or cancel (the Gateway gives the call 5 s).
pub const AUDIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
use super::mode::*;
use super::node::*;

impl ProjectionNode {
    /// Starts a rebuild of `view` (see [`super::generation`]).
    pub async fn rebuild(&self, view: &str) -> Result<view_generation::Generations, Status> {
        if self.inner.mode == ProjectionMode::Single {
            return Err(Status::failed_precondition(format!(
                "rebuilding view `{view}` needs PerView mode; this node runs Single mode \
                 ({}=single)",
                MODE.env
            )));
        }
        if !self.inner.views.contains_key(view) {
            validate_token(view).map_err(|e| Status::invalid_argument(format!("view: {e}")))?;
            return Err(Status::not_found(format!(
                "this node runs no view `{view}` (it runs: {})",
                self.view_names().join(", ")
            )));
        }
        view_generation::request_rebuild(&self.inner.js, view)
            .await
            .map_err(rebuild_status)
    }

    /// Cancels the rebuild of `view` in progress (see [`view_generation::cancel_rebuild`]);
    /// returns the record as written and the generation abandoned.
    pub async fn cancel_rebuild(
        &self,
        view: &str,
    ) -> Result<(view_generation::Generations, u32), Status> {
        if !self.inner.views.contains_key(view) {
            validate_token(view).map_err(|e| Status::invalid_argument(format!("view: {e}")))?;
            return Err(Status::not_found(format!(
                "this node runs no view `{view}` (it runs: {})",
                self.view_names().join(", ")
            )));
        }
        view_generation::cancel_rebuild(&self.inner.js, view)
            .await
            .map_err(rebuild_status)
    }

    /// Writes an audit record of an operator's verb on a view (a failure is logged: the verb
    /// itself happened, or was refused), within [`AUDIT_TIMEOUT`] — well inside the caller's
    /// deadline, so the answer is never late for it.
    async fn audit(
        &self,
        actor: &str,
        tenant: &str,
        action: &str,
        view: &str,
        outcome: Result<String, String>,
    ) {
        cloudlysis_runtime::audit::record(
            &self.inner.audit,
            (actor, tenant),
            action,
            view,
            outcome,
            AUDIT_TIMEOUT,
        )
        .await;
    }

    /// The status of every view on this node, sorted by name.
    pub fn describe_views(&self) -> Vec<ViewStatus> {
        self.view_names()
            .into_iter()
            .map(|name| {
                let e = &self.inner.views[name];
                let serving = e.serving();
                let building = e.building();
                ViewStatus {
                    view: name.to_string(),
                    generation: serving.as_ref().map_or(0, |s| s.generation),
                    checkpoint: serving.as_ref().map_or(0, |s| s.checkpoint.get()),
                    rebuilding: building.as_ref().map(|b| b.generation),
                    rebuild_checkpoint: building.as_ref().map(|b| b.checkpoint.get()),
                    stream_last_sequence: 0,
                    stream_known: false,
                }
            })
            .collect()
    }
}

pub(crate) fn rebuild_status(e: RebuildError) -> Status {
    match e {
        RebuildError::InvalidView { .. } => Status::invalid_argument(e.to_string()),
        // A rebuild already running is a conflict with it (the Gateway's 409).
        RebuildError::InProgress { .. } => Status::already_exists(e.to_string()),
        RebuildError::NotRebuilding { .. } | RebuildError::SingleMode(_) => {
            Status::failed_precondition(e.to_string())
        }
        RebuildError::Contended(_) => Status::aborted(e.to_string()),
        RebuildError::Nats { .. } => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl ProjectionAdmin for ProjectionNode {
    async fn rebuild_view(
        &self,
        request: Request<RebuildViewRequest>,
    ) -> Result<Response<RebuildViewResponse>, Status> {
        let (actor, tenant) = crate::ops::caller(&request);
        let view = request.into_inner().view;
        let result = self.rebuild(&view).await;
        let outcome = match &result {
            Ok(gens) => Ok(format!(
                "rebuilding into generation {} (generation {} answers meanwhile)",
                gens.building.unwrap_or(gens.active),
                gens.active
            )),
            Err(s) => Err(s.message().to_string()),
        };
        self.audit(&actor, &tenant, "view.rebuild", &view, outcome)
            .await;
        let gens = result?;
        Ok(Response::new(RebuildViewResponse {
            generation: gens.building.unwrap_or(gens.active),
            active_generation: gens.active,
        }))
    }

    async fn cancel_rebuild(
        &self,
        request: Request<CancelRebuildRequest>,
    ) -> Result<Response<CancelRebuildResponse>, Status> {
        let (actor, tenant) = crate::ops::caller(&request);
        let view = request.into_inner().view;
        let result = self.cancel_rebuild(&view).await;
        let outcome = match &result {
            Ok((gens, cancelled)) => Ok(format!(
                "generation {cancelled} abandoned; generation {} answers",
                gens.active
            )),
            Err(s) => Err(s.message().to_string()),
        };
        self.audit(&actor, &tenant, "view.rebuild_cancel", &view, outcome)
            .await;
        let (gens, cancelled) = result?;
        Ok(Response::new(CancelRebuildResponse {
            cancelled_generation: cancelled,
            active_generation: gens.active,
        }))
    }

    async fn describe_views(
        &self,
        _: Request<DescribeViewsRequest>,
    ) -> Result<Response<DescribeViewsResponse>, Status> {
        // The stream's last sequence, so a caller sees each view's lag (0: not known — also
        // at once, without a request that would wait out its deadline, while the connection
        // is known down).
        let connected = cloudlysis_runtime::nats::not_connected(&self.inner.js).is_none();
        let last = match connected {
            false => None,
            true => match tokio::time::timeout(
                super::node::NATS_TIMEOUT,
                self.inner
                    .js
                    .get_stream(cloudlysis_runtime::stream::AGGREGATE_EVENTS),
            )
            .await
            {
                Ok(Ok(s)) => Some(s.cached_info().state.last_sequence),
                _ => None,
            },
        };
        let mut views = self.describe_views();
        for v in &mut views {
            v.stream_last_sequence = last.unwrap_or(0);
            v.stream_known = last.is_some();
        }
        Ok(Response::new(DescribeViewsResponse { views }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rebuild asked for while one runs is a conflict (the Gateway answers 409, as the control
    /// API says); found by using the platform: it was `FAILED_PRECONDITION`, a 422.
    #[test]
    fn a_rebuild_while_one_runs_is_a_conflict() {
        let s = rebuild_status(RebuildError::InProgress {
            view: "balances".into(),
            active: 2,
            building: 3,
        });
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        assert!(s.message().contains("generation 3"), "{}", s.message());
    }
}
