//! A node's gRPC health (`grpc.health.v1.Health`): what its services' reporter says — a
//! draining runner's `WorkflowService` and whole server are `NOT_SERVING` — and, when the node
//! serves with readiness checks ([`NodeServing::with_readiness`]), `NOT_SERVING` while one of
//! them fails: the NATS connection down, JetStream not answering for the role's streams, the
//! supervision tree stopped. It is the answer of the node's `/ready`, so a Gateway (whose own
//! `/ready` asks its nodes' gRPC health) or a load balancer probing gRPC stops sending calls
//! that could only fail, and sends them again once the node can serve them.
//!
//! The checks run at most once per [`EVALUATED_FOR`] however many probes ask, one evaluation
//! at a time (each check bounded by the readiness deadline); `Watch` follows the reporter only.
//!
//! [`NodeServing::with_readiness`]: cloudlysis_runtime::admission::NodeServing::with_readiness

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use cloudlysis_runtime::service::Readiness;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// How long one evaluation of the readiness checks answers health probes.
pub const EVALUATED_FOR: Duration = Duration::from_secs(1);

/// The health service of a node (see the module docs).
pub(crate) struct NodeHealth {
    reporter: HealthService,
    readiness: Option<Readiness>,
    /// When the checks last ran, and whether they all passed.
    last: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
}

impl NodeHealth {
    /// The health server of `reporter`'s statuses, `NOT_SERVING` too while `readiness` fails.
    pub(crate) fn server(
        reporter: &HealthReporter,
        readiness: Option<&Readiness>,
    ) -> HealthServer<NodeHealth> {
        HealthServer::new(NodeHealth {
            reporter: HealthService::from_health_reporter(reporter.clone()),
            readiness: readiness.cloned(),
            last: Arc::default(),
        })
    }

    /// Whether the readiness checks pass (true without checks), from an evaluation at most
    /// [`EVALUATED_FOR`] old.
    async fn ready(&self) -> bool {
        let Some(readiness) = &self.readiness else {
            return true;
        };
        let mut last = self.last.lock().await;
        if let Some((at, ready)) = *last
            && at.elapsed() < EVALUATED_FOR
        {
            return ready;
        }
        let report = readiness.evaluate().await;
        if !report.ready {
            let failing: Vec<String> = report
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.name, c.error.as_deref().unwrap_or("failed")))
                .collect();
            tracing::debug!(failing = %failing.join("; "), "gRPC health: not serving");
        }
        *last = Some((Instant::now(), report.ready));
        report.ready
    }
}

#[tonic::async_trait]
impl Health for NodeHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let answer = self.reporter.check(request).await?;
        if answer.get_ref().status != ServingStatus::Serving as i32 || self.ready().await {
            return Ok(answer);
        }
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::NotServing as i32,
        }))
    }

    type WatchStream = <HealthService as Health>::WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.reporter.watch(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudlysis_runtime::service::ReadyFlag;

    fn check(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.into(),
        })
    }

    async fn status(health: &NodeHealth, service: &str) -> Result<i32, tonic::Code> {
        health
            .check(check(service))
            .await
            .map(|r| r.get_ref().status)
            .map_err(|s| s.code())
    }

    fn health(readiness: Option<&Readiness>) -> (HealthReporter, NodeHealth) {
        let (reporter, _) = tonic_health::server::health_reporter();
        let health = NodeHealth {
            reporter: HealthService::from_health_reporter(reporter.clone()),
            readiness: readiness.cloned(),
            last: Arc::default(),
        };
        (reporter, health)
    }

    #[tokio::test(start_paused = true)]
    async fn health_is_not_serving_while_a_readiness_check_fails_and_serving_again_after() {
        let readiness = Readiness::new();
        let nats: ReadyFlag = readiness.flag("nats", true);
        let (_reporter, health) = health(Some(&readiness));
        let serving = ServingStatus::Serving as i32;
        let not_serving = ServingStatus::NotServing as i32;
        assert_eq!(status(&health, "").await, Ok(serving));
        nats.set(false);
        // Within one evaluation's life the earlier answer stands; after it, the new one.
        assert_eq!(status(&health, "").await, Ok(serving));
        tokio::time::advance(EVALUATED_FOR).await;
        assert_eq!(status(&health, "").await, Ok(not_serving));
        nats.set(true);
        tokio::time::advance(EVALUATED_FOR).await;
        assert_eq!(status(&health, "").await, Ok(serving));
    }

    #[tokio::test]
    async fn the_reporters_answer_stands_when_it_is_not_serving_or_unknown() {
        let (reporter, health) = health(None);
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        assert_eq!(
            status(&health, "").await,
            Ok(ServingStatus::NotServing as i32)
        );
        assert_eq!(
            status(&health, "no.such.Service").await,
            Err(tonic::Code::NotFound)
        );
    }
}
