//! The operator routes the Control UI uses (`docs/control-api.md`): who the caller is, every
//! node and its supervision tree (through the probe fan-out), views and their rebuilds, poison
//! records and the audit trail. Reads need `admin:read`, changes `admin:operate`; a caller
//! without them never sees another tenant's ids.
//!
//! | route | right | node call |
//! |---|---|---|
//! | `GET /admin/whoami` | any valid token | — |
//! | `GET /admin/nodes`, `GET /admin/supervision` | `admin:read` | `NodeAdmin/Describe` on every node (probe fan-out, 1 s cache) |
//! | `GET /admin/views` | `admin:read` | `ProjectionAdmin/DescribeViews` |
//! | `POST /admin/views/{view}/rebuild`, `…/rebuild/cancel` | `admin:operate` | `ProjectionAdmin/RebuildView`, `CancelRebuild` |
//! | `GET /admin/poison?source=&limit=&cursor=`, `GET /admin/poison/{id}` | `admin:read` | `OpsAdmin/ListPoison`, `GetPoison` |
//! | `POST /admin/poison/{id}/redrive`, `DELETE /admin/poison/{id}` | `admin:operate` | `OpsAdmin/RedrivePoison`, `PurgePoison` |
//! | `GET /admin/audit?limit=&cursor=` | `admin:read` | `OpsAdmin/ListAudit` |

use std::time::{Duration, Instant};

use crate::extract::{Path, Query};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudlysis_proto::node::{ChildNode, DescribeResponse, SupervisorNode};
use cloudlysis_proto::ops::ops_admin_client::OpsAdminClient;
use cloudlysis_proto::ops::{
    GetPoisonRequest, ListAuditRequest, ListPoisonRequest, PoisonSummary, PoisonVerbRequest,
};
use cloudlysis_proto::projection_admin::projection_admin_client::ProjectionAdminClient;
use cloudlysis_proto::projection_admin::{
    CancelRebuildRequest, DescribeViewsRequest, RebuildViewRequest,
};
use cloudlysis_runtime::context::{headers as h, normalize_correlation_id};
use cloudlysis_runtime::{RequestContext, SubjectToken};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Gateway;
use crate::auth::allows;
use crate::commands::{authenticate, header_str, node_status_problem};
use crate::probe::{ProbeMsg, Probed};
use crate::problem::Problem;
use crate::workflows::finish;

/// Deadline of one admin call to a node.
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated operator: subject and tenant, and the request context for node calls.
struct Operator {
    subject: String,
    ctx: RequestContext,
    credential: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

/// Authenticates and checks `admin:<right>`.
fn admit(gw: &Gateway, headers: &HeaderMap, right: &str) -> Result<Operator, Problem> {
    let (claims, tenant) = authenticate(gw, headers)?;
    if !allows(&claims.rights, "admin", right) {
        return Err(Problem::forbidden(format!("missing right `admin:{right}`")));
    }
    let mut ctx = RequestContext::new(tenant);
    ctx.correlation_id = normalize_correlation_id(header_str(headers, h::CORRELATION_ID));
    Ok(Operator {
        credential: gw.credential(&claims, &format!("admin:{right}"))?,
        subject: claims.sub.clone(),
        ctx,
    })
}

/// A request to a node carrying the operator's context and name, with a deadline.
fn request<T>(op: &Operator, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    op.ctx.inject(r.metadata_mut());
    r.metadata_mut()
        .insert(h::NODE_CREDENTIAL, op.credential.clone());
    if let Ok(v) = op.subject.parse() {
        r.metadata_mut().insert(h::ACTOR, v);
    }
    r.set_timeout(ADMIN_CALL_TIMEOUT);
    r
}

/// Runs a route: admission, the work, the route metrics and the correlation header.
async fn route<F, Fut>(gw: &Gateway, headers: &HeaderMap, right: &str, work: F) -> Response
where
    F: FnOnce(Gateway, Operator) -> Fut,
    Fut: Future<Output = Result<Response, Problem>>,
{
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(headers, h::CORRELATION_ID));
    let result = match admit(gw, headers, right) {
        Ok(op) => work(gw.clone(), op).await,
        Err(p) => Err(p),
    };
    finish(result, "admin", started, &correlation)
}

async fn call<T>(
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    role: &str,
) -> Result<T, Problem> {
    match tokio::time::timeout(ADMIN_CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(node_status_problem(&s, role)),
        Err(_) => Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("the {role} node did not answer in time"),
        )),
    }
}

