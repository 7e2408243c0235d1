//! Workflow routes, authorized per workflow, tenant from the token, routed to the runner nodes
//! over gRPC with a deadline:
//!
//! | route | right | does |
//! |---|---|---|
//! | `POST /v1/workflows/{name}/{id}` | `workflows:<name>` | start an instance (201 + `Location`) |
//! | `GET /v1/workflows/{name}/{id}` | `workflows:<name>` | read (inspect) it |
//! | `GET /v1/workflows/{name}?status=&idle_for_ms=&cursor=&limit=` | `workflows:<name>` | list the tenant's instances, by id, paged |
//! | `POST /v1/workflows/{name}/{id}/{verb}` (`pause`, `resume`, `cancel`, `retry-now`) | `workflows:<name>:operate` | an operator verb, body `{"reason": "…"}` optional; audited |
//!
//! With several runner addresses (`gateway.runner_addr` is a comma-separated list), a call goes
//! to the runner the instance id hashes to and moves on to the next when a runner refuses at its
//! door (draining, the workflow disabled there, unreachable, closing its connection as it exits): nothing happened on it, so the next
//! one may take the call. A start is never retried after a runner could have acted: a second
//! start of the same id is refused (409), so a client that lost the answer reads the instance.
//!
//! | outcome | status |
//! |---|---|
//! | started | 201 + `Location`, the instance |
//! | read, listed, operated | 200 |
//! | bad name, id, verb or query, a body that is not JSON or does not fit the start input | 400 |
//! | no or bad token | 401 |
//! | missing right, spoofed `x-tenant-id` | 403 |
//! | unknown workflow, no such instance (for this tenant) | 404 |
//! | the instance exists already | 409 |
//! | the workflow refuses the start, a verb on an instance that ended | 422 |
//! | instance busy, instance budget full | 429 + `Retry-After` |
//! | every runner unavailable or draining | 503 + `Retry-After` |
//!
//! Instance: `{"workflow", "instance", "status", "state", "step", "paused", "cancel_requested",
//! "pending": [{"command_id", "effect_type", "label", "issued_at_ms", "attempts",
//! "ledger_status", "last_error"}], "timers": [{"name", "fire_at_ms"}], "applied_events":
//! [{"stream_sequence", "index"}], "failure", "created_at_ms", "updated_at_ms"}`.

use std::time::Instant;

use crate::extract::{Path, Query};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudlysis_proto::workflows::workflow_service_client::WorkflowServiceClient;
use cloudlysis_proto::workflows::{
    GetRequest, Instance, ListRequest, OperateRequest, StartRequest,
};
use cloudlysis_runtime::context::{
    RequestContext, headers as h, incoming_trace, normalize_correlation_id,
};
use cloudlysis_runtime::subject::validate_token;
use serde::Deserialize;

use crate::Gateway;
use crate::auth::{Admitted, Verified, allows};
use crate::commands::{authenticate_with, header_str, node_status_problem};
use crate::problem::Problem;

/// The JSON form of an instance.
fn instance_json(i: &Instance) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_slice(&i.state_json).unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "workflow": i.workflow,
        "instance": i.instance,
        "status": i.status,
        "state": state,
        "step": i.step,
        "paused": i.paused,
        "cancel_requested": i.cancel_requested,
        "pending": i.pending.iter().map(|p| serde_json::json!({
            "command_id": p.command_id,
            "effect_type": p.effect_type,
            "label": p.label,
            "issued_at_ms": p.issued_at_ms,
            "attempts": p.attempts,
            "ledger_status": p.ledger_status,
            "last_error": p.last_error,
        })).collect::<Vec<_>>(),
        "timers": i.timers.iter().map(|t| serde_json::json!({
            "name": t.name,
            "fire_at_ms": t.fire_at_ms,
        })).collect::<Vec<_>>(),
        "applied_events": i.applied_events.iter().map(|e| serde_json::json!({
            "stream_sequence": e.stream_sequence,
            "index": e.index,
        })).collect::<Vec<_>>(),
        "failure": i.failure,
        "created_at_ms": i.created_at_ms,
        "updated_at_ms": i.updated_at_ms,
    })
}

