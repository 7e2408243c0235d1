//! Common gRPC clients can list and call every node: grpcurl 1.8 (which speaks only server
//! reflection v1alpha) lists each role's services and calls `grpc.health.v1.Health/Check`.
//! Before the fix only the runner served reflection (and the aggregate node only v1: grpcurl
//! said "server does not support the reflection API"). Describe needs a node credential, which
//! `cloudlysis credential` signs for grpcurl's `-H`. Needs grpcurl (`./x test` installs the
//! pinned one into `.tools/grpcurl`, or set `GRPCURL_BIN`).

mod common;

use std::path::Path;

use common::Platform;

fn grpcurl() -> String {
    if let Ok(bin) = std::env::var("GRPCURL_BIN") {
        return bin;
    }
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/grpcurl/grpcurl");
    if pinned.is_file() {
        return pinned.to_string_lossy().into_owned();
    }
    "grpcurl".into()
}

async fn output(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(grpcurl())
        .args(args)
        .output()
        .await
        .expect("grpcurl (scripts/install-grpcurl; ./x test runs it) or GRPCURL_BIN")
}

async fn run(args: &[&str]) -> String {
    let out = output(args).await;
    assert!(
        out.status.success(),
        "grpcurl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_calls_every_node() {
    let mut p = Platform::start().await;
    p.start_transfer_runner().await;
    let nodes = [
        (
            p.grpc_addr.to_string(),
            "aggregate.gateway.v1.CommandService",
        ),
        (
            p.projection_addr.to_string(),
            "projection.gateway.v1.QueryService",
        ),
        (
            p.runner_addr.unwrap().to_string(),
            "runner.admin.v1.RunnerAdmin",
        ),
    ];
    // What an operator does: sign a credential with the CLI and hand it to grpcurl.
    let credential = std::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env_remove("CLOUDLYSIS_CONFIG")
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .args(["credential", "--rights", "admin:read", "--subject", "ops"])
        .output()
        .unwrap();
    assert!(credential.status.success(), "{credential:?}");
    let header = format!(
        "x-cloudlysis-credential: {}",
        String::from_utf8_lossy(&credential.stdout).trim()
    );
    for (addr, service) in &nodes {
        let list = run(&["-plaintext", addr, "list"]).await;
        for expected in [
            *service,
            "grpc.health.v1.Health",
            "node.admin.v1.NodeAdmin",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(list.contains(expected), "{addr}: no {expected} in\n{list}");
        }
        let health = run(&["-plaintext", addr, "grpc.health.v1.Health/Check"]).await;
        assert!(health.contains("SERVING"), "{addr}: {health}");
        let refused = output(&["-plaintext", addr, "node.admin.v1.NodeAdmin/Describe"]).await;
        let text = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && text.contains("Unauthenticated"),
            "{addr}: {text}"
        );
        let described = run(&[
            "-plaintext",
            "-H",
            &header,
            addr,
            "node.admin.v1.NodeAdmin/Describe",
        ])
        .await;
        assert!(described.contains("\"role\""), "{addr}: {described}");
    }
}