fn ok(body: Value) -> Result<Response, Problem> {
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// `GET /admin/whoami`.
pub(crate) async fn whoami(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let correlation = normalize_correlation_id(header_str(&headers, h::CORRELATION_ID));
    let result = authenticate(&gw, &headers).and_then(|(claims, _)| {
        ok(json!({
            "subject": claims.sub,
            "tenant": claims.tenant,
            "rights": claims.rights,
            "expires_at_ms": claims.exp.saturating_mul(1000),
        }))
    });
    finish(result, "admin", started, &correlation)
}

/// Every node's answer through the probe fan-out.
async fn probe(gw: &Gateway, op: &Operator) -> Result<Vec<Probed>, Problem> {
    let probe = gw.probe().await?;
    let Some(slot) = probe.try_reserve() else {
        metrics::counter!(cloudlysis_runtime::metrics::names::GATEWAY_PROBES, "result" => "rejected")
            .increment(1);
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many node probes are waiting; retry shortly",
        )
        .retry_after(1));
    };
    let (tx, rx) = ractor::concurrency::oneshot();
    // The probe is the Gateway's own call, shared by every operator through its cache: it acts
    // for no tenant, with the right to describe nodes only.
    let mut ctx = op.ctx.clone();
    ctx.tenant = cloudlysis_runtime::TenantId::new(cloudlysis_runtime::credential::SYSTEM_TENANT)
        .map_err(|e| {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })?;
    let call = crate::NodeCall {
        ctx,
        credential: gw.service_credential(&["admin:read".into()])?,
    };
    slot.send(ProbeMsg::Probe(call, tx.into())).map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the probe fan-out is not running",
        )
        .retry_after(1)
    })?;
    // Waiting requests are served in turn: a fan-out (bounded by its deadline) each at worst.
    let wait = crate::probe::PROBE_DEADLINE * 4;
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(answers)) => Ok(answers),
        _ => Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the node probes did not finish in time",
        )),
    }
}

fn node_json(p: &Probed) -> Value {
    match &p.answer {
        Ok(d) => json!({
            "role": p.role,
            "node_id": d.node_id,
            "address": p.address,
            "health": if d.serving { "serving" } else { "not_serving" },
            "version": d.version,
            "uptime_seconds": d.uptime_seconds,
            "drain_state": if d.drain_state.is_empty() { Value::Null } else { json!(d.drain_state) },
            "behaviours": d.behaviours,
            "held": d.held.iter().map(|h| json!({
                "kind": h.kind,
                "name": h.name,
                "messages": h.messages,
                "oldest_seconds": h.oldest_seconds,
            })).collect::<Vec<_>>(),
            "error": Value::Null,
        }),
        Err(e) => json!({
            "role": p.role,
            "node_id": Value::Null,
            "address": p.address,
            "health": "unreachable",
            "version": Value::Null,
            "uptime_seconds": Value::Null,
            "drain_state": Value::Null,
            "behaviours": [],
            "held": [],
            "error": e,
        }),
    }
}

/// `GET /admin/nodes`.
pub(crate) async fn nodes(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    route(&gw, &headers, "read", |gw, op| async move {
        let answers = probe(&gw, &op).await?;
        ok(json!({ "nodes": answers.iter().map(node_json).collect::<Vec<_>>() }))
    })
    .await
}

fn tree_json(s: &SupervisorNode) -> Value {
    let child = |c: &ChildNode| {
        let mut v = json!({
            "name": c.name,
            "kind": c.kind,
            "status": c.status,
            "restarts": c.restarts,
        });
        if let Some(f) = &c.last_failure {
            v["last_failure"] = json!(f);
        }
        if let Some(at) = &c.last_failure_at {
            v["last_failure_at"] = json!(at);
        }
        if let Some(m) = &c.mailbox {
            v["mailbox"] = json!({ "depth": m.depth, "capacity": m.capacity });
        }
        v
    };
    json!({
        "name": s.name,
        "strategy": s.strategy,
        "status": s.status,
        "restarts": s.restarts,
        "children": s.children.iter().map(child).collect::<Vec<_>>(),
        "supervisors": s.supervisors.iter().map(tree_json).collect::<Vec<_>>(),
    })
}

/// `GET /admin/supervision`.
pub(crate) async fn supervision(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    route(&gw, &headers, "read", |gw, op| async move {
        let answers = probe(&gw, &op).await?;
        let nodes: Vec<Value> = answers
            .iter()
            .map(|p| match &p.answer {
                Ok(DescribeResponse {
                    node_id,
                    supervision,
                    ..
                }) => json!({
                    "role": p.role,
                    "node_id": node_id,
                    "address": p.address,
                    "tree": supervision.as_ref().map(tree_json),
                    "error": Value::Null,
                }),
                Err(e) => json!({
                    "role": p.role,
                    "node_id": Value::Null,
                    "address": p.address,
                    "tree": Value::Null,
                    "error": e,
                }),
            })
            .collect();
        ok(json!({ "nodes": nodes }))
    })
    .await
}

