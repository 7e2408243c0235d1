//! A command through the Gateway appends one commit to `AGGREGATE_EVENTS` with the exact
//! subject, every required header and the event envelope; the client's trace id is the event's.

mod common;

use common::*;

#[tokio::test]
async fn the_event_carries_subject_headers_envelope_and_the_clients_trace() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, resp) = p
        .command(
            "/v1/commands/account/acc-1",
            Some(&token),
            &[
                ("traceparent", tp),
                ("x-correlation-id", "corr-1"),
                ("tracestate", "vendor=1"),
            ],
            r#"{"type":"Open","payload":{"owner":"alice"}}"#,
        )
        .await;
    let hs = resp.headers().clone();
    let body = body_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(hs["x-correlation-id"], "corr-1");
    assert!(
        hs["traceparent"]
            .to_str()
            .unwrap()
            .contains("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(hs["etag"], "\"1\"");
    assert_eq!(body["version"], 1);
    assert_eq!(body["stream_sequence"], 1);
    let event_id = body["event_ids"][0].as_str().unwrap().to_string();

    let commits = p.commits().await;
    assert_eq!(commits.len(), 1);
    let (seq, commit, headers, subject) = &commits[0];
    assert_eq!(*seq, 1);
    assert_eq!(subject, "tenant.acme.aggregate.account.acc-1");
    let h = |n: &str| headers.get(n).map(|v| v.as_str().to_string());
    assert_eq!(h("tenant-id").as_deref(), Some("acme"));
    assert_eq!(h("Nats-Msg-Id").as_deref(), Some(event_id.as_str()));
    assert_eq!(h("x-correlation-id").as_deref(), Some("corr-1"));
    assert_eq!(h("correlation-id").as_deref(), Some("corr-1"));
    assert_eq!(
        h("trace-id").as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let traceparent = h("traceparent").unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert_eq!(h("tracestate").as_deref(), Some("vendor=1"));

    assert_eq!(commit.schema_version, 1);
    assert_eq!(commit.commit_id, event_id);
    let e = &commit.events[0];
    assert_eq!(e.event_id, event_id);
    assert_eq!(
        uuid::Uuid::parse_str(&e.event_id)
            .unwrap()
            .get_version_num(),
        7
    );
    assert_eq!(e.tenant_id, "acme");
    assert_eq!(e.aggregate_type, "account");
    assert_eq!(e.aggregate_id, "acc-1");
    assert_eq!(e.sequence, 1);
    assert_eq!(e.event_type, "Opened");
    assert_eq!(e.schema_version, 1);
    assert!(e.occurred_at.ends_with('Z'));
    assert_eq!(e.payload, serde_json::json!({"owner": "alice"}));
    assert_eq!(e.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(e.traceparent.as_deref(), Some(traceparent.as_str()));
}

#[tokio::test]
async fn a_request_without_trace_or_correlation_gets_fresh_ones() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:*"]);
    let (status, resp) = p
        .command(
            "/v1/commands/account/acc-2",
            Some(&token),
            &[],
            r#"{"type":"Open","payload":{"owner":"bob"}}"#,
        )
        .await;
    assert_eq!(status, 200);
    let cid = resp.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&cid).is_ok());
    let commits = p.commits().await;
    assert_eq!(
        commits[0].1.events[0].correlation_id.as_deref(),
        Some(cid.as_str())
    );
}

#[tokio::test]
async fn the_aggregate_node_serves_grpc_health_and_node_admin() {
    let p = Platform::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", p.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "aggregate.gateway.v1.CommandService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut admin = cloudlysis_proto::node::node_admin_client::NodeAdminClient::new(channel);
    // Without a node credential the node refuses; with an operator's it describes itself.
    let refused = admin
        .describe(cloudlysis_proto::node::DescribeRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let mut req = tonic::Request::new(cloudlysis_proto::node::DescribeRequest {});
    common::sign(&mut req, "_system", &["admin:read"]);
    let node = admin.describe(req).await.unwrap().into_inner();
    assert_eq!(node.role, "aggregate");
    assert_eq!(node.supervision.unwrap().name, "aggregate-node");
}
