//! `GET /v1/query/{view}/{key}` and `GET /v1/query/{view}?prefix=&limit=&cursor=`: read-only,
//! authorized by `queries:<view>` (or `queries:*`), tenant from the token, routed to the
//! projection node over gRPC within the request's deadline (see [`crate::upstream`]: 5 s for a
//! `Get`, 10 s for a `List`, less on the client's `x-request-timeout-ms`), retried on
//! `UNAVAILABLE` under the `read` retry profile.
//! `x-min-sequence: <n>` waits until the view has applied stream sequence `n` (read-your-writes
//! after a command, whose response carries `stream_sequence`).
//!
//! Responses: `{"key", "document", "checkpoint"}` and `{"documents": [{"key", "document"}],
//! "next_cursor", "checkpoint"}`; the `x-view-checkpoint` header carries the checkpoint too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::extract::{Path, Query};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudlysis_proto::projection::query_service_client::QueryServiceClient;
use cloudlysis_proto::projection::query_service_server::QueryService;
use cloudlysis_proto::projection::{GET_PATH, GetRequest, LIST_PATH, ListRequest};
use cloudlysis_runtime::context::{
    RequestContext, headers as h, incoming_trace, normalize_correlation_id,
};
use cloudlysis_runtime::subject::validate_token;
use serde::Deserialize;

use crate::Gateway;
use crate::auth::{Admitted, Verified, allows};
use crate::commands::{authenticate_with, header_str, node_status_problem};
use crate::problem::Problem;
use crate::upstream::deadline::Deadline;
use crate::upstream::retry;

/// Default deadline of a `Get` (a client may ask for less with `x-request-timeout-ms`).
pub const GET_DEADLINE: Duration = Duration::from_secs(5);
/// Default deadline of a `List`.
pub const LIST_DEADLINE: Duration = Duration::from_secs(10);

/// How one attempt of a query failed: a problem of the request itself, or the node's status
/// (which the `read` retry profile judges).
pub(crate) enum CallError {
    Problem(Problem),
    Status(tonic::Status),
}

impl From<Problem> for CallError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl From<tonic::Status> for CallError {
    fn from(s: tonic::Status) -> Self {
        Self::Status(s)
    }
}

/// List parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: String,
}

pub(crate) async fn get(
    State(gw): State<Gateway>,
    Path((view, key)): Path<(String, String)>,
    Admitted(verified): Admitted,
    headers: HeaderMap,
) -> Response {
    respond(&gw, (&headers, verified.as_ref()), &view, "query_get", |ctx, min, channel, timeout| {
        let (view, key) = (view.clone(), key.clone());
        async move {
            token("view", &view)?;
            token("key", &key)?;
            let mut req = tonic::Request::new(GetRequest {
                view,
                key: key.clone(),
                min_sequence: min,
            });
            ctx.inject(req.metadata_mut());
            req.set_timeout(timeout);
            let r = channel
                .unary(
                    GET_PATH,
                    req,
                    |node: Arc<dyn QueryService>, r| async move { node.get(r).await },
                    |c, r| async move { QueryServiceClient::new(c).get(r).await },
                )
                .await?
                .into_inner();
            let document: serde_json::Value =
                serde_json::from_slice(&r.document_json).unwrap_or(serde_json::Value::Null);
            Ok((
                r.checkpoint,
                serde_json::json!({ "key": key, "document": document, "checkpoint": r.checkpoint }),
            ))
        }
    })
    .await
}

pub(crate) async fn list(
    State(gw): State<Gateway>,
    Path(view): Path<String>,
    Query(params): Query<ListParams>,
    Admitted(verified): Admitted,
    headers: HeaderMap,
) -> Response {
    respond(&gw, (&headers, verified.as_ref()), &view, "query_list", |ctx, min, channel, timeout| {
        let view = view.clone();
        let (prefix, cursor, limit) = (params.prefix.clone(), params.cursor.clone(), params.limit);
        async move {
            token("view", &view)?;
            if !prefix.is_empty() {
                token("prefix", &prefix)?;
            }
            if !cursor.is_empty() {
                token("cursor", &cursor)?;
            }
            let mut req = tonic::Request::new(ListRequest {
                view,
                prefix,
                page_size: limit.unwrap_or(0),
                cursor,
                min_sequence: min,
            });
            ctx.inject(req.metadata_mut());
            req.set_timeout(timeout);
            let r = channel
                .unary(
                    LIST_PATH,
                    req,
                    |node: Arc<dyn QueryService>, r| async move { node.list(r).await },
                    |c, r| async move { QueryServiceClient::new(c).list(r).await },
                )
                .await?
                .into_inner();
            let documents: Vec<serde_json::Value> = r
                .documents
                .into_iter()
                .map(|d| {
                    let doc: serde_json::Value =
                        serde_json::from_slice(&d.document_json).unwrap_or(serde_json::Value::Null);
                    serde_json::json!({ "key": d.key, "document": doc })
                })
                .collect();
            Ok((
                r.checkpoint,
                serde_json::json!({
                    "documents": documents,
                    "next_cursor": if r.next_cursor.is_empty() { None } else { Some(r.next_cursor) },
                    "checkpoint": r.checkpoint,
                }),
            ))
        }
    })
    .await
}

