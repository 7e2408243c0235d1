//! The deadline of an API request. Each route has a default (commands and workflow calls:
//! `gateway.command_timeout_ms`; a query `Get`: 5 s; a `List`: 10 s); a client may ask for less
//! with `x-request-timeout-ms: <1 – default>` (more is cut to the default; anything else is 400).
//! The deadline is the gRPC deadline of the node call (`grpc-timeout`, what is left of it on a
//! retry), and retries stop at it.

use std::time::Duration;

use axum::http::HeaderMap;
use cloudlysis_runtime::context::headers as h;
use tokio::time::Instant;

use crate::problem::Problem;

/// When a request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    /// The route's `default`, or the client's shorter `x-request-timeout-ms`.
    pub fn from_headers(headers: &HeaderMap, default: Duration) -> Result<Self, Problem> {
        let budget = match headers.get(h::REQUEST_TIMEOUT_MS) {
            None => default,
            Some(v) => {
                let ms = v
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|ms| *ms >= 1)
                    .ok_or_else(|| {
                        Problem::bad_request(format!(
                            "{} must be a number of milliseconds ≥ 1 (at most {} for this route)",
                            h::REQUEST_TIMEOUT_MS,
                            default.as_millis()
                        ))
                    })?;
                Duration::from_millis(ms).min(default)
            }
        };
        Ok(Self {
            at: Instant::now() + budget,
            budget,
        })
    }

    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The whole budget the request was given.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(h::REQUEST_TIMEOUT_MS, v.parse().unwrap());
        m
    }

    #[test]
    fn a_client_may_ask_for_less_never_for_more() {
        let default = Duration::from_secs(5);
        assert_eq!(
            Deadline::from_headers(&HeaderMap::new(), default)
                .unwrap()
                .budget(),
            default
        );
        assert_eq!(
            Deadline::from_headers(&with("250"), default)
                .unwrap()
                .budget(),
            Duration::from_millis(250)
        );
        assert_eq!(
            Deadline::from_headers(&with("600000"), default)
                .unwrap()
                .budget(),
            default
        );
        for bad in ["0", "-5", "soon", ""] {
            let p = Deadline::from_headers(&with(bad), default).unwrap_err();
            assert_eq!(p.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
