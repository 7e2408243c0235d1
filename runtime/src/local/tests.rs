//! Unit tests of typed calls to a node in this process: the same refusals as the node's server
//! layers, in the same order, and the request the service gets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tower::ServiceExt as _;

use super::*;
use crate::context::headers;
use crate::credential::{Caller, NodeKeys};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";
const EXECUTE: &str = "/aggregate.gateway.v1.CommandService/Execute";

/// A message of any size.
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "vec", tag = "1")]
    bytes: Vec<u8>,
}

fn node(max_in_flight: usize) -> (LocalNode, NodeServing) {
    let serving = NodeServing::new(NodeKeys::new(SECRET).unwrap(), max_in_flight);
    (
        LocalNode::new(tonic::service::Routes::default(), &serving),
        serving,
    )
}

fn credential(keys: &[u8], tenant: &str) -> String {
    NodeKeys::new(keys)
        .unwrap()
        .sign("gateway", tenant, &["commands:account".into()])
        .unwrap()
}

/// A request as a caller builds it: message, metadata, deadline.
fn request(credential: Option<&str>, tenant: Option<&str>, bytes: usize) -> tonic::Request<Blob> {
    let mut r = tonic::Request::new(Blob {
        bytes: vec![7; bytes],
    });
    if let Some(c) = credential {
        r.metadata_mut()
            .insert(headers::NODE_CREDENTIAL, c.parse().unwrap());
    }
    if let Some(t) = tenant {
        r.metadata_mut()
            .insert(headers::TENANT_ID, t.parse().unwrap());
    }
    r.metadata_mut()
        .insert(headers::ACTOR, "forged".parse().unwrap());
    r.set_timeout(Duration::from_secs(5));
    r
}

/// The status the node's server layers answer `request` with (the HTTP path of a local node).
async fn over_http(node: &LocalNode, request: tonic::Request<Blob>) -> tonic::Status {
    let mut http = http::Request::post(EXECUTE)
        .body(tonic::body::Body::empty())
        .unwrap();
    *http.headers_mut() = request.into_parts().0.into_headers();
    let response = NodeChannel::Local(node.clone())
        .oneshot(http)
        .await
        .unwrap();
    tonic::Status::from_header_map(response.headers()).expect("a refusal")
}

#[tokio::test]
async fn typed_calls_are_refused_as_the_servers_layers_refuse_them() {
    let (node, serving) = node(1);
    let ours = credential(SECRET, "acme");
    let foreign = credential(OTHER, "acme");
    let cases: [(&str, Option<&str>, Option<&str>); 4] = [
        ("no credential", None, None),
        ("a foreign credential", Some(&foreign), None),
        ("another tenant", Some(&ours), Some("globex")),
        ("the node is full", Some(&ours), None),
    ];
    for (case, credential, tenant) in cases {
        let _held =
            (case == "the node is full").then(|| serving.admission().try_admit(EXECUTE).unwrap());
        let called = AtomicBool::new(false);
        let typed = node
            .unary(EXECUTE, request(credential, tenant, 1), |_| async {
                called.store(true, Ordering::SeqCst);
                Ok(tonic::Response::new(Blob::default()))
            })
            .await
            .expect_err(case);
        let wire = over_http(&node, request(credential, tenant, 1)).await;
        assert!(!called.load(Ordering::SeqCst), "{case}: no handler ran");
        assert_eq!(
            (typed.code(), typed.message()),
            (wire.code(), wire.message()),
            "{case}"
        );
        assert_eq!(
            typed.metadata().get(crate::admission::PUSHBACK_TRAILER),
            wire.metadata().get(crate::admission::PUSHBACK_TRAILER),
            "{case}: the same retry hint"
        );
        assert_eq!(
            crate::outcome::ErrorKind::of(&typed),
            crate::outcome::ErrorKind::of(&wire),
            "{case}: the same outcome mark"
        );
    }
    assert_eq!(serving.in_flight(), 0);
}

#[tokio::test]
async fn a_typed_call_reaches_the_service_with_the_verified_caller_and_its_metadata() {
    let (node, serving) = node(4);
    let token = credential(SECRET, "acme");
    let in_flight = serving.clone();
    let reply = node
        .unary(EXECUTE, request(Some(&token), None, 3), |r| async move {
            let caller = Caller::of(&r)?;
            assert_eq!(caller.tenant.as_str(), "acme");
            let m = r.metadata();
            assert_eq!(m.get(headers::TENANT_ID).unwrap(), "acme", "pinned");
            assert_eq!(m.get(headers::ACTOR).unwrap(), "gateway", "pinned");
            assert_eq!(m.get("grpc-timeout").unwrap(), "5000000u");
            assert_eq!(in_flight.in_flight(), 1, "the call holds a place");
            Ok(tonic::Response::new(Blob {
                bytes: r.into_inner().bytes.repeat(2),
            }))
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().bytes, vec![7; 6]);
    assert_eq!(serving.in_flight(), 0, "the place is given back");

    // A call dropped before its answer gives its place back too.
    let pending = node.unary(EXECUTE, request(Some(&token), None, 1), |_| {
        std::future::pending::<Result<tonic::Response<Blob>, tonic::Status>>()
    });
    let timed_out = tokio::time::timeout(Duration::from_millis(1), pending).await;
    assert!(timed_out.is_err());
    assert_eq!(serving.in_flight(), 0);
}

#[tokio::test]
async fn a_status_from_the_service_reaches_the_caller_as_over_the_wire() {
    let (node, _serving) = node(4);
    let token = credential(SECRET, "acme");
    let status = node
        .unary(EXECUTE, request(Some(&token), None, 1), |_| async {
            let mut s = tonic::Status::from_error(Box::new(std::io::Error::other("inner")));
            s.metadata_mut().insert("x-mark", "kept".parse().unwrap());
            Err::<tonic::Response<Blob>, _>(s)
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert_eq!(status.metadata().get("x-mark").unwrap(), "kept");
    assert!(
        std::error::Error::source(&status).is_none(),
        "no source crosses the wire, so none crosses here"
    );
}

#[tokio::test]
async fn messages_over_tonics_limit_are_refused_both_ways() {
    let (node, _serving) = node(4);
    let token = credential(SECRET, "acme");
    let called = AtomicBool::new(false);
    let big = node
        .unary(
            EXECUTE,
            request(Some(&token), None, MAX_MESSAGE_BYTES),
            |_| async {
                called.store(true, Ordering::SeqCst);
                Ok(tonic::Response::new(Blob::default()))
            },
        )
        .await
        .unwrap_err();
    assert_eq!(big.code(), tonic::Code::OutOfRange, "{big:?}");
    assert!(!called.load(Ordering::SeqCst), "the handler never ran");

    let answer = node
        .unary(EXECUTE, request(Some(&token), None, 1), |_| async {
            Ok(tonic::Response::new(Blob {
                bytes: vec![0; MAX_MESSAGE_BYTES],
            }))
        })
        .await
        .unwrap_err();
    assert_eq!(answer.code(), tonic::Code::OutOfRange, "{answer:?}");
    assert!(
        answer
            .message()
            .contains("decoded message length too large"),
        "{answer:?}"
    );
}