/// `GET /admin/views`.
pub(crate) async fn views(State(gw): State<Gateway>, headers: HeaderMap) -> Response {
    route(&gw, &headers, "read", |gw, op| async move {
        let mut client = ProjectionAdminClient::new(gw.admin_projection_channel()?);
        let r = call(
            client.describe_views(request(&op, DescribeViewsRequest {})),
            "projection",
        )
        .await?;
        let last = r
            .views
            .iter()
            .map(|v| v.stream_last_sequence)
            .max()
            .unwrap_or(0);
        let views: Vec<Value> = r.views.iter().map(view_json).collect();
        ok(json!({ "views": views, "stream_last_sequence": last }))
    })
    .await
}

/// One view of `GET /admin/views`.
fn view_json(v: &cloudlysis_proto::projection_admin::ViewStatus) -> Value {
    json!({
        "view": v.view,
        "generation": v.generation,
        "checkpoint": v.checkpoint,
        "stream_last_sequence": v.stream_last_sequence,
        // Not known while the stream's last sequence is not (NATS did not answer the node); a
        // 0 would read as "caught up".
        "lag": v
            .stream_known
            .then(|| v.stream_last_sequence.saturating_sub(v.checkpoint)),
        "rebuilding": v.rebuilding.map(|g| json!({
            "generation": g,
            "checkpoint": v.rebuild_checkpoint.unwrap_or(0),
        })),
    })
}

fn view_token(view: &str) -> Result<(), Problem> {
    SubjectToken::new(view)
        .map(|_| ())
        .map_err(|e| Problem::bad_request(format!("view: {e}")))
}

/// `POST /admin/views/{view}/rebuild`.
pub(crate) async fn rebuild(
    State(gw): State<Gateway>,
    Path(view): Path<String>,
    headers: HeaderMap,
) -> Response {
    route(&gw, &headers, "operate", |gw, op| async move {
        view_token(&view)?;
        let mut client = ProjectionAdminClient::new(gw.admin_projection_channel()?);
        let r = call(
            client.rebuild_view(request(&op, RebuildViewRequest { view: view.clone() })),
            "projection",
        )
        .await?;
        Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "view": view,
                "generation": r.generation,
                "active_generation": r.active_generation,
            })),
        )
            .into_response())
    })
    .await
}

/// `POST /admin/views/{view}/rebuild/cancel`.
pub(crate) async fn cancel_rebuild(
    State(gw): State<Gateway>,
    Path(view): Path<String>,
    headers: HeaderMap,
) -> Response {
    route(&gw, &headers, "operate", |gw, op| async move {
        view_token(&view)?;
        let mut client = ProjectionAdminClient::new(gw.admin_projection_channel()?);
        let r = call(
            client.cancel_rebuild(request(&op, CancelRebuildRequest { view: view.clone() })),
            "projection",
        )
        .await?;
        ok(json!({
            "view": view,
            "cancelled_generation": r.cancelled_generation,
            "active_generation": r.active_generation,
        }))
    })
    .await
}

/// Paging parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageParams {
    #[serde(default)]
    source: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: Option<u32>,
}

fn cursor_ok(cursor: &str) -> Result<(), Problem> {
    if cursor.len() > 512
        || cursor
            .chars()
            .any(|c| c.is_whitespace() || c == '*' || c == '>')
    {
        return Err(Problem::bad_request(
            "cursor: not a cursor this Gateway returned",
        ));
    }
    Ok(())
}

fn summary_json(s: &PoisonSummary) -> Value {
    json!({
        "id": s.id,
        "source": { "kind": s.source_kind, "name": s.source },
        "consumer": s.consumer,
        "stream": s.stream,
        "sequence": s.sequence,
        "subject": s.subject,
        "error": s.error,
        "attempts": s.attempts,
        "time": s.time,
    })
}

fn next(cursor: String) -> Value {
    if cursor.is_empty() {
        Value::Null
    } else {
        json!(cursor)
    }
}

