//! gRPC plumbing every node shares: serving its services behind its layers, the caller's
//! deadline from `grpc-timeout`, and server reflection (v1 and v1alpha, so older clients such as
//! grpcurl 1.8 can list services too).

use std::future::Future;
use std::time::Duration;

use cloudlysis_runtime::admission::NodeServing;

use tonic::metadata::MetadataMap;

/// Adds server reflection, v1 and v1alpha, over every Cloudlysis service to `router`. A
/// reflection service that cannot be built is logged and left out (the node still serves).
pub fn with_reflection<L>(
    mut router: tonic::transport::server::Router<L>,
) -> tonic::transport::server::Router<L> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cloudlysis_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    match builder().build_v1() {
        Ok(v1) => router = router.add_service(v1),
        Err(e) => tracing::error!(error = %e, "reflection v1 could not be built"),
    }
    match builder().build_v1alpha() {
        Ok(v1alpha) => router = router.add_service(v1alpha),
        Err(e) => tracing::error!(error = %e, "reflection v1alpha could not be built"),
    }
    router
}

/// Serves a node's `routes` on `listener` until `shutdown` resolves, behind the layers every
/// node puts in front of its services — the same ones a caller in the process goes through
/// ([`cloudlysis_runtime::local::LocalNode::new`]) — plus reflection: work whose caller has gone
/// is counted, and every call but health and reflection needs a node credential verified by
/// `serving.keys`, then a place within `serving`'s `node.max_in_flight`. No Nagle (small unary
/// replies must not wait for a delayed ACK), TCP keepalive every 60 s.
pub async fn serve(
    routes: tonic::service::Routes,
    serving: &NodeServing,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let router = serving
        .server()?
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(cloudlysis_runtime::abandon::AbandonLayer)
        .layer(serving.keys.layer())
        .layer(serving.admission())
        .add_routes(routes);
    with_reflection(router)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            shutdown,
        )
        .await
}

/// The answer to a call whose service panicked — a bug — caught by [`serve`]'s outermost layer
/// instead of resetting the call's stream: `INTERNAL`, marked `outcome-unknown` (the call may
/// have done its work before it failed), logged at error and counted in
/// `cloudlysis_node_call_panics_total`.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> http::Response<tonic::body::Body> {
    let message = cloudlysis_runtime::mailbox::panic_message(&panic);
    tracing::error!(panic = %message, "a node's call panicked");
    metrics::counter!(cloudlysis_runtime::metrics::names::NODE_CALL_PANICS).increment(1);
    let status = tonic::Status::internal(
        "the node failed while handling this call (a bug; its log has the panic); whether it \
         took effect is not known",
    );
    cloudlysis_runtime::outcome::ErrorKind::OutcomeUnknown
        .mark(status)
        .into_http()
}

/// Margin kept from the caller's deadline so an answer still reaches it in time: at most this,
/// and at most a fifth of the deadline (a caller asking for 20 ms leaves the node 16, not none).
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

pub use cloudlysis_runtime::abandon::parse_grpc_timeout;

/// The instant by which the caller of a request wants its answer (its `grpc-timeout` minus
/// [`DEADLINE_MARGIN`], or a fifth of it when that is less), or `None` when it set no deadline.
pub fn deadline(metadata: &MetadataMap) -> Option<tokio::time::Instant> {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| tokio::time::Instant::now() + t.saturating_sub(DEADLINE_MARGIN.min(t / 5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short deadline keeps a proportional margin, not all of itself. (Found by using the
    /// platform: with `x-request-timeout-ms` of 50 or less the fixed 50 ms margin left the node
    /// no time at all, and every such command was a 504.)
    #[tokio::test(start_paused = true)]
    async fn a_short_deadline_leaves_the_node_most_of_it() {
        let at = |timeout: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", timeout.parse().unwrap());
            deadline(&m).unwrap() - tokio::time::Instant::now()
        };
        assert_eq!(at("20m"), Duration::from_millis(16));
        assert_eq!(at("250m"), Duration::from_millis(200));
        assert_eq!(at("5S"), Duration::from_millis(4950));
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_refuse_garbage() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "5", "S", "5s", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
