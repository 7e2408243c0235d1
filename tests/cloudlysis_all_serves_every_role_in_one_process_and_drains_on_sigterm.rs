//! `cloudlysis all` as an operator deploys it: the streams created with `cloudlysis streams
//! ensure`, a token minted with `cloudlysis token`, then one process with the configured secrets
//! serving the Gateway and all three nodes. The demo walkthrough (a command, the query that sees
//! it, a transfer saga to completion) works through its HTTP port; the Gateway calls its nodes
//! in process (`cloudlysis_gateway_local_nodes` is 1 per role) while each node still answers
//! gRPC health on its own port; `/ready` is 200. On SIGTERM the runner drains first and the
//! process exits 0. Two of them with registry placement share the entities, each on one node.
//! Without a secret, or with one advertised address for its three nodes, it refuses to start
//! and names the setting.

use std::time::Duration;

use cloudlysis_test_support::{NatsServer, eventually, http_get};
use tokio::io::{AsyncBufReadExt, BufReader};

const JWT_SECRET: &str = "all-in-one-test-jwt-secret-0123456789";

fn cloudlysis(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"));
    cmd.args(args)
        .env_remove("CLOUDLYSIS_CONFIG")
        .env_remove("CLOUDLYSIS_GATEWAY_PLACEMENT")
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .env("CLOUDLYSIS_JWT_SECRET", JWT_SECRET)
        .kill_on_drop(true);
    cmd
}

/// `cloudlysis all` on ephemeral ports, with `env` besides: the child, its stderr lines, and
/// the Gateway's URL with the three gRPC addresses from its start line.
async fn spawn_all(
    nats: &str,
    env: &[(&str, &str)],
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    String,
    Vec<String>,
) {
    let mut child = cloudlysis(&["all", "--nats-url", nats, "--http-addr", "127.0.0.1:0"])
        .env("CLOUDLYSIS_GRPC_ADDR", "127.0.0.1:0")
        .env("CLOUDLYSIS_PROJECTION_GRPC_ADDR", "127.0.0.1:0")
        .env("CLOUDLYSIS_RUNNER_GRPC_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = tx.send(line);
        }
    });
    let start = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.recv().await {
            if line.contains("Gateway HTTP on ") {
                return line;
            }
        }
        panic!("cloudlysis all exited before serving");
    })
    .await
    .expect("cloudlysis all started");
    let after = |marker: &str| -> String {
        start
            .split(marker)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{marker:?} in {start:?}"))
            .to_string()
    };
    let http = after("Gateway HTTP on ");
    let grpc = [
        "aggregate gRPC on ",
        "projection gRPC on ",
        "runner gRPC on ",
    ]
    .iter()
    .map(|m| after(m))
    .collect();
    (child, lines, http, grpc)
}

