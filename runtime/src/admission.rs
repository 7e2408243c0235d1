//! Node-side admission: a node serves at most `node.max_in_flight` gRPC calls at once (health and
//! reflection aside). A call beyond it is refused at once — before any handler runs — with
//! `UNAVAILABLE`, the mark `not-committed` ([`crate::outcome`]) and a `grpc-retry-pushback-ms`
//! hint of [`PUSHBACK_MS`], which the Gateway turns into `Retry-After` (503) and its retry
//! profiles honour. `cloudlysis_node_calls_in_flight` and
//! `cloudlysis_node_admission_rejections_total` show it.
//!
//! [`NodeServing`] is what a node's `serve_grpc` takes: the credential keys, this limit and the
//! server TLS ([`crate::tls`]), if any.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Setting;
use crate::credential::{MethodRight, NodeKeys, required_right};
use crate::metrics::names;
use crate::outcome::ErrorKind;

/// `node.max_in_flight`.
pub const MAX_IN_FLIGHT: Setting = Setting {
    key: "node.max_in_flight",
    env: "CLOUDLYSIS_NODE_MAX_IN_FLIGHT",
    flag: "",
    doc: "gRPC calls a node serves at once (health and reflection aside); more are refused with UNAVAILABLE and a retry hint [default: 1024, 1 – 1000000]",
};
/// Default of [`MAX_IN_FLIGHT`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// The retry hint of a refused call, in milliseconds.
pub const PUSHBACK_MS: u64 = 200;
/// The gRPC trailer (gRFC A6) carrying the hint.
pub const PUSHBACK_TRAILER: &str = "grpc-retry-pushback-ms";

/// How a node serves gRPC: whose credentials it accepts and how many calls at once. Clones
/// share one count of calls in flight (what the node reports as its load in the registry).
#[derive(Debug, Clone)]
pub struct NodeServing {
    /// The node-credential keys.
    pub keys: NodeKeys,
    max: usize,
    permits: Arc<Semaphore>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    readiness: Option<crate::service::Readiness>,
}

impl From<NodeKeys> for NodeServing {
    /// The keys with [`DEFAULT_MAX_IN_FLIGHT`].
    fn from(keys: NodeKeys) -> Self {
        Self::new(keys, DEFAULT_MAX_IN_FLIGHT)
    }
}

impl NodeServing {
    /// `keys`, and at most `max_in_flight` calls at once (at least 1).
    pub fn new(keys: NodeKeys, max_in_flight: usize) -> Self {
        let max = max_in_flight.max(1);
        Self {
            keys,
            max,
            permits: Arc::new(Semaphore::new(max)),
            tls: None,
            readiness: None,
        }
    }

    /// The node's gRPC health follows `readiness` (the checks of its `/ready`): `NOT_SERVING`
    /// while one fails, so a Gateway or a load balancer probing gRPC health sees what `/ready`
    /// says.
    pub fn with_readiness(mut self, readiness: crate::service::Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// The readiness the node's gRPC health follows, if any (see [`Self::with_readiness`]).
    pub fn readiness(&self) -> Option<&crate::service::Readiness> {
        self.readiness.as_ref()
    }

    /// Serving over TLS with `tls` (`None`: plaintext).
    pub fn with_tls(mut self, tls: Option<tonic::transport::ServerTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    /// Whether the node serves TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A gRPC server builder with the node's TLS set up.
    pub fn server(&self) -> Result<tonic::transport::Server, tonic::transport::Error> {
        let builder = tonic::transport::Server::builder();
        match &self.tls {
            Some(tls) => builder.tls_config(tls.clone()),
            None => Ok(builder),
        }
    }

    /// Calls served at once.
    pub fn max_in_flight(&self) -> usize {
        self.max
    }

    /// Calls being served now.
    pub fn in_flight(&self) -> usize {
        self.max - self.permits.available_permits().min(self.max)
    }

    /// The admission layer for [`NodeServing::max_in_flight`].
    pub fn admission(&self) -> AdmitLayer {
        register_metrics();
        AdmitLayer {
            permits: self.permits.clone(),
            max: self.max,
        }
    }
}

/// Makes the series exist (at 0).
pub fn register_metrics() {
    metrics::gauge!(names::NODE_CALLS_IN_FLIGHT).set(0.0);
    metrics::counter!(names::NODE_CALL_PANICS).increment(0);
    metrics::counter!(names::NODE_ADMISSION_REJECTIONS).increment(0);
}

/// Refuses calls beyond the limit (see the module docs).
#[derive(Debug, Clone)]
pub struct AdmitLayer {
    permits: Arc<Semaphore>,
    max: usize,
}

impl<S> tower::Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Admit {
            inner,
            permits: self.permits.clone(),
            max: self.max,
        }
    }
}

