//! Calls to a node in the same process, without the network.
//!
//! A process that hosts a Gateway and a node (`cloudlysis dev`, the test harness, a binary that
//! embeds both) calls that node through [`LocalNode`]: the node's gRPC services behind the
//! same layers its server puts in front of them — abandoned-call counting, the node credential
//! (verified as on the wire), `node.max_in_flight` admission shared with the server — called
//! directly, with no HTTP/2 framing, HPACK, loopback TCP or hand-off between tasks. Requests
//! and answers are still gRPC messages (protobuf, metadata, status), so the node cannot tell
//! the two apart and the caller sees the same statuses. [`NodeChannel`] is what a caller holds:
//! a network channel or a local node.
//!
//! What differs: the call runs in the caller's task, so the caller's deadline (which drops the
//! call) is the node's; there is no TLS and no connection to lose.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::TryFutureExt as _;
use futures::future::{BoxFuture, Either, MapErr};
use tower::util::BoxCloneSyncService;

use crate::admission::NodeServing;

/// Errors of a call through a [`NodeChannel`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Req = http::Request<tonic::body::Body>;
type Resp = http::Response<tonic::body::Body>;

/// A node's gRPC services in this process, behind its server's layers. Cheap to clone.
#[derive(Clone)]
pub struct LocalNode {
    service: BoxCloneSyncService<Req, Resp, Infallible>,
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode").finish_non_exhaustive()
    }
}

impl LocalNode {
    /// `routes` (the node's services) behind the layers a node's server puts in front of
    /// them, with `serving`'s keys and its count of calls in flight (shared with the server).
    pub fn new(routes: tonic::service::Routes, serving: &NodeServing) -> Self {
        let service = tower::ServiceBuilder::new()
            .layer(crate::abandon::AbandonLayer)
            .layer(serving.keys.layer())
            .layer(serving.admission())
            .service(routes);
        Self {
            service: BoxCloneSyncService::new(service),
        }
    }
}

/// A channel to a node: over the network, or to a node in this process. What a gRPC client of
/// a node is built on.
#[derive(Clone, Debug)]
pub enum NodeChannel {
    /// A network channel (connects lazily, reconnects by itself).
    Remote(tonic::transport::Channel),
    /// The node is in this process.
    Local(LocalNode),
}

impl From<tonic::transport::Channel> for NodeChannel {
    fn from(channel: tonic::transport::Channel) -> Self {
        Self::Remote(channel)
    }
}

impl NodeChannel {
    /// True for a node in this process.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local(_))
    }
}

fn boxed(e: tonic::transport::Error) -> BoxError {
    Box::new(e)
}

fn never(e: Infallible) -> BoxError {
    match e {}
}

impl tower::Service<Req> for NodeChannel {
    type Response = Resp;
    type Error = BoxError;
    type Future = Either<
        MapErr<tonic::transport::channel::ResponseFuture, fn(tonic::transport::Error) -> BoxError>,
        MapErr<BoxFuture<'static, Result<Resp, Infallible>>, fn(Infallible) -> BoxError>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Self::Remote(c) => c.poll_ready(cx).map_err(boxed),
            Self::Local(l) => l.service.poll_ready(cx).map_err(never),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self {
            Self::Remote(c) => Either::Left(c.call(request).map_err(boxed as fn(_) -> _)),
            Self::Local(l) => Either::Right(l.service.call(request).map_err(never as fn(_) -> _)),
        }
    }
}
