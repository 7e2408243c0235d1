//! `POST /v1/commands/{aggregate_type}/{aggregate_id}`: authenticate, authorize, validate, and
//! forward to the aggregate node over gRPC (with a deadline and no retry: a command is retried
//! safely only by the client, with an `Idempotency-Key`).
//!
//! Body: `{"type": "Deposit", "payload": {"amount": 100}}`. Optional headers:
//! `Idempotency-Key` (`[A-Za-z0-9_-]`, at most 128), `If-Match` (expected version as a strong
//! tag, e.g. `"3"`; each at most once),
//! `x-correlation-id`, `traceparent`, `tracestate`. The response carries `x-correlation-id`,
//! `traceparent` and `ETag` (the new version).
//!
//! | outcome | status |
//! |---|---|
//! | committed (or replayed by idempotency key) | 200 `{"version", "event_ids", "stream_sequence", "replayed"}` |
//! | malformed JSON, unknown command type, bad token in the path, bad header | 400 |
//! | no or bad bearer token | 401 |
//! | missing right, `x-tenant-id` differing from the token's tenant | 403 |
//! | unknown aggregate type | 404 |
//! | version conflict | 409 |
//! | body over the limit | 413 |
//! | domain rejection | 422 |
//! | idempotency key reused with a different command | 422 `idempotency-key-reused` |
//! | entity mailbox full | 429 + `Retry-After` |
//! | node unavailable, or no connection to it (nothing was sent) | 503 + `Retry-After` |
//! | deadline passed before the commit was published (nothing was committed) | 504 `timeout` + `Retry-After` |
//! | deadline passed after a publish started, or no answer in time | 504 `outcome-unknown` (with the command's `Idempotency-Key`: retry with it; without one: read the aggregate first) |
//! | the connection to the node failed after the command was sent | 502 `outcome-unknown` |
//! | body not received within 10 s | 408 |

use std::sync::Arc;
use std::time::Instant;

use crate::extract::Path;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudlysis_proto::aggregate::command_service_client::CommandServiceClient;
use cloudlysis_proto::aggregate::command_service_server::CommandService;
use cloudlysis_proto::aggregate::{EXECUTE_PATH, ExecuteRequest};
use cloudlysis_runtime::context::{
    RequestContext, TenantId, header_names, headers as h, incoming_trace, normalize_correlation_id,
};
use cloudlysis_runtime::outcome::{ErrorKind, never_sent};
use cloudlysis_runtime::subject::validate_token;
use serde::Deserialize;

use crate::Gateway;
use crate::auth::{AuthError, allows};
use crate::problem::Problem;
use crate::upstream::deadline::Deadline;
use crate::upstream::retry;

/// `{"type", "payload"}` and nothing else: a key the API does not know is refused rather than
/// ignored (as a workflow start's are), so a misspelt `paylod` is not a command without payload.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody<'a> {
    #[serde(rename = "type")]
    command_type: String,
    /// The payload as the client wrote it (checked to be JSON, not parsed into a tree and
    /// encoded again: the node decodes it into the aggregate's command).
    #[serde(default, borrow)]
    payload: Option<&'a serde_json::value::RawValue>,
}

/// The 200 answer, written straight from the node's reply (fields in the order a JSON object
/// of them always had: alphabetical).
#[derive(serde::Serialize)]
struct Committed<'a> {
    event_ids: &'a [String],
    replayed: bool,
    stream_sequence: u64,
    version: u64,
}

