//! kill -9 of a projection node (the real binary) mid-stream, then a restart: the view equals
//! the fold of the stream — nothing lost, nothing applied twice.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use cloudlysis_proto::projection::GetRequest;
use cloudlysis_proto::projection::query_service_client::QueryServiceClient;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::envelope::{Commit, EventEnvelope};
use cloudlysis_runtime::{nats, stream, subject};
use cloudlysis_test_support::NatsServer;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

const EVENTS: u64 = 3000;
const ACCOUNTS: u64 = 20;

async fn start_node(url: &str) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .args([
            "projection",
            "--nats-url",
            url,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_remove("CLOUDLYSIS_CONFIG")
        .env("PROJECTION_MAX_IN_FLIGHT", "16")
        // Messages the crashed node held come back after the ack wait.
        .env("PROJECTION_ACK_TIMEOUT_MS", "2000")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("gRPC on ").nth(1) {
                return rest.split(',').next().unwrap().trim().to_string();
            }
        }
        panic!("projection node exited before listening");
    })
    .await
    .expect("projection node started");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_equals_the_fold_after_a_crash() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    stream::ensure_stream(&js, &stream::aggregate_events())
        .await
        .unwrap();
    let (mut node, _) = start_node(&server.url()).await;

    let tenant = TenantId::new("acme").unwrap();
    let ctx = RequestContext::new(tenant.clone());
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut publishes = futures::stream::FuturesUnordered::new();
    for i in 0..EVENTS {
        let account = format!("acc-{}", i % ACCOUNTS);
        let amount = (i % 5 + 1) as i64;
        *expected.entry(account.clone()).or_default() += amount;
        let commit = Commit {
            schema_version: 1,
            commit_id: format!("c-{i}"),
            events: vec![EventEnvelope {
                event_id: format!("e-{i}"),
                tenant_id: "acme".into(),
                aggregate_type: "account".into(),
                aggregate_id: account.clone(),
                sequence: i / ACCOUNTS + 1,
                event_type: "Deposited".into(),
                schema_version: 1,
                occurred_at: "2026-11-26T00:00:00Z".into(),
                payload: serde_json::json!({ "amount": amount }),
                correlation_id: None,
                traceparent: None,
            }],
        };
        let subj = subject::aggregate_event(
            &tenant,
            &"account".try_into().unwrap(),
            &account.as_str().try_into().unwrap(),
        );
        let (js, ctx) = (js.clone(), ctx.clone());
        publishes.push(async move {
            let payload = Bytes::from(serde_json::to_vec(&commit).unwrap());
            nats::publish(
                &js,
                subj,
                &ctx,
                &format!("c-{i}"),
                None,
                payload,
                Duration::from_secs(30),
            )
            .await
            .unwrap()
        });
        if publishes.len() >= 128 {
            publishes.next().await;
        }
    }
    while publishes.next().await.is_some() {}
    let last = js
        .get_stream("AGGREGATE_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;

    // Crash the node once it is part-way through.
    let views = loop {
        if let Ok(kv) = js.get_key_value("cloudlysis_views").await {
            break kv;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..3000 {
        if views.keys().await.unwrap().count().await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.start_kill().unwrap();
    node.wait().await.unwrap();

    let (_node, addr) = start_node(&server.url()).await;
    let mut client = QueryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(GetRequest {
        view: "balances".into(),
        key: "acc-0".into(),
        min_sequence: Some(last),
    });
    RequestContext::new(tenant.clone()).inject(req.metadata_mut());
    req.set_timeout(Duration::from_secs(60));
    let resp = client
        .get(req)
        .await
        .expect("the view caught up")
        .into_inner();
    assert!(resp.checkpoint >= last);

    for (account, sum) in &expected {
        let bytes = views
            .get(format!("balances.acme.{account}"))
            .await
            .unwrap()
            .unwrap();
        let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(record["doc"]["balance"], *sum, "{account}");
    }
}
