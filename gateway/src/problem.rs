//! RFC 9457 problem details: every error the Gateway returns is `application/problem+json`.
//!
//! ```json
//! {"type":"urn:cloudlysis:problem:forbidden","title":"Forbidden","status":403,
//!  "detail":"missing right `commands:account`","correlation_id":"0193…"}
//! ```

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudlysis_runtime::context::{header_names, normalize_correlation_id};
use serde::Serialize;

/// Content type of problem responses.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// `WWW-Authenticate` of every 401: a bearer token is what the Gateway takes.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"cloudlysis\"";

/// One problem response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable slug (`urn:cloudlysis:problem:<slug>`).
    pub slug: &'static str,
    /// What happened, for a human.
    pub detail: String,
    /// Seconds after which a retry may succeed (sets `Retry-After`).
    pub retry_after: Option<u64>,
    /// The request's correlation id.
    pub correlation_id: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
}

impl Problem {
    /// A problem with a status, slug and detail.
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            retry_after: None,
            correlation_id: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403 Forbidden.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation(mut self, id: &str) -> Self {
        self.correlation_id = Some(id.to_string());
        self
    }

    /// Sets the correlation id from the request's `x-correlation-id` (a valid one is kept, else a
    /// new one is made), for a refusal answered before any handler read it.
    pub(crate) fn correlated(self, headers: &axum::http::HeaderMap) -> Self {
        let incoming = headers
            .get(header_names::CORRELATION_ID)
            .and_then(|v| v.to_str().ok());
        self.with_correlation(normalize_correlation_id(incoming).as_str())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: format!("urn:cloudlysis:problem:{}", self.slug),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            correlation_id: self.correlation_id.as_deref(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, json).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 11.6.1: a 401 says how to authenticate.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        if let Some(id) = self.correlation_id.as_deref()
            && let Ok(v) = HeaderValue::from_str(id)
        {
            resp.headers_mut().insert(header_names::CORRELATION_ID, v);
        }
        resp
    }
}

/// The answer to a path no route serves: 404 naming the path (the router's fallback).
/// Counted as `cloudlysis_gateway_requests_total{route="unrouted"}`.
pub(crate) async fn no_route(parts: axum::http::request::Parts) -> Response {
    let started = std::time::Instant::now();
    let path = parts.uri.path();
    let resp = Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!(
            "no route for `{path}`: the API is under /v1/, operations under /admin/, the Control UI \
             under /ui/"
        ),
    )
    .correlated(&parts.headers)
    .into_response();
    crate::request_metrics::record(UNROUTED, resp.status(), started.elapsed());
    resp
}

/// The answer to a method a route does not serve: 405 naming both (the router adds `Allow`).
/// Counted as `cloudlysis_gateway_requests_total{route="unrouted"}`.
pub(crate) async fn wrong_method(parts: axum::http::request::Parts) -> Response {
    let started = std::time::Instant::now();
    let (method, path) = (&parts.method, parts.uri.path());
    let resp = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("`{method}` is not served on `{path}`: the `Allow` header lists what is"),
    )
    .correlated(&parts.headers)
    .into_response();
    crate::request_metrics::record(UNROUTED, resp.status(), started.elapsed());
    resp
}

/// The `route` label of requests no route serves (404, 405).
pub const UNROUTED: &str = "unrouted";
/// The `route` label of requests whose path or query string the Gateway could not read (400).
pub const UNREADABLE: &str = "unreadable";

/// The answer to a handler that panicked — a bug — caught by the router's `CatchPanicLayer`:
/// 500 problem+json under a new correlation id, which the error logged with the panic's message
/// also carries; counted in `cloudlysis_gateway_handler_panics_total`. It does not claim that
/// nothing happened: the handler may have called a node before it failed.
pub(crate) fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = cloudlysis_runtime::mailbox::panic_message(&panic);
    let id = cloudlysis_runtime::context::CorrelationId::generate();
    tracing::error!(
        correlation_id = id.as_str(),
        panic = %message,
        "a Gateway handler panicked"
    );
    metrics::counter!(cloudlysis_runtime::metrics::names::GATEWAY_HANDLER_PANICS).increment(1);
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the Gateway failed while handling this request (a bug; its log has the details under \
         this correlation id); whether a call it made before failing took effect is not known",
    )
    .with_correlation(id.as_str())
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 401 says how to authenticate (RFC 9110 11.6.1); other statuses do not. (Found by
    /// using the platform: no 401 carried `WWW-Authenticate`.)
    #[test]
    fn a_401_says_how_to_authenticate() {
        let resp = Problem::unauthorized("missing bearer token").into_response();
        assert_eq!(
            resp.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer realm=\"cloudlysis\""
        );
        let resp = Problem::forbidden("missing right").into_response();
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