/// The handler.
pub(crate) async fn post(
    State(gw): State<Gateway>,
    Path((aggregate_type, aggregate_id)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    // The request taken whole: a `HeaderMap` extractor would copy every header.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let correlation = normalize_correlation_id(header_str(headers, h::CORRELATION_ID));
    let (traceparent, tracestate) = incoming_trace(headers);
    // Admission (per tenant, fair) ran before this handler: see `admission`.
    let result = handle(
        &gw,
        &aggregate_type,
        &aggregate_id,
        &parts,
        body,
        &correlation,
        (&traceparent, tracestate),
    )
    .await;
    let mut resp = match result {
        Ok(r) => r,
        Err(p) => p.with_correlation(correlation.as_str()).into_response(),
    };
    let hs = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(correlation.as_str()) {
        hs.insert(header_names::CORRELATION_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&traceparent.to_string()) {
        hs.insert(header_names::TRACEPARENT, v);
    }
    cloudlysis_runtime::telemetry::record(
        cloudlysis_runtime::telemetry::Kind::Server,
        &traceparent,
        started_at,
        || {
            (
                format!("POST /v1/commands/{aggregate_type}"),
                vec![
                    opentelemetry::KeyValue::new(
                        "http.route",
                        "/v1/commands/{aggregate_type}/{aggregate_id}",
                    ),
                    opentelemetry::KeyValue::new(
                        "http.response.status_code",
                        resp.status().as_u16().to_string(),
                    ),
                    opentelemetry::KeyValue::new("cloudlysis.role", "gateway"),
                ],
            )
        },
    );
    crate::request_metrics::record("commands", resp.status(), started.elapsed());
    resp
}

async fn handle(
    gw: &Gateway,
    aggregate_type: &str,
    aggregate_id: &str,
    parts: &axum::http::request::Parts,
    body: Body,
    correlation: &cloudlysis_runtime::CorrelationId,
    (traceparent, tracestate): (
        &cloudlysis_runtime::TraceParent,
        Option<cloudlysis_runtime::trace::TraceState>,
    ),
) -> Result<Response, Problem> {
    // Authentication first: nothing about the request is answered before it.
    let headers = &parts.headers;
    let verified = parts.extensions.get::<crate::auth::Verified>();
    let (claims, tenant) = authenticate_with(gw, headers, verified)?;
    validate_token(aggregate_type)
        .map_err(|e| Problem::bad_request(format!("aggregate type: {e}")))?;
    validate_token(aggregate_id).map_err(|e| Problem::bad_request(format!("aggregate id: {e}")))?;
    if !allows(&claims.rights, "commands", aggregate_type) {
        return Err(Problem::forbidden(format!(
            "missing right `commands:{aggregate_type}`"
        )));
    }
    // The request's deadline runs from here: the node call gets what is left of it.
    let deadline = Deadline::from_headers(headers, gw.inner.settings.command_timeout)?;
    // A slow client may not hold a request open forever (extract::BODY_READ_TIMEOUT).
    let bytes = crate::extract::read_body(body, gw.inner.settings.max_body_bytes).await?;
    // An object only (serde would also take the fields as an array: `["Deposit", {...}]`).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::bad_request(
            "body is not a valid command: expected a JSON object {\"type\": …, \"payload\": …}",
        ));
    }
    let cmd: CommandBody = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("body is not a valid command: {e}")))?;
    if cmd.command_type.is_empty() || cmd.command_type.len() > 128 {
        return Err(Problem::bad_request(
            "command `type` must be 1..=128 characters",
        ));
    }
    // A header a request may carry once: given twice, which one the client meant is not known.
    for name in ["idempotency-key", "if-match"] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(Problem::bad_request(format!(
                "{name} is given more than once: send one"
            )));
        }
    }
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| validate_token(k).is_ok())
                .ok_or_else(|| {
                    Problem::bad_request(
                        "Idempotency-Key must be 1..=128 characters of A-Z, a-z, 0-9, '_' or '-'",
                    )
                })?;
            Some(key.to_string())
        }
    };
    let expected_version = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => {
            let tag = v.to_str().unwrap_or_default().trim();
            // RFC 9110 13.1.1: If-Match compares strongly, and a weak tag never matches.
            if tag.starts_with("W/") {
                return Err(Problem::bad_request(
                    "If-Match takes a strong tag, e.g. \"3\" (a weak one, W/\"3\", never matches)",
                ));
            }
            Some(
                Some(tag.trim_matches('"'))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        Problem::bad_request("If-Match must be a version number, e.g. \"3\"")
                    })?,
            )
        }
    };
    let ctx = RequestContext {
        tenant,
        correlation_id: correlation.clone(),
        traceparent: *traceparent,
        tracestate,
        request_id: header_str(headers, h::REQUEST_ID)
            .filter(|v| validate_token(v).is_ok())
            .map(str::to_string),
        idempotency_key,
    };

    let payload_json = cmd
        .payload
        .map_or(&b"null"[..], |p| p.get().as_bytes())
        .to_vec();
    let credential = gw.credential(&claims, &["commands:", aggregate_type].concat())?;
    let throttle = &gw.inner.throttle;
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            // Nothing was sent in this attempt, and an earlier one never reached a node.
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the request's deadline passed before the command could be sent; nothing was committed",
            )
            .retry_after(1));
        }
        // Placed again on each attempt: a retry goes to the node that owns the entity now.
        let channel = gw.aggregate_channel(ctx.tenant.as_str(), aggregate_type, aggregate_id)?;
        let mut request = tonic::Request::new(ExecuteRequest {
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: aggregate_id.to_string(),
            command_type: cmd.command_type.clone(),
            payload_json: payload_json.clone(),
            expected_version,
        });
        ctx.inject(request.metadata_mut());
        request
            .metadata_mut()
            .insert(h::NODE_CREDENTIAL, credential.clone());
        request.set_timeout(remaining);
        let call = channel.unary(
            EXECUTE_PATH,
            request,
            |node: Arc<dyn CommandService>, r| async move { node.execute(r).await },
            |channel, r| async move { CommandServiceClient::new(channel).execute(r).await },
        );
        match tokio::time::timeout(remaining, call).await {
            // The request was sent: the node may have committed it.
            Err(_) => {
                return Err(outcome_unknown(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the aggregate node did not answer in time",
                    ctx.idempotency_key.is_some(),
                ));
            }
            Ok(Ok(r)) => {
                throttle.on_success();
                break r.into_inner();
            }
            // Only the client can make a command safe to repeat (Idempotency-Key), and only a
            // call that never reached the node is repeated here.
            Ok(Err(status)) if ctx.idempotency_key.is_some() && never_sent(&status) => {
                match retry::decide(
                    &retry::COMMAND,
                    throttle,
                    &status,
                    attempt,
                    deadline.remaining(),
                ) {
                    retry::Next::RetryAfter(wait) => tokio::time::sleep(wait).await,
                    retry::Next::GiveUp => return Err(command_status_problem(&status, true)),
                }
            }
            Ok(Err(status)) => {
                return Err(command_status_problem(
                    &status,
                    ctx.idempotency_key.is_some(),
                ));
            }
        }
    };
    let body = Committed {
        event_ids: &reply.event_ids,
        replayed: reply.replayed,
        stream_sequence: reply.stream_sequence,
        version: reply.version,
    };
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", reply.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// Verifies the bearer token and pins the tenant: a client `x-tenant-id` that differs from the
/// token's tenant is refused (403).
pub(crate) fn authenticate(
    gw: &Gateway,
    headers: &HeaderMap,
) -> Result<(std::sync::Arc<crate::Claims>, TenantId), Problem> {
    authenticate_with(gw, headers, None)
}