/// `GET /admin/poison`.
pub(crate) async fn poison_list(
    State(gw): State<Gateway>,
    Query(params): Query<PageParams>,
    headers: HeaderMap,
) -> Response {
    route(&gw, &headers, "read", |gw, op| async move {
        cursor_ok(&params.cursor)?;
        let mut client = OpsAdminClient::new(gw.admin_projection_channel()?);
        let r = call(
            client.list_poison(request(
                &op,
                ListPoisonRequest {
                    source: params.source,
                    cursor: params.cursor,
                    limit: params.limit.unwrap_or(50),
                },
            )),
            "projection",
        )
        .await?;
        ok(json!({
            "records": r.records.iter().map(summary_json).collect::<Vec<_>>(),
            "next_cursor": next(r.next_cursor),
        }))
    })
    .await
}

fn id_ok(id: &str) -> Result<(), Problem> {
    cloudlysis_runtime::poison::parse_key(id)
        .map(|_| ())
        .ok_or_else(|| Problem::bad_request(format!("`{id}` is not a poison record id")))
}

/// `GET /admin/poison/{id}`.
pub(crate) async fn poison_get(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    route(&gw, &headers, "read", |gw, op| async move {
        id_ok(&id)?;
        let mut client = OpsAdminClient::new(gw.admin_projection_channel()?);
        let d = call(
            client.get_poison(request(&op, GetPoisonRequest { id })),
            "projection",
        )
        .await?;
        let mut body = d.summary.as_ref().map(summary_json).unwrap_or_default();
        body["headers"] = Value::Object(
            d.headers
                .iter()
                .map(|h| (h.name.clone(), json!(h.values)))
                .collect(),
        );
        let parsed = serde_json::from_slice::<Value>(&d.payload).ok();
        body["message"] = json!({
            "available": d.message_available,
            "payload": parsed.clone(),
            "payload_text": if parsed.is_none() && d.message_available {
                json!(String::from_utf8_lossy(&d.payload))
            } else {
                Value::Null
            },
        });
        ok(body)
    })
    .await
}

/// `POST /admin/poison/{id}/redrive`.
pub(crate) async fn poison_redrive(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    route(&gw, &headers, "operate", |gw, op| async move {
        id_ok(&id)?;
        let mut client = OpsAdminClient::new(gw.admin_projection_channel()?);
        let r = call(
            client.redrive_poison(request(&op, PoisonVerbRequest { id })),
            "projection",
        )
        .await?;
        ok(json!({ "id": r.id, "outcome": r.outcome, "detail": r.detail }))
    })
    .await
}

/// `DELETE /admin/poison/{id}`.
pub(crate) async fn poison_purge(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    route(&gw, &headers, "operate", |gw, op| async move {
        id_ok(&id)?;
        let mut client = OpsAdminClient::new(gw.admin_projection_channel()?);
        let r = call(
            client.purge_poison(request(&op, PoisonVerbRequest { id })),
            "projection",
        )
        .await?;
        ok(json!({ "id": r.id, "outcome": r.outcome, "detail": r.detail }))
    })
    .await
}

/// `GET /admin/audit`.
pub(crate) async fn audit(
    State(gw): State<Gateway>,
    Query(params): Query<PageParams>,
    headers: HeaderMap,
) -> Response {
    route(&gw, &headers, "read", |gw, op| async move {
        cursor_ok(&params.cursor)?;
        let mut client = OpsAdminClient::new(gw.admin_projection_channel()?);
        let r = call(
            client.list_audit(request(
                &op,
                ListAuditRequest {
                    cursor: params.cursor,
                    limit: params.limit.unwrap_or(100),
                },
            )),
            "projection",
        )
        .await?;
        let entries: Vec<Value> = r
            .entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "time": e.time,
                    "actor": e.actor,
                    "tenant": e.tenant,
                    "action": e.action,
                    "target": e.target,
                    "outcome": e.outcome,
                    "detail": e.detail,
                })
            })
            .collect();
        ok(json!({ "entries": entries, "next_cursor": next(r.next_cursor) }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lag the node could not measure (NATS did not answer it) is null, not 0 — found by
    /// using the platform: with NATS frozen the views answered `"lag": 0`, "caught up".
    #[test]
    fn an_unknown_lag_is_null_not_zero() {
        let status = |last, known| cloudlysis_proto::projection_admin::ViewStatus {
            view: "balances".into(),
            generation: 1,
            checkpoint: if known { 40 } else { 0 },
            stream_last_sequence: last,
            stream_known: known,
            rebuilding: None,
            rebuild_checkpoint: None,
        };
        assert_eq!(view_json(&status(50, true))["lag"], 10);
        assert_eq!(view_json(&status(0, false))["lag"], Value::Null);
        // An empty stream, read: caught up, not unknown.
        let empty = view_json(&cloudlysis_proto::projection_admin::ViewStatus {
            checkpoint: 0,
            ..status(0, true)
        });
        assert_eq!(empty["lag"], 0);
    }
}
