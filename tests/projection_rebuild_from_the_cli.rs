//! `cloudlysis projection rebuild <view>`: waits until a running projection node has rebuilt
//! the view; with `--no-wait` it only records the request; a second request while one is in
//! progress, an unknown view and a bad `--timeout` are clear errors.

use std::process::{Command, Output};

use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_examples::balances::Balances;
use cloudlysis_runtime::consumer::ConsumerSettings;
use cloudlysis_test_support::NatsServer;

fn rebuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .env_remove("CLOUDLYSIS_NATS_URL")
        .env_remove("CLOUDLYSIS_CONFIG")
        .args(["projection", "rebuild"])
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_waits_for_the_node_then_refuses_a_second_one_in_progress() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let node = ProjectionNode::builder(server.jetstream().await, ConsumerSettings::default())
        .register::<Balances>()
        .build()
        .await
        .unwrap();

    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        rebuild(&["balances", "--nats-url", &u, "--timeout", "60s"])
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("generation 1"), "{stdout}");
    assert!(stdout.contains("rebuilt"), "{stdout}");
    let n = node.clone();
    assert!(
        cloudlysis_test_support::eventually(std::time::Duration::from_secs(30), || {
            let n = n.clone();
            async move { n.generation("balances") == Some(1) }
        })
        .await
    );
    // Dropping the node stops its view controllers (its consumers linger in this process, but
    // nothing acts on the generation record any more), so the next request stays in progress.
    drop((node, n));

    let out = rebuild(&["balances", "--nats-url", &url, "--no-wait"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("generation 2"), "{stdout}");

    let out = rebuild(&["balances", "--nats-url", &url, "--no-wait"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("already being rebuilt into generation 2"),
        "{stderr}"
    );

    let out = rebuild(&["balances", "--nats-url", &url, "--cancel"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("cancelled the rebuild of view `balances` into generation 2"),
        "{stdout}"
    );
    let out = rebuild(&["balances", "--nats-url", &url, "--cancel"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no rebuild in progress"), "{stderr}");
}

#[test]
fn an_unknown_view_or_bad_timeout_is_named() {
    let out = rebuild(&["nosuchview", "--nats-url", "nats://127.0.0.1:1"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown view `nosuchview`") && stderr.contains("balances"),
        "{stderr}"
    );
    let out = rebuild(&[
        "balances",
        "--timeout",
        "soon",
        "--nats-url",
        "nats://127.0.0.1:1",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("--timeout"), "{stderr}");
}