impl AdmitLayer {
    /// Admits one call to `path` (a call in this process, [`crate::local`]): the permit to
    /// hold until it is answered — none for health and reflection — or the status a call
    /// beyond `node.max_in_flight` gets, as from the layer.
    pub fn try_admit(&self, path: &str) -> Result<Option<Permit>, tonic::Status> {
        admit(&self.permits, self.max, path)
    }
}

fn admit(
    permits: &Arc<Semaphore>,
    max: usize,
    path: &str,
) -> Result<Option<Permit>, tonic::Status> {
    if required_right(path) == MethodRight::Open {
        return Ok(None);
    }
    match permits.clone().try_acquire_owned() {
        Ok(p) => {
            IN_FLIGHT.increment(1.0);
            Ok(Some(Permit { _permit: p }))
        }
        Err(_) => {
            metrics::counter!(names::NODE_ADMISSION_REJECTIONS).increment(1);
            let mut status = ErrorKind::NotCommitted.mark(tonic::Status::unavailable(format!(
                "the node is at its limit of {max} calls in flight (node.max_in_flight); \
                 nothing was done, retry after {PUSHBACK_MS} ms"
            )));
            if let Ok(v) = PUSHBACK_MS.to_string().parse() {
                status.metadata_mut().insert(PUSHBACK_TRAILER, v);
            }
            Err(status)
        }
    }
}

/// The service of [`AdmitLayer`].
#[derive(Debug, Clone)]
pub struct Admit<S> {
    inner: S,
    permits: Arc<Semaphore>,
    max: usize,
}

/// A call holding its admission permit until it ends (or is dropped).
pub struct Admitted<F> {
    inner: Pin<Box<F>>,
    _permit: Option<Permit>,
}

impl<F> std::fmt::Debug for Admitted<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admitted")
    }
}

/// [`names::NODE_CALLS_IN_FLIGHT`], resolved once (every admitted call moves it twice).
static IN_FLIGHT: std::sync::LazyLock<metrics::Gauge> =
    std::sync::LazyLock::new(|| metrics::gauge!(names::NODE_CALLS_IN_FLIGHT));

/// A place among `node.max_in_flight`, counted in `cloudlysis_node_calls_in_flight` until dropped.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        IN_FLIGHT.decrement(1.0);
    }
}

impl<F: Future> Future for Admitted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Admit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::Either<
        Admitted<S::Future>,
        std::future::Ready<Result<http::Response<R>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let permit = match admit(&self.permits, self.max, req.uri().path()) {
            Ok(permit) => permit,
            Err(status) => {
                return futures::future::Either::Right(std::future::ready(Ok(status.into_http())));
            }
        };
        futures::future::Either::Left(Admitted {
            inner: Box::pin(self.inner.call(req)),
            _permit: permit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_count_of_calls_in_flight() {
        let keys = NodeKeys::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let serving = NodeServing::new(keys, 2);
        let registry_view = serving.clone();
        let layer = serving.admission();
        let p = layer.permits.clone().try_acquire_owned().unwrap();
        assert_eq!(registry_view.in_flight(), 1);
        let _q = layer.permits.clone().try_acquire_owned().unwrap();
        assert!(layer.permits.clone().try_acquire_owned().is_err());
        drop(p);
        assert_eq!(registry_view.in_flight(), 1);
        assert_eq!(registry_view.max_in_flight(), 2);
    }
}
