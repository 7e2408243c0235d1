//! `cloudlysis dev` starts its own nats-server, ensures the streams, serves `/ready`, and on
//! SIGTERM stops everything, its nats-server child included.

use std::time::Duration;

use cloudlysis_test_support::{eventually, http_get};

#[tokio::test]
async fn dev_runs_the_platform_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = cloudlysis_test_support::Dev::start(
        env!("CARGO_BIN_EXE_cloudlysis"),
        &dir.path().join("data"),
        &[],
    )
    .await;
    let http = dev.http.clone();
    let nats = dev.nats.clone().expect("NATS URL printed");
    let curls = dev.curls.clone();
    let operator = dev.operator.clone();

    let (status, body) = http_get(&format!("{http}/ready")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""ready":true"#), "{body}");
    let (status, body) = http_get(&format!("{http}/metrics")).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("cloudlysis_build_info"), "{body}");
    // The Gateway calls dev's nodes in process.
    for (role, n) in [("aggregate", 1), ("projection", 1), ("runner", 1)] {
        let line = format!("cloudlysis_gateway_local_nodes{{role=\"{role}\"}} {n}");
        assert!(body.lines().any(|l| l == line), "no `{line}` in the scrape");
    }

    // The nodes' supervision trees, through the Gateway, for the printed dev operator only.
    let (status, _) = http_get(&format!("{http}/admin/supervision"))
        .await
        .unwrap();
    assert_eq!(status, 401, "no token, no trees");
    let operator = operator.expect("the console URL with the operator's token printed");
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-H"])
        .arg(format!("Authorization: Bearer {operator}"))
        .arg(format!("{http}/admin/supervision"))
        .output()
        .await
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains(r#""name":"aggregate-node""#), "{body}");
    assert!(body.contains(r#""role":"runner""#), "{body}");

    // The printed curl commands, run as a new user would paste them: a command, the query that
    // sees its result, then a transfer saga and the read of its state until it completed.
    assert_eq!(curls.len(), 6, "the printed examples: {curls:?}");
    let run = |curl: String| async move {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&curl)
            .output()
            .await
            .expect("sh and curl run");
        assert!(
            out.status.success(),
            "{curl}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut outputs = Vec::new();
    for curl in &curls[..5] {
        outputs.push(run(curl.clone()).await);
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
        async move { run(read).await.contains(r#""status":"completed""#) }
    })
    .await;
    assert!(
        completed,
        "the printed transfer completed: {}",
        run(read).await
    );

    let client = async_nats::connect(&nats).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for name in ["AGGREGATE_EVENTS", "WORKFLOW_COMMANDS", "WORKFLOW_EVENTS"] {
        js.get_stream(name).await.unwrap();
    }
    drop(js);

    // SIGTERM, as Ctrl-C would be SIGINT: both shut down cleanly.
    let status = dev.terminate().await;
    assert!(status.success(), "{status}");

    // Its nats-server is gone too: the port no longer accepts connections.
    let addr = nats.trim_start_matches("nats://").to_string();
    let gone = eventually(Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(addr).await.is_err() }
    })
    .await;
    assert!(gone, "nats-server child still listening on {addr}");
}