fn token(what: &str, v: &str) -> Result<(), Problem> {
    validate_token(v).map_err(|e| Problem::bad_request(format!("{what}: {e}")))
}

/// Authenticates, authorizes `queries:<view>`, runs `call` with bounded retries on
/// `UNAVAILABLE`, and shapes the response.
async fn respond<F, Fut>(
    gw: &Gateway,
    (headers, verified): (&HeaderMap, Option<&Verified>),
    view: &str,
    route: &'static str,
    call: F,
) -> Response
where
    F: Fn(crate::NodeCall, Option<u64>, cloudlysis_runtime::local::NodeChannel, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<(u64, serde_json::Value), CallError>>,
{
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(headers, h::CORRELATION_ID));
    let (traceparent, tracestate) = incoming_trace(headers);
    let result = async {
        let (claims, tenant) = authenticate_with(gw, headers, verified)?;
        token("view", view)?;
        // Deny by default: reading a view needs `queries:<view>` or `queries:*`.
        if !allows(&claims.rights, "queries", view) {
            return Err(Problem::forbidden(format!(
                "missing right `queries:{view}`"
            )));
        }
        // Given twice, which one the client meant is not known (the lower would break a
        // read-your-writes read silently).
        if headers.get_all("x-min-sequence").iter().nth(1).is_some() {
            return Err(Problem::bad_request(
                "x-min-sequence is given more than once: send one",
            ));
        }
        let min = match headers.get("x-min-sequence") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        Problem::bad_request("x-min-sequence must be a stream sequence number")
                    })?,
            ),
        };
        let ctx = RequestContext {
            tenant,
            correlation_id: correlation.clone(),
            traceparent,
            tracestate: tracestate.clone(),
            request_id: None,
            idempotency_key: None,
        };
        let credential = gw.credential(&claims, &format!("queries:{view}"))?;
        let default = if route == "query_list" {
            LIST_DEADLINE
        } else {
            GET_DEADLINE
        };
        let deadline = Deadline::from_headers(headers, default)?;
        Ok::<_, Problem>((crate::NodeCall { ctx, credential }, min, deadline))
    }
    .await;
    let (ctx, min, deadline) = match result {
        Ok(v) => v,
        Err(p) => {
            return finish(
                p.with_correlation(correlation.as_str()).into_response(),
                route,
                started,
                &correlation,
            );
        }
    };
    let throttle = &gw.inner.throttle;
    let mut attempt = 0;
    let p = loop {
        attempt += 1;
        let remaining = deadline.remaining();
        // Chosen again on each attempt: a retry may go to another projection node.
        let channel = match gw.projection_channel(view) {
            Ok(c) => c,
            Err(p) => break p,
        };
        let answer =
            tokio::time::timeout(remaining, call(ctx.clone(), min, channel, remaining)).await;
        match answer {
            Ok(Ok((checkpoint, body))) => {
                throttle.on_success();
                let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
                if let Ok(v) = HeaderValue::from_str(&checkpoint.to_string()) {
                    resp.headers_mut().insert("x-view-checkpoint", v);
                }
                return finish(resp, route, started, &correlation);
            }
            Ok(Err(CallError::Problem(p))) => break p,
            Ok(Err(CallError::Status(status))) => {
                match retry::decide(
                    &retry::READ,
                    throttle,
                    &status,
                    attempt,
                    deadline.remaining(),
                ) {
                    retry::Next::RetryAfter(wait) => tokio::time::sleep(wait).await,
                    retry::Next::GiveUp => break node_status_problem(&status, "projection"),
                }
            }
            Err(_) => {
                break Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "the projection node did not answer within the request's deadline ({} ms)",
                        deadline.budget().as_millis()
                    ),
                );
            }
        }
    };
    // A read that waited for `x-min-sequence` and ran out of time found the view behind: it is
    // safe to repeat once the view has caught up, so the 504 says when. Other reads out of time
    // carry none (a list that ran out of time would only add load if repeated at once).
    let waited = headers.contains_key("x-min-sequence");
    let p = if waited && p.status == StatusCode::GATEWAY_TIMEOUT && p.retry_after.is_none() {
        p.retry_after(1)
    } else {
        p
    };
    finish(
        p.with_correlation(correlation.as_str()).into_response(),
        route,
        started,
        &correlation,
    )
}

fn finish(
    mut resp: Response,
    route: &'static str,
    started: Instant,
    correlation: &cloudlysis_runtime::CorrelationId,
) -> Response {
    if let Ok(v) = HeaderValue::from_str(correlation.as_str()) {
        resp.headers_mut().insert(h::CORRELATION_ID, v);
    }
    crate::request_metrics::record(route, resp.status(), started.elapsed());
    resp
}