async fn sh(script: &str) -> String {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .expect("sh and curl run");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

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

/// The streams ensured and a user token of tenant `demo`, as an operator prepares a deployment.
async fn prepare(url: &str) -> String {
    let ensured = cloudlysis(&["streams", "ensure", "--nats-url", url])
        .output()
        .await
        .unwrap();
    assert!(
        ensured.status.success(),
        "{}",
        String::from_utf8_lossy(&ensured.stderr)
    );
    let minted = cloudlysis(&[
        "token",
        "--tenant",
        "demo",
        "--rights",
        "commands:*,queries:*,workflows:*",
    ])
    .output()
    .await
    .unwrap();
    assert!(minted.status.success());
    String::from_utf8_lossy(&minted.stdout).trim().to_string()
}

/// The sum of the series of `metric` whose labels contain `label`, on `/metrics` at `http`.
async fn metric(http: &str, metric: &str, label: &str) -> f64 {
    let (_, text) = http_get(&format!("{http}/metrics")).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// POSTs a command to account `id` through the Gateway at `http`, with `key` as its
/// `Idempotency-Key` if given: the answer's status and body.
async fn command(
    http: &str,
    token: &str,
    id: &str,
    body: &str,
    key: Option<&str>,
) -> (u16, String) {
    let key = key.map_or(String::new(), |k| format!(" -H 'Idempotency-Key: {k}'"));
    let out = sh(&format!(
        "curl -s -w '\\n%{{http_code}}' -X POST {http}/v1/commands/account/{id}{key} \
         -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{body}'"
    ))
    .await;
    let (body, status) = out.trim_end().rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

/// Live `account` entities of the process at `http`.
async fn live(http: &str) -> f64 {
    metric(http, "cloudlysis_entities{", "account").await
}

const ACCOUNTS: usize = 24;
const DEPOSIT: &str = r#"{"type":"Deposit","payload":{"amount":5}}"#;

/// Two `cloudlysis all` processes with `gateway.placement = registry` share one deployment:
/// each registers its nodes, and an entity's commands go to one aggregate node whichever
/// process's Gateway takes them — its own node in process, the other's over gRPC. When one
/// process stops (SIGTERM), its nodes leave the registry first and its entities answer from the
/// other process, every acknowledged command kept. Before, `all` refused registry placement, so
/// two of them each owned every entity they were sent.
#[tokio::test]
async fn two_all_processes_place_each_entity_on_one_node_by_the_registry() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let token = prepare(&url).await;
    let registry = [("CLOUDLYSIS_GATEWAY_PLACEMENT", "registry")];
    let (mut a, mut a_said, http_a, _) = spawn_all(&url, &registry).await;
    let (_b, _, http_b, _) = spawn_all(&url, &registry).await;
    // Each Gateway sees both processes' nodes.
    for http in [&http_a, &http_b] {
        let both = eventually(Duration::from_secs(30), || async move {
            metric(http, "cloudlysis_gateway_live_nodes", r#"role="aggregate""#).await == 2.0
                && metric(http, "cloudlysis_gateway_live_nodes", r#"role="runner""#).await == 2.0
        })
        .await;
        assert!(both, "{http} sees two aggregate and two runner nodes");
        // Its `/ready` counts its view of the registry.
        let (status, body) = http_get(&format!("{http}/ready")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""name":"aggregate","ok":true"#), "{body}");
    }

    // Opened through one process, deposited to through the other: no conflict, one entity each.
    for i in 0..ACCOUNTS {
        let open = r#"{"type":"Open","payload":{"owner":"alice"}}"#;
        let (status, body) = command(&http_a, &token, &format!("acc-{i}"), open, None).await;
        assert_eq!(status, 200, "{body}");
    }
    for i in 0..ACCOUNTS {
        let (status, body) = command(&http_b, &token, &format!("acc-{i}"), DEPOSIT, None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""version":2"#), "{body}");
    }
    // Transfers between them, started through either process: each runs on the runner its
    // instance is placed on, and its effects' commands go to the node that holds each account.
    for t in 0..ACCOUNTS / 2 {
        let (from, to) = (2 * t, 2 * t + 1);
        let http = if t % 2 == 0 { &http_a } else { &http_b };
        let out = sh(&format!(
            "curl -s -X POST {http}/v1/workflows/transfer/t-{t} -H 'Authorization: Bearer {token}' \
             -H 'Content-Type: application/json' -d '{{\"from\":\"acc-{from}\",\"to\":\"acc-{to}\",\"amount\":1}}'"
        ))
        .await;
        assert!(out.contains(r#""status":"running""#), "{out}");
    }
    for t in 0..ACCOUNTS / 2 {
        let read = format!(
            "curl -s {http_b}/v1/workflows/transfer/t-{t} -H 'Authorization: Bearer {token}'"
        );
        let completed = eventually(Duration::from_secs(30), || {
            let read = read.clone();
            async move { sh(&read).await.contains(r#""status":"completed""#) }
        })
        .await;
        assert!(completed, "t-{t} completed: {}", sh(&read).await);
    }
    let (on_a, on_b) = (live(&http_a).await, live(&http_b).await);
    assert_eq!(
        on_a + on_b,
        ACCOUNTS as f64,
        "each entity is live on one node: {on_a} on A, {on_b} on B"
    );
    assert!(on_a > 0.0 && on_b > 0.0, "{on_a} on A, {on_b} on B");
    assert_eq!(
        metric(
            &http_a,
            "cloudlysis_commands_total",
            r#"outcome="conflict""#
        )
        .await
            + metric(
                &http_b,
                "cloudlysis_commands_total",
                r#"outcome="conflict""#
            )
            .await,
        0.0,
        "no command met another node's commit"
    );
    for http in [&http_a, &http_b] {
        let pool = |result: &str| {
            let label = format!(r#"result="{result}""#);
            async move { metric(http, "cloudlysis_gateway_channel_pool_total", &label).await }
        };
        assert!(
            pool("local").await > 0.0,
            "{http} called its own node in process"
        );
        assert!(
            pool("miss").await + pool("hit").await > 0.0,
            "{http} called the other process's node over gRPC"
        );
    }

    // A stops: its nodes leave the registry first; B takes A's entities, none of them lost. Each
    // deposit is retried with its idempotency key until it is answered, as a client would.
    let pid = rustix::process::Pid::from_raw(a.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    for i in 0..ACCOUNTS {
        let id = format!("acc-{i}");
        let moved = eventually(Duration::from_secs(30), || {
            let (http, token, id) = (http_b.clone(), token.clone(), id.clone());
            let key = format!("move-{id}");
            async move { command(&http, &token, &id, DEPOSIT, Some(&key)).await.0 == 200 }
        })
        .await;
        assert!(moved, "{id} answers through B after A stopped");
    }
    assert_eq!(live(&http_b).await, ACCOUNTS as f64, "B holds every entity");
    for i in 0..ACCOUNTS {
        // Open, the deposit through B, the transfer, the deposit after A stopped: the next is
        // the fifth.
        let (status, body) = command(&http_b, &token, &format!("acc-{i}"), DEPOSIT, None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(r#""version":5"#), "acc-{i}: {body}");
    }
    let status = tokio::time::timeout(Duration::from_secs(60), a.wait())
        .await
        .expect("A exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut said = Vec::new();
    while let Ok(line) = a_said.try_recv() {
        said.push(line);
    }
    let said = said.join("\n");
    assert!(said.contains("left the node registry"), "{said}");
}

/// `cloudlysis all` with an identity provider (`gateway.jwks_url`) is not ready before the
/// provider's keys were fetched — its Gateway answers that provider's tokens 503 until then —
/// and its `/ready` says which check fails, as a separate Gateway's does. Before, `all`'s
/// `/ready` checked its nodes and NATS only and was 200 while every provider token was refused.
#[tokio::test]
async fn cloudlysis_all_is_not_ready_before_its_identity_providers_keys_are_fetched() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    prepare(&url).await;
    // A provider that takes the connection and never answers: no keys, ever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let jwks = format!("http://{}/jwks", silent.local_addr().unwrap());
    let env = [
        ("CLOUDLYSIS_JWKS_URL", jwks.as_str()),
        ("CLOUDLYSIS_JWT_ISSUER", "https://idp.example"),
        ("CLOUDLYSIS_JWT_AUDIENCE", "cloudlysis"),
    ];
    let (_child, _, http, _) = spawn_all(&url, &env).await;
    // Everything else gets ready; the provider's check does not.
    let report = || async {
        let (status, body) = http_get(&format!("{http}/ready")).await.unwrap();
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        (status, report)
    };
    let only_the_provider = eventually(Duration::from_secs(30), || async {
        let (_, report) = report().await;
        let failing: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] != true)
            .filter_map(|c| c["name"].as_str())
            .collect();
        failing == ["identity_provider"]
    })
    .await;
    let (status, body) = report().await;
    assert!(only_the_provider, "{status} {body}");
    assert_eq!(status, 503, "{body}");
}
