//! The Gateway's path and query extractors: axum's, with their refusals answered as
//! problem+json like every other refusal (axum's own answer is `text/plain`).
//!
//! A path segment that is not UTF-8 after percent-decoding (`/v1/commands/account/%FF`) or a
//! query string that does not fit its parameters (`?limit=abc`, `?limit=1&limit=2`) is a 400
//! `bad-request` naming what did not fit.
//!
//! [`read_body`] reads a request body for every route that takes one: 408 when it does not
//! arrive within [`BODY_READ_TIMEOUT`], 413 over `gateway.max_body_bytes`, 400 naming the error
//! when the client's stream breaks off.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// Longest time to receive a request body.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a request body of at most `limit` bytes (see the module docs).
pub(crate) async fn read_body(
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, Problem> {
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            format!("request body not received within {BODY_READ_TIMEOUT:?}"),
        )),
        Ok(Err(e)) if is_length_limit(&e) => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("request body exceeds {limit} bytes (gateway.max_body_bytes)"),
        )),
        Ok(Err(e)) => Err(Problem::bad_request(format!(
            "could not read the body: {e}"
        ))),
        Ok(Ok(b)) => Ok(b),
    }
}

/// True when reading stopped at the length limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// [`axum::extract::Path`], refused as problem+json.
pub(crate) struct Path<T>(pub T);

/// [`axum::extract::Query`], refused as problem+json.
pub(crate) struct Query<T>(pub T);

/// A refusal of axum's: a client error is `bad-request`; anything else (a route declared with
/// parameters its handler does not take) is the Gateway's fault. It carries the request's
/// correlation id and is counted as `cloudlysis_gateway_requests_total{route="unreadable"}`
/// (the route's handler, which counts the others, never runs; no duration is observed: the
/// extractor does not know when the request began, and timing every request for its refusals
/// would cost the ones that pass).
fn refused(parts: &Parts, status: StatusCode, what: &str, text: String) -> Problem {
    let problem = if status.is_client_error() {
        Problem::bad_request(format!("{what}: {text}"))
    } else {
        Problem::new(status, "internal", format!("{what}: {text}"))
    };
    crate::request_metrics::count(crate::problem::UNREADABLE, problem.status);
    problem.correlated(&parts.headers)
}

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(refused(parts, e.status(), "path", e.body_text())),
        }
    }
}

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(refused(parts, e.status(), "query string", e.body_text())),
        }
    }
}
