//! `/ready` says whether a process can serve. A node whose NATS server stops answering (frozen
//! here with SIGSTOP: the TCP connection stays up) is not ready, and is ready again only once
//! JetStream answers — then a command succeeds at once. Before, `/ready` looked only at the
//! connection state and stayed 200 while every command timed out. The Gateway is ready only
//! while a node of every role it routes to answers its health check; before, it checked nothing.

mod common;

use std::time::Duration;

use cloudlysis_proto::aggregate::ExecuteRequest;
use cloudlysis_proto::aggregate::command_service_client::CommandServiceClient;
use cloudlysis_runtime::{RequestContext, TenantId};
use cloudlysis_test_support::{NatsServer, eventually, http_get};
use common::Platform;

async fn ready(http: &str) -> (u16, String) {
    http_get(&format!("{http}/ready"))
        .await
        .unwrap_or((0, "no answer".into()))
}

/// Waits (20 s at most) for `/ready` to answer 200.
async fn until_ready(http: &str) {
    let ok = eventually(Duration::from_secs(20), || async {
        ready(http).await.0 == 200
    })
    .await;
    assert!(ok, "never ready: {:?}", ready(http).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_not_ready_while_jetstream_does_not_answer_and_serves_once_it_is() {
    let server = NatsServer::start().await.unwrap();
    let (_child, grpc, http) = common::spawn_aggregate(&server.url(), &[]).await;
    until_ready(&http).await;

    server.pause().unwrap();
    let last = std::sync::Mutex::new((0, String::new()));
    let unready = eventually(Duration::from_secs(20), || async {
        let answer = ready(&http).await;
        let done = answer.0 == 503 && answer.1.contains("jetstream");
        *last.lock().unwrap() = answer;
        done
    })
    .await;
    server.resume().unwrap();
    assert!(
        unready,
        "still ready with NATS frozen: {:?}",
        last.lock().unwrap()
    );

    assert!(
        eventually(Duration::from_secs(30), || async {
            ready(&http).await.0 == 200
        })
        .await,
        "not ready again: {:?}",
        ready(&http).await
    );
    // Ready means it serves: a command right now succeeds.
    let mut client = CommandServiceClient::new(common::node_channel(&grpc).await);
    let mut req = tonic::Request::new(ExecuteRequest {
        aggregate_type: "account".into(),
        aggregate_id: "a-1".into(),
        command_type: "Open".into(),
        payload_json: br#"{"owner":"o"}"#.to_vec(),
        expected_version: None,
    });
    RequestContext::new(TenantId::new("acme").unwrap()).inject(req.metadata_mut());
    common::sign(&mut req, "acme", &["commands:account"]);
    req.set_timeout(Duration::from_secs(10));
    let reply = client.execute(req).await.unwrap().into_inner();
    assert_eq!(reply.version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_connection_known_down_jetstream_is_not_asked_and_the_check_says_why() {
    let mut server = NatsServer::start().await.unwrap();
    let (_child, _grpc, http) = common::spawn_aggregate(&server.url(), &[]).await;
    until_ready(&http).await;
    server.stop().await.unwrap();
    // Both checks fail, and the JetStream one says the connection is down rather than that its
    // request timed out.
    let last = std::sync::Mutex::new((0, String::new()));
    let said = eventually(Duration::from_secs(20), || async {
        let answer = ready(&http).await;
        let done = answer.0 == 503
            && answer.1.contains("nats connection is disconnected")
            && answer.1.contains("not asked: the nats connection is");
        *last.lock().unwrap() = answer;
        done
    })
    .await;
    assert!(said, "{:?}", last.lock().unwrap());
}

#[tokio::test]
async fn the_gateway_is_ready_only_while_every_role_it_routes_to_answers() {
    let mut p = Platform::start().await;
    // No runner yet: the Gateway cannot start workflows.
    let report = p.gateway.readiness().evaluate().await;
    let failing: Vec<_> = report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect();
    assert!(!report.ready);
    assert_eq!(failing, ["runner"], "{report:?}");

    let client = p.command_client();
    p.start_runner(move |b| {
        b.workflow::<cloudlysis_examples::transfer::Transfer>()
            .effect(cloudlysis_examples::transfer::WithdrawEffect(
                client.clone(),
            ))
            .effect(cloudlysis_examples::transfer::DepositEffect(client))
    })
    .await;
    let report = p.gateway.readiness().evaluate().await;
    assert!(report.ready, "{report:?}");

    // The aggregate node goes away: not ready, naming it.
    p.stop_node().await;
    let report = p.gateway.readiness().evaluate().await;
    assert!(!report.ready);
    let aggregate = report
        .checks
        .iter()
        .find(|c| c.name == "aggregate")
        .unwrap();
    assert!(!aggregate.ok, "{report:?}");
    assert!(
        aggregate
            .error
            .as_deref()
            .unwrap_or("")
            .contains("127.0.0.1"),
        "{report:?}"
    );
}

/// The node's gRPC health (service `""`, what the Gateway's `/ready` and a gRPC load balancer
/// ask), or the code of the status it answered with.
async fn grpc_health(grpc: &str) -> Result<i32, tonic::Code> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let mut client = HealthClient::new(common::node_channel(grpc).await);
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(Duration::from_secs(3));
    client
        .check(req)
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_grpc_health_is_not_serving_while_it_is_not_ready_and_serving_after() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut server = NatsServer::start().await.unwrap();
    let (_child, grpc, http) = common::spawn_aggregate(&server.url(), &[]).await;
    until_ready(&http).await;
    let serving = Ok(ServingStatus::Serving as i32);
    assert_eq!(grpc_health(&grpc).await, serving);

    // NATS goes away: `/ready` is 503, and so the gRPC health says — before, it stayed
    // SERVING, and a Gateway asking it stayed ready while every command answered 503.
    server.stop().await.unwrap();
    let last = std::sync::Mutex::new(Ok(0));
    let not_serving = eventually(Duration::from_secs(20), || async {
        let answer = grpc_health(&grpc).await;
        *last.lock().unwrap() = answer;
        answer == Ok(ServingStatus::NotServing as i32)
    })
    .await;
    assert!(
        not_serving,
        "gRPC health with NATS down: {:?}",
        last.lock().unwrap()
    );
    assert_eq!(ready(&http).await.0, 503);

    // Back once NATS is.
    server.restart().await.unwrap();
    let back = eventually(Duration::from_secs(30), || async {
        grpc_health(&grpc).await == serving
    })
    .await;
    assert!(
        back,
        "gRPC health after NATS came back: {:?}",
        grpc_health(&grpc).await
    );
}
