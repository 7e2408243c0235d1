//! `cloudlysis all` as an operator deploys it: the streams created with `cloudlysis streams
//! ensure`, a token minted with `cloudlysis token`, then one process with the configured secrets
//! serving the Gateway and all three nodes. The demo walkthrough (a command, the query that sees
//! it, a transfer saga to completion) works through its HTTP port; the Gateway calls its nodes
//! in process (`cloudlysis_gateway_local_nodes` is 1 per role) while each node still answers
//! gRPC health on its own port; `/ready` is 200. On SIGTERM the runner drains first and the
//! process exits 0. Without a secret, or with one advertised address for its three nodes, it
//! refuses to start and names the setting.

mod common;

use std::time::Duration;

use cloudlysis_test_support::{NatsServer, eventually, http_get};
use common::all::{cloudlysis, prepare, sh, spawn_all};

async fn serving(grpc: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn cloudlysis_all_serves_the_walkthrough_in_process_and_drains_on_sigterm() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let token = prepare(&url).await;

    let (mut child, mut lines, http, grpc) = spawn_all(&url, &[]).await;
    let ready = eventually(Duration::from_secs(30), || {
        let http = http.clone();
        async move { matches!(http_get(&format!("{http}/ready")).await, Ok((200, _))) }
    })
    .await;
    assert!(ready, "{:?}", http_get(&format!("{http}/ready")).await);

    // The walkthrough `cloudlysis dev` prints, against this process.
    let curls: Vec<String> = cloudlysis::demo::dev_hints(&http, &token)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("curl").map(|c| format!("curl{c}")))
        .collect();
    assert_eq!(curls.len(), 6, "{curls:?}");
    let mut outputs = Vec::new();
    for curl in &curls[..5] {
        outputs.push(sh(curl).await);
    }
    assert!(outputs[0].contains(r#""version":1"#), "{}", outputs[0]);
    assert!(outputs[1].contains(r#""owner":"alice""#), "{}", outputs[1]);
    assert!(
        outputs[4].contains(r#""status":"running""#),
        "{}",
        outputs[4]
    );
    let read = curls[5].clone();
    let completed = eventually(Duration::from_secs(30), || {
        let read = read.clone();
        async move { sh(&read).await.contains(r#""status":"completed""#) }
    })
    .await;
    assert!(completed, "the transfer completed: {}", sh(&read).await);

    // The Gateway called its nodes in process; each node still serves gRPC on its own port.
    let (status, metrics) = http_get(&format!("{http}/metrics")).await.unwrap();
    assert_eq!(status, 200);
    for role in ["aggregate", "projection", "runner"] {
        let series = format!("cloudlysis_gateway_local_nodes{{role=\"{role}\"}} 1");
        assert!(metrics.contains(&series), "{series} in /metrics");
    }
    for addr in &grpc {
        assert_eq!(serving(addr).await, 1, "gRPC health SERVING on {addr}");
    }

    // SIGTERM: the runner drains first, then the process exits 0.
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("cloudlysis all exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut said = Vec::new();
    while let Ok(line) = lines.try_recv() {
        said.push(line);
    }
    let said = said.join("\n");
    assert!(said.contains("draining the runner"), "{said}");
    assert!(said.contains("runner drained"), "{said}");
}

#[tokio::test]
async fn cloudlysis_all_refuses_to_start_without_a_secret_or_with_one_address_for_three_nodes() {
    let run = |cmd: &mut tokio::process::Command| {
        let out = cmd.output();
        async move {
            let out = out.await.unwrap();
            assert!(!out.status.success());
            String::from_utf8_lossy(&out.stderr).to_string()
        }
    };
    let no_jwt = run(cloudlysis(&["all"]).env_remove("CLOUDLYSIS_JWT_SECRET")).await;
    assert!(no_jwt.contains("gateway.jwt_secret"), "{no_jwt}");
    let no_node = run(cloudlysis(&["all"]).env_remove("CLOUDLYSIS_NODE_SECRET")).await;
    assert!(no_node.contains("node.secret"), "{no_node}");
    // Under registry placement its three nodes register, and one address cannot be all three.
    let shared = run(cloudlysis(&["all"])
        .env("CLOUDLYSIS_GATEWAY_PLACEMENT", "registry")
        .env("CLOUDLYSIS_NODE_ADVERTISE_ADDR", "10.0.0.5:50051"))
    .await;
    assert!(
        shared.contains("node.advertise_addr") && shared.contains("aggregate.advertise_addr"),
        "{shared}"
    );
    // A node bound where no one can dial it needs its role's address.
    let unspecified = run(cloudlysis(&["all", "--http-addr", "127.0.0.1:0"])
        .env("CLOUDLYSIS_GATEWAY_PLACEMENT", "registry")
        .env("CLOUDLYSIS_GRPC_ADDR", "127.0.0.1:0")
        .env("CLOUDLYSIS_PROJECTION_GRPC_ADDR", "0.0.0.0:0")
        .env("CLOUDLYSIS_RUNNER_GRPC_ADDR", "127.0.0.1:0"))
    .await;
    assert!(
        unspecified.contains("projection.advertise_addr"),
        "{unspecified}"
    );
    let placement = run(cloudlysis(&["all"]).env("CLOUDLYSIS_GATEWAY_PLACEMENT", "nearest")).await;
    assert!(placement.contains("gateway.placement"), "{placement}");
}
