//! Work whose caller has gone. A node serves every gRPC call under the caller's deadline
//! (`grpc-timeout`: tonic answers `DEADLINE_EXCEEDED` and drops the handler when it passes) and
//! drops a handler whose client cancelled (an HTTP/2 reset), so no work outlives its caller.
//! [`AbandonLayer`] counts both in [`names::NODE_CALLS_ABANDONED`]: `reason="deadline"` for a
//! call answered `DEADLINE_EXCEEDED` (the handler gave up at the caller's deadline) or dropped
//! after its `grpc-timeout` passed, `"cancelled"` for a call dropped before that.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::metrics::names;

/// Makes the series exist at 0.
pub fn register_metrics() {
    for reason in ["deadline", "cancelled"] {
        metrics::counter!(names::NODE_CALLS_ABANDONED, "reason" => reason).increment(0);
    }
}

/// Counts abandoned calls (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct AbandonLayer;

impl<S> tower::Layer<S> for AbandonLayer {
    type Service = Abandon<S>;
    fn layer(&self, inner: S) -> Self::Service {
        register_metrics();
        Abandon { inner }
    }
}

/// The service of [`AbandonLayer`].
#[derive(Clone, Debug)]
pub struct Abandon<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Abandon<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Watched<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let watch = Watch::new(
            req.headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
        );
        Watched {
            inner: Box::pin(self.inner.call(req)),
            watch,
        }
    }
}

/// One call, counted in [`names::NODE_CALLS_ABANDONED`] if it is dropped before it is
/// answered, or answered `DEADLINE_EXCEEDED`. What [`Abandon`] keeps per call, and what a call
/// in this process ([`crate::local`]) holds.
#[derive(Debug)]
pub struct Watch {
    deadline: Option<Instant>,
    done: bool,
}

impl Watch {
    /// A call that arrived now with this `grpc-timeout` value, if any.
    pub fn new(grpc_timeout: Option<&str>) -> Self {
        Self {
            deadline: grpc_timeout
                .and_then(parse_grpc_timeout)
                .map(|t| Instant::now() + t),
            done: false,
        }
    }

    /// The call was answered — with `DEADLINE_EXCEEDED` when `deadline_exceeded` (the handler
    /// gave up at the caller's deadline itself).
    pub fn answered(&mut self, deadline_exceeded: bool) {
        self.done = true;
        if deadline_exceeded {
            metrics::counter!(names::NODE_CALLS_ABANDONED, "reason" => "deadline").increment(1);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            let reason = match self.deadline {
                Some(d) if Instant::now() >= d => "deadline",
                _ => "cancelled",
            };
            metrics::counter!(names::NODE_CALLS_ABANDONED, "reason" => reason).increment(1);
        }
    }
}

/// A call's future that counts itself when dropped unanswered.
pub struct Watched<F> {
    inner: Pin<Box<F>>,
    watch: Watch,
}

impl<F> std::fmt::Debug for Watched<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("watch", &self.watch)
            .finish()
    }
}

impl<F, R, E> Future for Watched<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = self.inner.as_mut().poll(cx);
        if let Poll::Ready(result) = &out {
            // A trailers-only answer carries its status in the headers.
            let deadline_exceeded = result.as_ref().is_ok_and(|resp| {
                resp.headers()
                    .get("grpc-status")
                    .is_some_and(|v| v.as_bytes() == b"4")
            });
            self.watch.answered(deadline_exceeded);
        }
        out
    }
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`, unit one of H M S m u n; at most 8
/// digits).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}
