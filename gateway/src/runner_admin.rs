//! Runner node administration over the Gateway, right `runner:admin`:
//!
//! | route | does |
//! |---|---|
//! | `GET /admin/runner/nodes` | every runner node the Gateway routes to: id, address, status |
//! | `GET /admin/runner/nodes/{node}` | one node's status |
//! | `POST /admin/runner/nodes/{node}/{verb}` | `drain` (`?wait=true&grace_ms=`), `undrain`, `reload` on one node |
//! | `POST /admin/runner/{verb}` | the same verb on every node |
//!
//! Nodes are named by their node id (`NodeAdmin/Describe`); an unknown one is 404. Every call
//! has a deadline; a node that does not answer is reported as such, never waited for.

use std::time::{Duration, Instant};

use crate::extract::{Path, Query};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudlysis_proto::node::DescribeRequest;
use cloudlysis_proto::node::node_admin_client::NodeAdminClient;
use cloudlysis_proto::runner::runner_admin_client::RunnerAdminClient;
use cloudlysis_proto::runner::{
    DrainRequest, DrainResponse, ReloadRequest, StatusRequest, StatusResponse, UndrainRequest,
};
use cloudlysis_runtime::context::{headers as h, normalize_correlation_id};
use serde::Deserialize;

use crate::Gateway;
use crate::auth::allows;
use crate::commands::{authenticate, header_str, node_status_problem};
use crate::problem::Problem;
use crate::workflows::finish;

/// Deadline of one admin call to a node (a drain with `wait` gets its grace on top).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated operator with `runner:admin`: its name and node credential.
struct Admin {
    subject: String,
    credential: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

fn admit(gw: &Gateway, headers: &HeaderMap) -> Result<Admin, Problem> {
    let (claims, _) = authenticate(gw, headers)?;
    if !allows(&claims.rights, "runner", "admin") {
        return Err(Problem::forbidden("missing right `runner:admin`"));
    }
    Ok(Admin {
        credential: gw.credential(&claims, "runner:admin")?,
        subject: claims.sub.clone(),
    })
}

/// Each runner's node id (or why it is unknown), in address order.
/// A runner node: its address and channel.
type Runner = (String, cloudlysis_runtime::local::NodeChannel);

async fn nodes(gw: &Gateway) -> Vec<(Runner, Result<String, String>)> {
    // Mapping addresses to node ids is the Gateway's own business (the operator's right is
    // `runner:admin`, not `admin:read`).
    let credential = gw.service_credential(&["admin:read".into()]).ok();
    let asks = gw.runner_nodes().into_iter().map(|runner| {
        let channel = runner.1.clone();
        let credential = credential.clone();
        async move {
            let mut client = NodeAdminClient::new(channel);
            let mut req = tonic::Request::new(DescribeRequest {});
            if let Some(c) = credential {
                req.metadata_mut().insert(h::NODE_CREDENTIAL, c);
            }
            req.set_timeout(ADMIN_TIMEOUT);
            let id = match tokio::time::timeout(ADMIN_TIMEOUT, client.describe(req)).await {
                Ok(Ok(r)) => Ok(r.into_inner().node_id),
                Ok(Err(s)) => Err(s.message().to_string()),
                Err(_) => Err("no answer within the deadline".into()),
            };
            (runner, id)
        }
    });
    futures::future::join_all(asks).await
}

async fn find(gw: &Gateway, node: &str) -> Result<Runner, Problem> {
    nodes(gw)
        .await
        .into_iter()
        .find_map(|(runner, id)| (id.as_deref() == Ok(node)).then_some(runner))
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no runner node `{node}` answers this Gateway"),
            )
        })
}

fn status_json(address: &str, s: &StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "node_id": s.node_id,
        "address": address,
        "version": s.version,
        "uptime_seconds": s.uptime_seconds,
        "draining": s.draining,
        "drain_state": s.drain_state,
        "in_flight": s.in_flight,
        "outbox_depth": s.outbox_depth,
        "enabled_workflows": s.enabled_workflows,
        "effect_types": s.effect_types,
        "effects": s.effects.iter().map(|e| serde_json::json!({
            "effect_type": e.effect_type,
            "in_flight": e.in_flight,
            "concurrency": e.concurrency,
            "max_attempts": e.max_attempts,
        })).collect::<Vec<_>>(),
        "consumers": s.consumers.iter().map(|c| serde_json::json!({
            "stream": c.stream,
            "durable": c.durable,
            "pending": c.pending,
            "ack_pending": c.ack_pending,
            "redelivered": c.redelivered,
            "in_flight": c.in_flight,
            "fetching": c.fetching,
        })).collect::<Vec<_>>(),
    })
}

fn drain_json(node: &str, d: &DrainResponse) -> serde_json::Value {
    serde_json::json!({
        "node_id": node,
        "state": d.state,
        "drained": d.drained,
        "in_flight": d.in_flight,
        "pending_outbox": d.pending_outbox,
        "detail": d.detail,
    })
}

async fn status_of(runner: &Runner, admin: &Admin) -> Result<serde_json::Value, Problem> {
    let (address, channel) = runner;
    let mut client = RunnerAdminClient::new(channel.clone());
    let mut req = tonic::Request::new(StatusRequest {});
    req.metadata_mut()
        .insert(h::NODE_CREDENTIAL, admin.credential.clone());
    req.set_timeout(ADMIN_TIMEOUT);
    match tokio::time::timeout(ADMIN_TIMEOUT, client.status(req)).await {
        Ok(Ok(r)) => Ok(status_json(address, &r.into_inner())),
        Ok(Err(s)) => Err(node_status_problem(&s, "runner")),
        Err(_) => Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the runner node did not answer in time",
        )),
    }
}

