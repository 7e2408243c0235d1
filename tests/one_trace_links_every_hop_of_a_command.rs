//! One trace across processes: `cloudlysis dev` with OTLP export on, a command through the
//! Gateway (no client `traceparent`), and an in-process OTLP receiver. The command's trace id —
//! the one the Gateway answers with — has a span from the Gateway, the aggregate node's
//! handling, the publish and the projection's consumer, and no span's parent is missing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;

/// An OTLP trace receiver that keeps every span it gets.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_trace_has_every_hop_and_no_orphan() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let r = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });

    let dir = tempfile::tempdir().unwrap();
    let otlp_endpoint = format!("http://{otlp}");
    let mut dev = cloudlysis_test_support::Dev::start(
        env!("CARGO_BIN_EXE_cloudlysis"),
        &dir.path().join("data"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let open = dev.curls.first().cloned();

    // The printed command, with its response headers: the Gateway's traceparent names the trace.
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(open.unwrap().replacen("curl -s", "curl -s -D -", 1))
        .output()
        .await
        .unwrap();
    let response = String::from_utf8_lossy(&out.stdout).to_string();
    let traceparent = response
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent in {response}"))
        .trim()
        .to_string();
    let trace_id = traceparent.split('-').nth(1).unwrap().to_string();

    // Wait for the four hops of that trace.
    let wanted = [
        "POST /v1/commands",
        "CommandService/Execute",
        "publish",
        "consume",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans: Vec<Span> = loop {
        let spans: Vec<Span> = receiver
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        let complete = wanted
            .iter()
            .all(|w| spans.iter().any(|s| s.name.starts_with(w)));
        if complete || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    eprintln!("trace {trace_id}: {names:?}");
    for w in wanted {
        assert!(
            names.iter().any(|n| n.starts_with(w)),
            "no `{w}` span in {names:?}"
        );
    }
    // No orphans: every parent is a span of the trace, and exactly one span is the root.
    let ids: HashSet<String> = spans.iter().map(|s| hex(&s.span_id)).collect();
    let by_id: HashMap<String, &str> = spans
        .iter()
        .map(|s| (hex(&s.span_id), s.name.as_str()))
        .collect();
    let roots: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:?}");
    assert!(roots[0].starts_with("POST /v1/commands"), "{roots:?}");
    for s in &spans {
        if !s.parent_span_id.is_empty() {
            assert!(
                ids.contains(&hex(&s.parent_span_id)),
                "`{}` is orphaned (parent {} not in {by_id:?})",
                s.name,
                hex(&s.parent_span_id)
            );
        }
    }
    let _ = dev.child.kill().await;
}
