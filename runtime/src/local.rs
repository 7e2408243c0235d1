//! Calls to a node in the same process, without the network.
//!
//! A process that hosts a Gateway and a node (`cloudlysis dev`, the test harness, a binary that
//! embeds both) calls that node through [`LocalNode`]: the node's gRPC services behind the
//! same layers its server puts in front of them — abandoned-call counting, the node credential
//! (verified as on the wire), `node.max_in_flight` admission shared with the server — called
//! directly, with no HTTP/2 framing, HPACK, loopback TCP or hand-off between tasks. Through
//! [`NodeChannel`]'s `tower::Service` requests and answers are still gRPC messages (protobuf,
//! metadata, status); typed calls (below) skip the protobuf. Either way the node cannot tell the
//! paths apart and the caller sees the same statuses. [`NodeChannel`] is what a caller holds: a
//! network channel or a local node.
//!
//! What differs: the call runs in the caller's task, so the caller's deadline (which drops the
//! call) is the node's; there is no TLS and no connection to lose.
//!
//! **Typed calls.** A node may also give its service to [`LocalNode::with_typed`] (as
//! `Arc<dyn Service>` of the generated trait); a caller that finds it
//! ([`NodeChannel::local_typed`]) calls it with [`LocalNode::unary`]: the same request — message,
//! metadata, `grpc-timeout` — and the same checks in the same order (abandoned-call counting,
//! credential, admission, tonic's message size limit of [`MAX_MESSAGE_BYTES`] each way), without
//! encoding the message to protobuf and framing it into an HTTP body to decode it again. The
//! service gets a `tonic::Request` with the caller's metadata and the verified [`Caller`]; the
//! caller gets its `tonic::Response` or `Status` as it is — without a `source`, which a status
//! never carries across the wire (`outcome::not_taken` reads it). The Gateway's commands and
//! queries and the runner's command client call so.
//!
//! [`Caller`]: crate::credential::Caller

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::TryFutureExt as _;
use futures::future::{BoxFuture, Either, MapErr};
use tower::util::BoxCloneSyncService;

use crate::abandon::Watch;
use crate::admission::{AdmitLayer, NodeServing};
use crate::credential::NodeKeys;

/// Errors of a call through a [`NodeChannel`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Req = http::Request<tonic::body::Body>;
type Resp = http::Response<tonic::body::Body>;

/// The largest message tonic decodes by default — on a node's server (requests) and in a
/// client (answers); neither side raises it. A typed call refuses a bigger message with the
/// status the wire gives.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// A node's gRPC services in this process, behind its server's layers. Cheap to clone.
#[derive(Clone)]
pub struct LocalNode {
    service: BoxCloneSyncService<Req, Resp, Infallible>,
    typed: Arc<Typed>,
}

/// What typed calls need: the server layers' checks and the typed services.
#[derive(Clone)]
struct Typed {
    keys: NodeKeys,
    admission: AdmitLayer,
    services: http::Extensions,
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
        let admission = serving.admission();
        let service = tower::ServiceBuilder::new()
            .layer(crate::abandon::AbandonLayer)
            .layer(serving.keys.layer())
            .layer(admission.clone())
            .service(routes);
        Self {
            service: BoxCloneSyncService::new(service),
            typed: Arc::new(Typed {
                keys: serving.keys.clone(),
                admission,
                services: http::Extensions::new(),
            }),
        }
    }

    /// Also serves `service` to typed calls (see the module docs): an `Arc<dyn Trait>` of one
    /// of the node's generated service traits, found again by that type.
    pub fn with_typed<T: Clone + Send + Sync + 'static>(mut self, service: T) -> Self {
        Arc::make_mut(&mut self.typed).services.insert(service);
        self
    }

    /// The service of type `T` given to [`LocalNode::with_typed`], if any.
    pub fn typed<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.typed.services.get::<T>().cloned()
    }

    /// Calls the method at `path` (`/package.Service/Method`) with `request` through `call` (the
    /// typed service's method), behind the checks the node's server makes, in its order: counted
    /// if abandoned, refused without a valid credential, beyond `node.max_in_flight`, or with a
    /// message over [`MAX_MESSAGE_BYTES`]; an answer over it is refused as a client would.
    pub async fn unary<Q, R, F, Fut>(
        &self,
        path: &str,
        request: tonic::Request<Q>,
        call: F,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        Q: prost::Message,
        R: prost::Message,
        F: FnOnce(tonic::Request<Q>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        debug_assert!(
            crate::credential::required_right(path) != crate::credential::MethodRight::Unknown,
            "{path} is no method of a node"
        );
        let mut watch = Watch::new(
            request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
        );
        let answer: Result<_, tonic::Status> = async {
            let (metadata, mut extensions, message) = request.into_parts();
            let mut headers = metadata.into_headers();
            self.typed
                .keys
                .admit_parts(path, &mut headers, &mut extensions)
                .map_err(|e| e.refuse(path))?;
            let _permit = self.typed.admission.try_admit(path)?;
            within_limit(message.encoded_len())?;
            let request = tonic::Request::from_parts(
                tonic::metadata::MetadataMap::from_headers(headers),
                extensions,
                message,
            );
            let response = call(request).await.map_err(as_on_the_wire)?;
            within_limit(response.get_ref().encoded_len())?;
            Ok(response)
        }
        .await;
        watch.answered(matches!(&answer, Err(s) if s.code() == tonic::Code::DeadlineExceeded));
        answer
    }
}

/// `status` as a caller over the wire gets it: code, message, details and metadata, no `source`
/// (the wire carries none, and `outcome::not_taken` would read one as a call never taken).
fn as_on_the_wire(status: tonic::Status) -> tonic::Status {
    if std::error::Error::source(&status).is_none() {
        return status;
    }
    tonic::Status::with_details_and_metadata(
        status.code(),
        status.message(),
        status.details().to_vec().into(),
        status.metadata().clone(),
    )
}

/// tonic's refusal of a message over [`MAX_MESSAGE_BYTES`], word for word.
fn within_limit(len: usize) -> Result<(), tonic::Status> {
    if len > MAX_MESSAGE_BYTES {
        return Err(tonic::Status::out_of_range(format!(
            "Error, decoded message length too large: found {len} bytes, the limit is: {MAX_MESSAGE_BYTES} bytes"
        )));
    }
    Ok(())
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

    /// The node in this process and its typed service `T`, if it is here and gave one
    /// ([`LocalNode::with_typed`]): call it with [`LocalNode::unary`].
    pub fn local_typed<T: Clone + Send + Sync + 'static>(&self) -> Option<(&LocalNode, T)> {
        match self {
            Self::Local(node) => node.typed::<T>().map(|service| (node, service)),
            Self::Remote(_) => None,
        }
    }

    /// Calls the unary method at `path`: through `local` with the node's typed service `S` when
    /// the node is in this process and gave one ([`LocalNode::unary`]), else through `remote`
    /// (the generated client on this channel).
    pub async fn unary<S, Q, R, L, LF, W, WF>(
        self,
        path: &str,
        request: tonic::Request<Q>,
        local: L,
        remote: W,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        S: Clone + Send + Sync + 'static,
        Q: prost::Message,
        R: prost::Message,
        L: FnOnce(S, tonic::Request<Q>) -> LF,
        LF: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
        W: FnOnce(Self, tonic::Request<Q>) -> WF,
        WF: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        if let Some((node, service)) = self.local_typed::<S>() {
            return node.unary(path, request, |r| local(service, r)).await;
        }
        remote(self, request).await
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

#[cfg(test)]
mod tests;