/// Authenticates and checks the right `workflows:<right>`; the request's context, with the
/// caller named for audit records.
fn admit(
    gw: &Gateway,
    (headers, verified): (&HeaderMap, Option<&Verified>),
    name: &str,
    right: &str,
    correlation: &cloudlysis_runtime::CorrelationId,
) -> Result<(crate::NodeCall, String), Problem> {
    let (claims, tenant) = authenticate_with(gw, headers, verified)?;
    validate_token(name).map_err(|e| Problem::bad_request(format!("workflow: {e}")))?;
    if !allows(&claims.rights, "workflows", right) {
        return Err(Problem::forbidden(format!(
            "missing right `workflows:{right}`"
        )));
    }
    let (traceparent, tracestate) = incoming_trace(headers);
    Ok((
        crate::NodeCall {
            ctx: RequestContext {
                tenant,
                correlation_id: correlation.clone(),
                traceparent,
                tracestate,
                request_id: None,
                idempotency_key: None,
            },
            credential: gw.credential(&claims, &format!("workflows:{right}"))?,
        },
        claims.sub.clone(),
    ))
}

/// True when a runner refused at its door: nothing happened there, the next runner may try.
/// That includes a call it never took (no connection; the connection closed before the call was
/// written, or the runner refused it at the HTTP/2 layer as it closed on exit —
/// `runtime::outcome::not_taken`) and one it refused as `not-committed` (its NATS connection
/// down).
fn refused_at_the_door(status: &tonic::Status) -> bool {
    use cloudlysis_runtime::outcome::ErrorKind;
    let m = status.message();
    cloudlysis_runtime::outcome::never_sent(status)
        || status.code() == tonic::Code::Unavailable
            && (ErrorKind::of(status) == Some(ErrorKind::NotCommitted)
                || m.contains("draining")
                || m.contains("is disabled on this runner"))
}

/// Runs `call` on the runners, starting with the one `key` hashes to, moving on while they
/// refuse at their door.
async fn on_runners<T, F, Fut>(gw: &Gateway, key: &str, call: F) -> Result<T, Problem>
where
    F: Fn(WorkflowServiceClient<cloudlysis_runtime::local::NodeChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    use std::hash::{Hash, Hasher};
    let runners = gw.runner_channels(key);
    // Registry placement orders them already; static addresses start where the key hashes.
    let first = if gw.placement().is_some() || runners.is_empty() {
        0
    } else {
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % runners.len() as u64) as usize
    };
    let timeout = gw.inner.settings.command_timeout;
    let mut last = None;
    for i in 0..runners.len() {
        let (_, channel) = &runners[(first + i) % runners.len()];
        match tokio::time::timeout(timeout, call(WorkflowServiceClient::new(channel.clone()))).await
        {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the runner node did not answer in time; the call may have taken effect: \
                     read the instance before repeating it",
                ));
            }
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(status)) if refused_at_the_door(&status) => last = Some(status),
            Ok(Err(status)) => return Err(node_status_problem(&status, "runner")),
        }
    }
    Err(last.map_or_else(
        || {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "no runner node",
            )
            .retry_after(1)
        },
        |s| node_status_problem(&s, "runner"),
    ))
}

fn request<T>(
    ctx: &crate::NodeCall,
    actor: &str,
    timeout: std::time::Duration,
    msg: T,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    ctx.inject(r.metadata_mut());
    if let Ok(v) = actor.parse() {
        r.metadata_mut().insert(h::ACTOR, v);
    }
    r.set_timeout(timeout);
    r
}

/// `POST /v1/workflows/{name}/{id}`.
pub(crate) async fn start(
    State(gw): State<Gateway>,
    Path((name, id)): Path<(String, String)>,
    Admitted(verified): Admitted,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = async {
        let (ctx, actor) = admit(
            &gw,
            (&headers, verified.as_ref()),
            &name,
            &name,
            &correlation,
        )?;
        validate_token(&id).map_err(|e| Problem::bad_request(format!("instance id: {e}")))?;
        let bytes = crate::extract::read_body(body, gw.inner.settings.max_body_bytes).await?;
        let input: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Problem::bad_request(format!("body is not JSON: {e}")))?;
        let input_json = serde_json::to_vec(&input).unwrap_or_default();
        let timeout = gw.inner.settings.command_timeout;
        let instance = on_runners(&gw, &id, |mut client| {
            let req = request(
                &ctx,
                &actor,
                timeout,
                StartRequest {
                    workflow: name.clone(),
                    instance: id.clone(),
                    input_json: input_json.clone(),
                },
            );
            async move { client.start(req).await.map(|r| r.into_inner()) }
        })
        .await?;
        let mut resp = (StatusCode::CREATED, axum::Json(instance_json(&instance))).into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/workflows/{name}/{id}")) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Ok(resp)
    }
    .await;
    finish(result, "workflows_start", started, &correlation)
}