/// [`authenticate`] with the claims the admission layer verified for this request, if any
/// (then the token is not verified again).
pub(crate) fn authenticate_with(
    gw: &Gateway,
    headers: &HeaderMap,
    verified: Option<&crate::auth::Verified>,
) -> Result<(std::sync::Arc<crate::Claims>, TenantId), Problem> {
    let verified = verified.map(|v| Ok(v.0.clone()));
    let claims = verified
        .unwrap_or_else(|| {
            let bearer = headers.get(header::AUTHORIZATION);
            gw.inner.auth.verify(bearer.and_then(|v| v.to_str().ok()))
        })
        .map_err(|e| match e {
            AuthError::Missing => Problem::unauthorized("missing bearer token"),
            AuthError::Expired => Problem::unauthorized("token expired"),
            AuthError::KeysUnavailable(why) => Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{why}; the token cannot be checked yet"),
            )
            .retry_after(1),
            other => Problem::unauthorized(other.to_string()),
        })?;
    let tenant = TenantId::new(claims.tenant.clone())
        .map_err(|e| Problem::unauthorized(format!("token tenant is invalid: {e}")))?;
    if let Some(claimed) = headers.get(h::TENANT_ID)
        && claimed.as_bytes() != tenant.as_str().as_bytes()
    {
        return Err(Problem::forbidden(
            "x-tenant-id does not match the authenticated tenant",
        ));
    }
    Ok((claims, tenant))
}

/// How every outcome-unknown detail begins (the node's `CommandError::OutcomeUnknown` too).
const UNKNOWN: &str = "the outcome is unknown (the commit may have landed): ";

/// The answer when a command may or may not have committed: never a blind retry. `what` is
/// why (the node's message, or the Gateway's reason); what is safe next depends on whether the
/// command carried an `Idempotency-Key` (`keyed`).
fn outcome_unknown(status: StatusCode, what: &str, keyed: bool) -> Problem {
    // The node's message says so already; the Gateway's own reasons get the same opening.
    let what = what.strip_prefix(UNKNOWN).unwrap_or(what);
    let advice = if keyed {
        "retry it with the same Idempotency-Key (a committed command is then answered, not run \
         again), or read the aggregate first"
    } else {
        "read the aggregate before sending it again: it carried no Idempotency-Key, so a repeat \
         could apply it twice (commands that carry one can be retried safely)"
    };
    Problem::new(
        status,
        "outcome-unknown",
        format!("{UNKNOWN}{what}; {advice}"),
    )
}

