//! A node's gRPC health (`grpc.health.v1.Health`): what its services' reporter says — a
//! draining runner's `WorkflowService` and whole server are `NOT_SERVING` — and, when the node
//! serves with readiness checks ([`NodeServing::with_readiness`]), `NOT_SERVING` while one of
//! them fails: the NATS connection down, JetStream not answering for the role's streams, the
//! supervision tree stopped. It is the answer of the node's `/ready`, so a Gateway (whose own
//! `/ready` asks its nodes' gRPC health) or a load balancer probing gRPC stops sending calls
//! that could only fail, and sends them again once the node can serve them.
//!
//! The checks run in a task of their own, at most one evaluation at a time, started by a probe
//! that finds the last answer older than [`EVALUATED_FOR`]; a probe never waits for it when an
//! answer exists (it gets the last one, however old), and the first probe waits at most
//! [`FIRST_ANSWER_WAIT`] (then `NOT_SERVING`: readiness not known yet) — so a probe answers
//! within its caller's deadline even while a check waits out its own (a frozen server), and an
//! evaluation cut short by a caller who gave up still stores its result. `Watch` follows the
//! reporter only.
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

/// How long the first probe waits for the first evaluation (below a Gateway's 1.5 s).
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// The health service of a node (see the module docs).
pub(crate) struct NodeHealth {
    reporter: HealthService,
    readiness: Option<Arc<Evaluations>>,
}

/// The node's readiness checks and what their last evaluation said.
struct Evaluations {
    readiness: Readiness,
    state: std::sync::Mutex<Last>,
    /// Notified when an evaluation stored its answer.
    done: tokio::sync::Notify,
}

#[derive(Default)]
struct Last {
    /// When the last evaluation ended, and whether every check passed.
    answer: Option<(Instant, bool)>,
    /// An evaluation is running.
    running: bool,
}

impl NodeHealth {
    /// The health server of `reporter`'s statuses, `NOT_SERVING` too while `readiness` fails.
    pub(crate) fn server(
        reporter: &HealthReporter,
        readiness: Option<&Readiness>,
    ) -> HealthServer<NodeHealth> {
        HealthServer::new(Self::new(reporter, readiness))
    }

    fn new(reporter: &HealthReporter, readiness: Option<&Readiness>) -> Self {
        NodeHealth {
            reporter: HealthService::from_health_reporter(reporter.clone()),
            readiness: readiness.map(|r| {
                Arc::new(Evaluations {
                    readiness: r.clone(),
                    state: Default::default(),
                    done: tokio::sync::Notify::new(),
                })
            }),
        }
    }

    /// Whether the readiness checks pass (true without checks), as the module docs describe.
    async fn ready(&self) -> bool {
        let Some(evaluations) = &self.readiness else {
            return true;
        };
        let done = evaluations.done.notified();
        tokio::pin!(done);
        // Registered before the state is read, so an evaluation ending in between is seen.
        done.as_mut().enable();
        let (last, start) = {
            let mut state = evaluations.state.lock().unwrap_or_else(|p| p.into_inner());
            match state.answer {
                Some((at, ready)) if at.elapsed() < EVALUATED_FOR => return ready,
                _ => {}
            }
            let start = !state.running;
            state.running = true;
            (state.answer.map(|(_, ready)| ready), start)
        };
        if start {
            let evaluations = evaluations.clone();
            tokio::spawn(async move {
                let report = evaluations.readiness.evaluate().await;
                if !report.ready {
                    let failing: Vec<String> = report
                        .checks
                        .iter()
                        .filter(|c| !c.ok)
                        .map(|c| format!("{}: {}", c.name, c.error.as_deref().unwrap_or("failed")))
                        .collect();
                    tracing::debug!(failing = %failing.join("; "), "gRPC health: not serving");
                }
                let mut state = evaluations.state.lock().unwrap_or_else(|p| p.into_inner());
                *state = Last {
                    answer: Some((Instant::now(), report.ready)),
                    running: false,
                };
                drop(state);
                evaluations.done.notify_waiters();
            });
        }
        if let Some(ready) = last {
            return ready;
        }
        // No answer yet (the node just started): wait for the first, bounded.
        let _ = tokio::time::timeout(FIRST_ANSWER_WAIT, done).await;
        let state = evaluations.state.lock().unwrap_or_else(|p| p.into_inner());
        state.answer.is_some_and(|(_, ready)| ready)
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
        let health = NodeHealth::new(&reporter, readiness);
        (reporter, health)
    }

    /// Asks until the answer is `want` (an evaluation runs in its own task: the probe that
    /// starts it gets the last answer); the number of probes it took.
    async fn until(health: &NodeHealth, want: ServingStatus) -> usize {
        for probes in 1..=50 {
            if status(health, "").await == Ok(want as i32) {
                return probes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never {want:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn health_is_not_serving_while_a_readiness_check_fails_and_serving_again_after() {
        let readiness = Readiness::new();
        let nats: ReadyFlag = readiness.flag("nats", true);
        let (_reporter, health) = health(Some(&readiness));
        // The first probe waits for the first evaluation.
        assert_eq!(status(&health, "").await, Ok(ServingStatus::Serving as i32));
        nats.set(false);
        // Within one evaluation's life the earlier answer stands; after it, the next
        // evaluation's.
        assert_eq!(status(&health, "").await, Ok(ServingStatus::Serving as i32));
        tokio::time::advance(EVALUATED_FOR).await;
        until(&health, ServingStatus::NotServing).await;
        nats.set(true);
        tokio::time::advance(EVALUATED_FOR).await;
        until(&health, ServingStatus::Serving).await;
    }

    /// A check that does not answer (a frozen server: it runs to the readiness deadline, 2 s)
    /// does not hold probes past a Gateway's 1.5 s: the first probe answers `NOT_SERVING` after
    /// [`FIRST_ANSWER_WAIT`], and the evaluation still stores its answer for the next ones.
    #[tokio::test(start_paused = true)]
    async fn a_check_that_hangs_does_not_hold_a_probe_past_its_deadline() {
        let readiness = Readiness::new();
        readiness.register("jetstream", std::future::pending::<Result<(), String>>);
        let (_reporter, health) = health(Some(&readiness));
        let asked = Instant::now();
        let first = tokio::time::timeout(Duration::from_millis(1500), status(&health, "")).await;
        assert_eq!(
            first.expect("answered within 1.5 s"),
            Ok(ServingStatus::NotServing as i32)
        );
        assert!(asked.elapsed() >= FIRST_ANSWER_WAIT);
        // Once the check timed out, its evaluation's answer is there (no probe waits for it).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = tokio::time::timeout(Duration::from_millis(10), status(&health, "")).await;
        assert_eq!(
            again.expect("answered at once"),
            Ok(ServingStatus::NotServing as i32)
        );
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