/// `GET /v1/workflows/{name}/{id}`.
pub(crate) async fn get(
    State(gw): State<Gateway>,
    Path((name, id)): Path<(String, String)>,
    Admitted(verified): Admitted,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = async {
        let (ctx, actor) = admit(
            &gw,
            (&headers, verified.as_ref()),
            &name,
            &name,
            &correlation,
        )?;
        validate_token(&id).map_err(|e| Problem::bad_request(format!("instance id: {e}")))?;
        let timeout = gw.inner.settings.command_timeout;
        let instance = on_runners(&gw, &id, |mut client| {
            let req = request(
                &ctx,
                &actor,
                timeout,
                GetRequest {
                    workflow: name.clone(),
                    instance: id.clone(),
                },
            );
            async move { client.get(req).await.map(|r| r.into_inner()) }
        })
        .await?;
        Ok((StatusCode::OK, axum::Json(instance_json(&instance))).into_response())
    }
    .await;
    finish(result, "workflows_get", started, &correlation)
}

/// List parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    #[serde(default)]
    status: String,
    #[serde(default)]
    idle_for_ms: u64,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: Option<u32>,
}

/// `GET /v1/workflows/{name}?status=&idle_for_ms=&cursor=&limit=`.
pub(crate) async fn list(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    Query(params): Query<ListParams>,
    Admitted(verified): Admitted,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = async {
        let (ctx, actor) = admit(
            &gw,
            (&headers, verified.as_ref()),
            &name,
            &name,
            &correlation,
        )?;
        if !params.cursor.is_empty() {
            validate_token(&params.cursor)
                .map_err(|e| Problem::bad_request(format!("cursor: {e}")))?;
        }
        let timeout = gw.inner.settings.command_timeout;
        let page = on_runners(&gw, &name, |mut client| {
            let req = request(
                &ctx,
                &actor,
                timeout,
                ListRequest {
                    workflow: name.clone(),
                    status: params.status.clone(),
                    idle_for_ms: params.idle_for_ms,
                    cursor: params.cursor.clone(),
                    page_size: params.limit.unwrap_or(0),
                },
            );
            async move { client.list(req).await.map(|r| r.into_inner()) }
        })
        .await?;
        let body = serde_json::json!({
            "instances": page.instances.iter().map(instance_json).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        });
        Ok((StatusCode::OK, axum::Json(body)).into_response())
    }
    .await;
    finish(result, "workflows_list", started, &correlation)
}

#[derive(Debug, Default, Deserialize)]
struct VerbBody {
    #[serde(default)]
    reason: String,
}

/// `POST /v1/workflows/{name}/{id}/{verb}`.
pub(crate) async fn operate(
    State(gw): State<Gateway>,
    Path((name, id, verb)): Path<(String, String, String)>,
    Admitted(verified): Admitted,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = async {
        let (ctx, actor) = admit(
            &gw,
            (&headers, verified.as_ref()),
            &name,
            &format!("{name}:operate"),
            &correlation,
        )?;
        validate_token(&id).map_err(|e| Problem::bad_request(format!("instance id: {e}")))?;
        let verb = match verb.as_str() {
            "pause" | "resume" | "cancel" => verb.clone(),
            "retry-now" | "retry_now" => "retry_now".to_string(),
            other => {
                return Err(Problem::bad_request(format!(
                    "`{other}` is not a verb: use pause, resume, cancel or retry-now"
                )));
            }
        };
        let bytes = crate::extract::read_body(body, gw.inner.settings.max_body_bytes).await?;
        let reason = if bytes.is_empty() {
            VerbBody::default()
        } else {
            serde_json::from_slice::<VerbBody>(&bytes)
                .map_err(|e| Problem::bad_request(format!("body is not {{\"reason\": …}}: {e}")))?
        }
        .reason;
        let timeout = gw.inner.settings.command_timeout;
        let instance = on_runners(&gw, &id, |mut client| {
            let req = request(
                &ctx,
                &actor,
                timeout,
                OperateRequest {
                    workflow: name.clone(),
                    instance: id.clone(),
                    verb: verb.clone(),
                    reason: reason.clone(),
                },
            );
            async move { client.operate(req).await.map(|r| r.into_inner()) }
        })
        .await?;
        Ok((StatusCode::OK, axum::Json(instance_json(&instance))).into_response())
    }
    .await;
    finish(result, "workflows_operate", started, &correlation)
}

pub(crate) fn finish(
    result: Result<Response, Problem>,
    route: &'static str,
    started: Instant,
    correlation: &cloudlysis_runtime::CorrelationId,
) -> Response {
    let mut resp = match result {
        Ok(r) => r,
        Err(p) => p.with_correlation(correlation.as_str()).into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(correlation.as_str()) {
        resp.headers_mut().insert(h::CORRELATION_ID, v);
    }
    crate::request_metrics::record(route, resp.status(), started.elapsed());
    resp
}
