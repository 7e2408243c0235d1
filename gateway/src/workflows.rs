//! `POST /v1/workflows/{name}/{id}` (start an instance) and `GET /v1/workflows/{name}/{id}`
//! (read it): authorized by `workflows:<name>` (or `workflows:*`), tenant from the token,
//! routed to the runner node over gRPC with a deadline. A start is not retried by the Gateway:
//! a second start of the same id is refused (409), so a client that lost the answer reads the
//! instance instead.
//!
//! | outcome | status |
//! |---|---|
//! | started | 201 + `Location`, the instance |
//! | read | 200, the instance |
//! | bad name or id, a body that is not JSON or does not fit the workflow's start input | 400 |
//! | no or bad token | 401 |
//! | missing right, spoofed `x-tenant-id` | 403 |
//! | unknown workflow, no such instance (for this tenant) | 404 |
//! | the instance exists already | 409 |
//! | the workflow refuses the start | 422 |
//! | instance busy, instance budget full | 429 + `Retry-After` |
//! | runner unavailable or draining | 503 + `Retry-After` |
//!
//! Instance: `{"workflow", "instance", "status", "state", "step", "pending": [{"command_id",
//! "effect_type", "label", "issued_at_ms"}], "timers": [{"name", "fire_at_ms"}], "failure",
//! "created_at_ms", "updated_at_ms"}`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudlysis_proto::workflows::workflow_service_client::WorkflowServiceClient;
use cloudlysis_proto::workflows::{GetRequest, Instance, StartRequest};
use cloudlysis_runtime::context::{
    RequestContext, headers as h, incoming_trace, normalize_correlation_id,
};
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::subject::validate_token;

use crate::Gateway;
use crate::auth::allows;
use crate::commands::{BODY_READ_TIMEOUT, authenticate, header_str, node_status_problem};
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
        "pending": i.pending.iter().map(|p| serde_json::json!({
            "command_id": p.command_id,
            "effect_type": p.effect_type,
            "label": p.label,
            "issued_at_ms": p.issued_at_ms,
        })).collect::<Vec<_>>(),
        "timers": i.timers.iter().map(|t| serde_json::json!({
            "name": t.name,
            "fire_at_ms": t.fire_at_ms,
        })).collect::<Vec<_>>(),
        "failure": i.failure,
        "created_at_ms": i.created_at_ms,
        "updated_at_ms": i.updated_at_ms,
    })
}

/// Authenticates, checks the path and the right `workflows:<name>`; the request's context.
#[allow(clippy::too_many_arguments)]
fn admit(
    gw: &Gateway,
    headers: &HeaderMap,
    name: &str,
    id: &str,
    correlation: &cloudlysis_runtime::CorrelationId,
    traceparent: cloudlysis_runtime::TraceParent,
    tracestate: Option<cloudlysis_runtime::trace::TraceState>,
) -> Result<RequestContext, Problem> {
    let (claims, tenant) = authenticate(gw, headers)?;
    validate_token(name).map_err(|e| Problem::bad_request(format!("workflow: {e}")))?;
    validate_token(id).map_err(|e| Problem::bad_request(format!("instance id: {e}")))?;
    if !allows(&claims.rights, "workflows", name) {
        return Err(Problem::forbidden(format!(
            "missing right `workflows:{name}`"
        )));
    }
    Ok(RequestContext {
        tenant,
        correlation_id: correlation.clone(),
        traceparent,
        tracestate,
        request_id: None,
        idempotency_key: None,
    })
}

/// `POST /v1/workflows/{name}/{id}`.
pub(crate) async fn start(
    State(gw): State<Gateway>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let (traceparent, tracestate) = incoming_trace(&headers);
    let result = async {
        let ctx = admit(
            &gw,
            &headers,
            &name,
            &id,
            &correlation,
            traceparent,
            tracestate,
        )?;
        let limit = gw.inner.settings.max_body_bytes;
        let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit))
            .await
        {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    format!("request body not received within {BODY_READ_TIMEOUT:?}"),
                ));
            }
            Ok(Err(_)) => {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    format!("request body exceeds {limit} bytes or could not be read"),
                ));
            }
            Ok(Ok(b)) => b,
        };
        let input: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Problem::bad_request(format!("body is not JSON: {e}")))?;
        let mut request = tonic::Request::new(StartRequest {
            workflow: name.clone(),
            instance: id.clone(),
            input_json: serde_json::to_vec(&input).unwrap_or_default(),
        });
        ctx.inject(request.metadata_mut());
        request.set_timeout(gw.inner.settings.command_timeout);
        let mut client = WorkflowServiceClient::new(gw.inner.runner.clone());
        let call = tokio::time::timeout(gw.inner.settings.command_timeout, client.start(request));
        let instance = match call.await {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "the runner node did not answer in time; the instance may have started: \
                         read GET /v1/workflows/{name}/{id}"
                    ),
                ));
            }
            Ok(Err(status)) => return Err(node_status_problem(&status, "runner")),
            Ok(Ok(r)) => r.into_inner(),
        };
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
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let (traceparent, tracestate) = incoming_trace(&headers);
    let result = async {
        let ctx = admit(
            &gw,
            &headers,
            &name,
            &id,
            &correlation,
            traceparent,
            tracestate,
        )?;
        let mut request = tonic::Request::new(GetRequest {
            workflow: name.clone(),
            instance: id.clone(),
        });
        ctx.inject(request.metadata_mut());
        request.set_timeout(gw.inner.settings.command_timeout);
        let mut client = WorkflowServiceClient::new(gw.inner.runner.clone());
        let call = tokio::time::timeout(gw.inner.settings.command_timeout, client.get(request));
        let instance = match call.await {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the runner node did not answer in time",
                )
                .retry_after(1));
            }
            Ok(Err(status)) => return Err(node_status_problem(&status, "runner")),
            Ok(Ok(r)) => r.into_inner(),
        };
        Ok((StatusCode::OK, axum::Json(instance_json(&instance))).into_response())
    }
    .await;
    finish(result, "workflows_get", started, &correlation)
}

fn finish(
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
    let status = resp.status().as_u16().to_string();
    metrics::counter!(names::GATEWAY_REQUESTS, "route" => route, "status" => status).increment(1);
    metrics::histogram!(names::GATEWAY_REQUEST_DURATION, "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}
