//! Several `cloudlysis all` processes with `gateway.placement = registry` share one deployment.

mod common;

use std::time::Duration;

use cloudlysis_test_support::{NatsServer, eventually, http_get};
use common::all::{metric, prepare, sh, spawn_all};

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
        let ready = eventually(Duration::from_secs(30), || async move {
            matches!(http_get(&format!("{http}/ready")).await,
                Ok((200, body)) if body.contains(r#""name":"aggregate","ok":true"#))
        })
        .await;
        assert!(ready, "{:?}", http_get(&format!("{http}/ready")).await);
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
    let left = eventually(Duration::from_secs(30), || async {
        metric(
            &http_b,
            "cloudlysis_gateway_live_nodes",
            r#"role="aggregate""#,
        )
        .await
            == 1.0
    })
    .await;
    assert!(left, "B no longer places work on A's aggregate node");
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
