//! The request series of the Gateway's API routes — `cloudlysis_gateway_requests_total{route,
//! status}` and `cloudlysis_gateway_request_duration_seconds{route}` — with their handles
//! resolved once per route and status and kept, so a request records into them without a
//! registry look-up or a label allocation. Bounded: routes are the Gateway's own (a fixed set)
//! and statuses are HTTP's; past [`MAX_SERIES`] pairs a handle is resolved per request.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use cloudlysis_runtime::metrics::names;

/// Most (route, status) pairs whose handles are kept.
pub const MAX_SERIES: usize = 1024;

type Handles = HashMap<(&'static str, u16), (metrics::Counter, metrics::Histogram)>;

static HANDLES: LazyLock<RwLock<Handles>> = LazyLock::new(RwLock::default);

/// Counts a request of `route` answered with `status` after `took`.
pub(crate) fn record(route: &'static str, status: StatusCode, took: Duration) {
    let key = (route, status.as_u16());
    let known = HANDLES
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let (count, duration) = known.unwrap_or_else(|| {
        let handles = (
            metrics::counter!(names::GATEWAY_REQUESTS, "route" => route, "status" => status.as_str().to_owned()),
            metrics::histogram!(names::GATEWAY_REQUEST_DURATION, "route" => route),
        );
        let mut all = HANDLES.write().unwrap_or_else(|p| p.into_inner());
        if all.len() < MAX_SERIES {
            all.insert(key, handles.clone());
        }
        handles
    });
    count.increment(1);
    duration.record(took.as_secs_f64());
}

/// Counts a request of `route` answered with `status`, observing no duration (for refusals made
/// where the request's start is not known).
pub(crate) fn count(route: &'static str, status: StatusCode) {
    metrics::counter!(names::GATEWAY_REQUESTS, "route" => route, "status" => status.as_str().to_owned())
        .increment(1);
}
