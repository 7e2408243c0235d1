//! Node processes (`cloudlysis aggregate`, `projection`) and node credentials for calling
//! their gRPC services.

use std::time::Duration;

/// A test operator's node credential (every admin right, no tenant) on each call: an
/// interceptor for test gRPC clients of a node's admin services.
pub fn operator_credential(mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let c = cloudlysis_test_support::node_credential(
        cloudlysis_runtime::credential::SYSTEM_TENANT,
        &["admin:read", "admin:operate", "runner:admin"],
    );
    r.metadata_mut()
        .insert("x-cloudlysis-credential", c.parse().unwrap());
    Ok(r)
}

/// A connected channel to a node at `addr` (`host:port`).
pub async fn node_channel(addr: impl std::fmt::Display) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Puts a node credential for `tenant` with `rights` into a request to a node.
pub fn sign<T>(req: &mut tonic::Request<T>, tenant: &str, rights: &[&str]) {
    let c = cloudlysis_test_support::node_credential(tenant, rights);
    req.metadata_mut()
        .insert("x-cloudlysis-credential", c.parse().unwrap());
}

/// `cloudlysis aggregate` against `nats_url` with extra environment `env`: the process, its gRPC
/// address (`host:port`) and its HTTP base URL.
pub async fn spawn_aggregate(
    nats_url: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String, String) {
    spawn_node("aggregate", nats_url, env).await
}

/// Starts a `cloudlysis <role>` process (aggregate or projection) on ephemeral ports: the
/// process, its gRPC address and its HTTP base URL.
pub async fn spawn_node(
    role: &str,
    nats_url: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .args([
            role,
            "--nats-url",
            nats_url,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env_remove("CLOUDLYSIS_CONFIG")
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let (Some(grpc), Some(http)) =
                (line.split("gRPC on ").nth(1), line.split("HTTP on ").nth(1))
            {
                let grpc = grpc.split([' ', ',']).next().unwrap().to_string();
                let http = http.split_whitespace().next().unwrap().to_string();
                return Some((grpc, http));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("the {role} node did not start"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, found.0, found.1)
}