/// Drain parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct VerbParams {
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    grace_ms: Option<u64>,
}

impl VerbParams {
    /// Refuses a `grace_ms` outside what a runner takes, before any node is asked.
    fn check(&self) -> Result<(), Problem> {
        use cloudlysis_runtime::workflow::{DRAIN_GRACE_MAX, DRAIN_GRACE_MIN};
        let (min, max) = (DRAIN_GRACE_MIN.as_millis(), DRAIN_GRACE_MAX.as_millis());
        match self.grace_ms {
            Some(ms) if !(min..=max).contains(&u128::from(ms)) => Err(Problem::bad_request(
                format!("grace_ms {ms}: must be {min} – {max} milliseconds"),
            )),
            _ => Ok(()),
        }
    }
}

async fn verb_on(
    runner: &Runner,
    node: &str,
    verb: &str,
    actor: &Admin,
    params: &VerbParams,
) -> Result<serde_json::Value, Problem> {
    let (_, channel) = runner;
    let mut client = RunnerAdminClient::new(channel.clone());
    let timeout = ADMIN_TIMEOUT
        + if params.wait {
            Duration::from_millis(params.grace_ms.unwrap_or(30_000)) + Duration::from_secs(10)
        } else {
            Duration::ZERO
        };
    fn with<T>(msg: T, actor: &Admin, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert(h::NODE_CREDENTIAL, actor.credential.clone());
        if let Ok(v) = actor.subject.parse() {
            r.metadata_mut().insert(h::ACTOR, v);
        }
        r.set_timeout(timeout);
        r
    }
    let call = async {
        match verb {
            "drain" => client
                .drain(with(
                    DrainRequest {
                        grace_ms: params.grace_ms,
                        wait: params.wait,
                    },
                    actor,
                    timeout,
                ))
                .await
                .map(|r| drain_json(node, &r.into_inner())),
            "undrain" => client
                .undrain(with(UndrainRequest {}, actor, timeout))
                .await
                .map(|r| drain_json(node, &r.into_inner())),
            _ => client
                .reload(with(ReloadRequest {}, actor, timeout))
                .await
                .map(|r| {
                    let r = r.into_inner();
                    serde_json::json!({
                        "node_id": node,
                        "changes": r.changes,
                        "enabled_workflows": r.enabled_workflows,
                        "effects": r.effects.iter().map(|e| serde_json::json!({
                            "effect_type": e.effect_type,
                            "concurrency": e.concurrency,
                            "max_attempts": e.max_attempts,
                        })).collect::<Vec<_>>(),
                    })
                }),
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(s)) => Err(node_status_problem(&s, "runner")),
        Err(_) => Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the runner node did not answer in time",
        )),
    }
}

fn check_verb(verb: &str) -> Result<(), Problem> {
    match verb {
        "drain" | "undrain" | "reload" => Ok(()),
        other => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("`{other}` is not a runner verb: use drain, undrain or reload"),
        )),
    }
}

/// `GET /admin/runner/nodes`.
pub(crate) async fn list(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = async {
        let admin = admit(&gw, &headers)?;
        let mut out = Vec::new();
        for (runner, id) in nodes(&gw).await {
            let address = &runner.0;
            out.push(match id {
                Ok(_) => status_of(&runner, &admin)
                    .await
                    .unwrap_or_else(|p| serde_json::json!({"address": address, "error": p.detail})),
                Err(e) => serde_json::json!({"address": address, "error": e}),
            });
        }
        Ok((
            StatusCode::OK,
            axum::Json(serde_json::json!({ "nodes": out })),
        )
            .into_response())
    }
    .await;
    finish(result, "admin_runner", started, &correlation)
}

/// `GET /admin/runner/nodes/{node}`.
pub(crate) async fn status(
    State(gw): State<Gateway>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = async {
        let admin = admit(&gw, &headers)?;
        let runner = find(&gw, &node).await?;
        Ok((
            StatusCode::OK,
            axum::Json(status_of(&runner, &admin).await?),
        )
            .into_response())
    }
    .await;
    finish(result, "admin_runner", started, &correlation)
}

/// `POST /admin/runner/nodes/{node}/{verb}`.
pub(crate) async fn node_verb(
    State(gw): State<Gateway>,
    Path((node, verb)): Path<(String, String)>,
    Query(params): Query<VerbParams>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = async {
        let actor = admit(&gw, &headers)?;
        check_verb(&verb)?;
        params.check()?;
        let runner = find(&gw, &node).await?;
        let out = verb_on(&runner, &node, &verb, &actor, &params).await?;
        Ok((StatusCode::OK, axum::Json(out)).into_response())
    }
    .await;
    finish(result, "admin_runner", started, &correlation)
}

/// `POST /admin/runner/{verb}`: on every node.
pub(crate) async fn all_verb(
    State(gw): State<Gateway>,
    Path(verb): Path<String>,
    Query(params): Query<VerbParams>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = async {
        let actor = admit(&gw, &headers)?;
        check_verb(&verb)?;
        params.check()?;
        let mut out = Vec::new();
        for (runner, id) in nodes(&gw).await {
            let address = &runner.0;
            out.push(match id {
                Ok(id) => verb_on(&runner, &id, &verb, &actor, &params)
                    .await
                    .unwrap_or_else(|p| serde_json::json!({"node_id": id, "error": p.detail})),
                Err(e) => serde_json::json!({"address": address, "error": e}),
            });
        }
        Ok((
            StatusCode::OK,
            axum::Json(serde_json::json!({ "nodes": out })),
        )
            .into_response())
    }
    .await;
    finish(result, "admin_runner", started, &correlation)
}
