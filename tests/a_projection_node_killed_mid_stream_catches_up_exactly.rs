//! kill -9 of a projection node (the real binary) mid-stream, then a restart: the view equals
//! the fold of the stream — nothing lost, nothing applied twice.

use std::process::Stdio;
use std::time::Duration;

use cloudlysis_examples::load::Deposits;
use cloudlysis_proto::projection::GetRequest;
use cloudlysis_proto::projection::query_service_client::QueryServiceClient;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::stream;
use cloudlysis_test_support::{NatsServer, view_document};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

const EVENTS: u64 = 3000;
const ACCOUNTS: u64 = 20;

async fn start_node(url: &str) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
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

    let load = Deposits {
        tenant: TenantId::new("acme").unwrap(),
        prefix: "acc-".into(),
        events: EVENTS,
        accounts: ACCOUNTS,
        amount: |i| (i % 5 + 1) as i64,
        window: 128,
    };
    let expected = load.publish(&js).await.unwrap().balances;
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
    RequestContext::new(load.tenant.clone()).inject(req.metadata_mut());
    req.metadata_mut().insert(
        "x-cloudlysis-credential",
        cloudlysis_test_support::node_credential(load.tenant.as_str(), &["queries:balances"])
            .parse()
            .unwrap(),
    );
    req.set_timeout(Duration::from_secs(60));
    let resp = client
        .get(req)
        .await
        .expect("the view caught up")
        .into_inner();
    assert!(resp.checkpoint >= last);

    for (account, sum) in &expected {
        let doc = view_document(&js, "balances", "acme", account).await;
        assert_eq!(doc["balance"], *sum, "{account}");
    }
}