/// Maps a failed command call to a problem. What the node marked ([`ErrorKind`]) decides
/// whether anything may have committed; without a mark, only a call that never left the
/// Gateway (no connection) is known not to have committed. `keyed`: the command carried an
/// `Idempotency-Key` (what a caller may safely do next depends on it).
pub(crate) fn command_status_problem(status: &tonic::Status, keyed: bool) -> Problem {
    use tonic::Code;
    match ErrorKind::of(status) {
        Some(ErrorKind::IdempotencyKeyReused) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                status.message(),
            );
        }
        Some(ErrorKind::OutcomeUnknown) => {
            return outcome_unknown(StatusCode::GATEWAY_TIMEOUT, status.message(), keyed);
        }
        Some(ErrorKind::NotCommitted) if status.code() == Code::DeadlineExceeded => {
            return Problem::new(StatusCode::GATEWAY_TIMEOUT, "timeout", status.message())
                .retry_after(1);
        }
        Some(ErrorKind::NotCommitted) => return node_status_problem(status, "aggregate"),
        None => {}
    }
    if never_sent(status) {
        return node_status_problem(status, "aggregate");
    }
    match status.code() {
        // Sent, then the call failed: the node may have acted on it.
        Code::Unavailable | Code::Unknown | Code::Internal => outcome_unknown(
            StatusCode::BAD_GATEWAY,
            &format!(
                "the call to the aggregate node failed: {}",
                status.message()
            ),
            keyed,
        ),
        Code::DeadlineExceeded | Code::Cancelled => outcome_unknown(
            StatusCode::GATEWAY_TIMEOUT,
            &format!(
                "the aggregate node did not answer in time ({})",
                status.message()
            ),
            keyed,
        ),
        _ => node_status_problem(status, "aggregate"),
    }
}

/// Maps a node's gRPC status to a problem (done once, here at the edge); `role` names the node
/// in the detail of an outage.
pub(crate) fn node_status_problem(status: &tonic::Status, role: &str) -> Problem {
    use tonic::Code;
    let msg = status.message().to_string();
    // A node's retry hint (gRFC A6 pushback, milliseconds) becomes Retry-After (whole seconds,
    // at least 1).
    let hint = match crate::upstream::retry::pushback(status) {
        crate::upstream::retry::Pushback::Wait(d) => d.as_millis().div_ceil(1000).max(1) as u64,
        _ => 1,
    };
    if let Some(why) = cloudlysis_runtime::outcome::not_taken(status) {
        // The node certainly did not take the call: no connection could be made, or it refused
        // the call at the HTTP/2 layer (closing: GOAWAY; REFUSED_STREAM).
        let role: &'static str = match role {
            "aggregate" => "aggregate",
            "projection" => "projection",
            "runner" => "runner",
            _ => "other",
        };
        metrics::counter!(
            cloudlysis_runtime::metrics::names::GATEWAY_NODE_UNREACHABLE,
            "role" => role,
            "reason" => why.label()
        )
        .increment(1);
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {role} node is unavailable: {why}; nothing was done there ({msg})"),
        )
        .retry_after(hint);
    }
    match status.code() {
        Code::InvalidArgument => Problem::bad_request(msg),
        Code::NotFound => Problem::new(StatusCode::NOT_FOUND, "not-found", msg),
        Code::FailedPrecondition => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", msg),
        Code::Aborted | Code::AlreadyExists => Problem::new(StatusCode::CONFLICT, "conflict", msg),
        Code::ResourceExhausted => {
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "busy", msg).retry_after(hint)
        }
        Code::Unavailable => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            // The node, or what it depends on (NATS), or the connection to it failed the call.
            format!("the {role} node did not serve the request: {msg}"),
        )
        .retry_after(hint),
        // Deadline: the node says whether the outcome is unknown; no Retry-After here (a read
        // that waited for `x-min-sequence` adds one: queries.rs).
        Code::DeadlineExceeded | Code::Cancelled => {
            Problem::new(StatusCode::GATEWAY_TIMEOUT, "timeout", msg)
        }
        Code::OutOfRange => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", msg),
        // The caller's token was verified here: a node refusing the Gateway's credential is a
        // deployment fault (`node.secret` differs, clocks apart), not the client's.
        Code::Unauthenticated => Problem::new(
            StatusCode::BAD_GATEWAY,
            "node-error",
            format!(
                "the {role} node refused the Gateway's node credential ({msg}); nothing was done \
                 there — check that both use the same node.secret"
            ),
        ),
        Code::PermissionDenied => Problem::forbidden(msg),
        _ => Problem::new(StatusCode::BAD_GATEWAY, "node-error", msg),
    }
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    match header_names::of(name) {
        Some(n) => headers.get(n),
        None => headers.get(name),
    }
    .and_then(|v| v.to_str().ok())
}
