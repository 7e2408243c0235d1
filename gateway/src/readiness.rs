//! The Gateway's readiness: it can serve while a node of every role it routes to answers. One
//! check per role (`aggregate`, `projection`, `runner`), each a gRPC health check (`""`, the
//! node as a whole: a draining runner is `NOT_SERVING`) within [`NODE_CHECK_DEADLINE`]; the
//! runner check passes when any runner serves. With registry placement, a check passes while
//! the registry holds a live node of the role. With `gateway.jwks_url`, the check
//! `identity_provider` passes once the provider's keys were fetched.

use std::time::Duration;

use cloudlysis_runtime::service::Readiness;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Gateway;

/// Deadline of one node's health check (below the readiness check's own 2 s).
pub const NODE_CHECK_DEADLINE: Duration = Duration::from_millis(1500);

/// Whether the node at `address` serves, or why not.
async fn serving(
    address: &str,
    channel: cloudlysis_runtime::local::NodeChannel,
) -> Result<(), String> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(NODE_CHECK_DEADLINE);
    let mut client = HealthClient::new(channel);
    match tokio::time::timeout(NODE_CHECK_DEADLINE, client.check(req)).await {
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
        Ok(Ok(r)) => Err(format!(
            "{address} is {:?}",
            ServingStatus::try_from(r.get_ref().status).unwrap_or(ServingStatus::Unknown)
        )),
        Ok(Err(s)) => Err(format!("{address}: {:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!(
            "{address}: no answer within {NODE_CHECK_DEADLINE:?}"
        )),
    }
}

impl Gateway {
    /// Readiness checks of this Gateway (see the module docs), for its `/ready`.
    pub fn readiness(&self) -> Readiness {
        let readiness = Readiness::new();
        self.edge_checks(&readiness);
        if self.placement().is_some() {
            return readiness;
        }
        let s = &self.inner.settings;
        let aggregate = vec![(s.aggregate_addr.clone(), self.inner.aggregate.clone())];
        let projection = vec![(s.projection_addr.clone(), self.inner.projection.clone())];
        register(&readiness, "aggregate", aggregate);
        register(&readiness, "projection", projection);
        register(&readiness, "runner", self.inner.runners.clone());
        readiness
    }

    /// The checks of [`Gateway::readiness`] that do not call its static node addresses, added to
    /// `readiness`: `identity_provider` (with `gateway.jwks_url`) and, with registry placement, a
    /// live node of each role in its view of the registry. For a process that checks the nodes
    /// it hosts itself (`cloudlysis all`, `cloudlysis dev`).
    pub fn edge_checks(&self, readiness: &Readiness) {
        if self.inner.settings.oidc.jwks_url.is_some() {
            // Provider tokens cannot be checked before the first fetch of gateway.jwks_url.
            let auth = self.inner.auth.clone();
            readiness.register("identity_provider", move || {
                let loaded = auth.keys_loaded();
                async move { loaded }
            });
        }
        if let Some(p) = self.placement() {
            // Registry placement: a live (heartbeating, not draining) node of each role.
            for role in ["aggregate", "projection", "runner"] {
                let p = p.clone();
                readiness.register(role, move || {
                    let live = p.live(role).len();
                    async move {
                        if live > 0 {
                            Ok(())
                        } else {
                            Err(format!("no live {role} node in the registry"))
                        }
                    }
                });
            }
        }
    }
}

/// Registers the check `name`: passes when any of `targets` serves.
fn register(
    readiness: &Readiness,
    name: &'static str,
    targets: Vec<(String, cloudlysis_runtime::local::NodeChannel)>,
) {
    readiness.register(name, move || {
        let targets = targets.clone();
        async move {
            let answers =
                futures::future::join_all(targets.iter().map(|(a, c)| serving(a, c.clone()))).await;
            if answers.iter().any(Result::is_ok) {
                Ok(())
            } else {
                Err(answers
                    .into_iter()
                    .filter_map(Result::err)
                    .collect::<Vec<_>>()
                    .join("; "))
            }
        }
    });
}
