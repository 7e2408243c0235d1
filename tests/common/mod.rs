//! An in-process platform for end-to-end tests: a real nats-server, an aggregate node serving
//! gRPC on an ephemeral port, and a Gateway router pointed at it.
//!
//! By concern: this file — the platform, commands and queries through the Gateway; `runner` —
//! runner nodes, workflows and `cloudlysis runner` processes; `processes` — node processes and
//! node credentials; `observe` — effects that count, poison keys, metrics, streams taken away;
//! `all` — `cloudlysis all` processes.
#![allow(dead_code)]

pub mod all;
pub mod observe;
mod processes;
mod runner;

#[allow(unused_imports)]
pub use processes::*;
#[allow(unused_imports)]
pub use runner::*;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use cloudlysis_actors::aggregate::AggregateSettings;
use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::runner::{CommandClient, RunnerNode, RunnerNodeBuilder, RunnerSettings};
use cloudlysis_examples::account::Account;
use cloudlysis_gateway::{Gateway, GatewaySettings};
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_test_support::NatsServer;
use tower::ServiceExt;

/// A command to account `acc-<account>` of tenant `acme` for a node's `execute`, with a 5 s
/// deadline.
pub fn account_request(
    account: usize,
    command: &str,
    payload: &str,
) -> cloudlysis_actors::aggregate::CommandRequest {
    use cloudlysis_runtime::{RequestContext, SubjectToken, TenantId};
    cloudlysis_actors::aggregate::CommandRequest {
        ctx: RequestContext::new(TenantId::new("acme").unwrap()),
        aggregate_id: SubjectToken::new(format!("acc-{account}")).unwrap(),
        command_type: command.into(),
        payload: payload.to_string().into(),
        expected_version: None,
        deadline: Some(tokio::time::Instant::now() + Duration::from_secs(5)),
    }
}

pub const SECRET: &str = "test-secret-test-secret-test-secret";

pub struct Platform {
    pub server: NatsServer,
    pub js: async_nats::jetstream::Context,
    pub node: AggregateNode,
    pub grpc_addr: std::net::SocketAddr,
    pub gateway: Gateway,
    pub projection: cloudlysis_actors::projection::ProjectionNode,
    pub projection_addr: std::net::SocketAddr,
    /// The runner node the Gateway routes workflows to, once [`Platform::start_runner`] ran.
    pub runner_addr: Option<std::net::SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(AggregateSettings::default()).await
    }

    pub async fn start_with(settings: AggregateSettings) -> Self {
        let server = NatsServer::start().await.unwrap();
        let js = server.jetstream().await;
        let (node, grpc_addr, stop, grpc) = serve_node(&js, settings).await;
        let (projection, projection_addr) = serve_projection(&js, stop.subscribe()).await;
        let gateway = gateway_for(grpc_addr, projection_addr, None);
        Self {
            server,
            js,
            node,
            grpc_addr,
            gateway,
            projection,
            projection_addr,
            runner_addr: None,
            stop,
            grpc,
        }
    }

    /// Stops the aggregate node (its gRPC server and supervision tree).
    pub async fn stop_node(&mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.grpc).await;
    }

    /// Stops the aggregate node and starts a fresh one (new process state) on a new port.
    pub async fn restart_node(&mut self, settings: AggregateSettings) {
        let _ = self.stop.send(true);
        let _ = (&mut self.grpc).await;
        let (node, grpc_addr, stop, grpc) = serve_node(&self.js, settings).await;
        self.node = node;
        self.grpc_addr = grpc_addr;
        self.stop = stop;
        self.grpc = grpc;
        self.gateway = gateway_for(grpc_addr, self.projection_addr, self.runner_addr);
    }

    /// Sends `method path` with a bearer token and a JSON body through the Gateway; the status
    /// and the JSON answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        gateway_call(&self.gateway, method, path, token, body).await
    }

    /// Another Gateway on this platform's nodes, with its settings changed by `change`.
    pub fn gateway_with(&self, change: impl FnOnce(&mut GatewaySettings)) -> Gateway {
        let mut settings = gateway_settings(self.grpc_addr, self.projection_addr, self.runner_addr);
        change(&mut settings);
        Gateway::new(settings).unwrap()
    }

    /// A client of the aggregate node, for effects.
    pub fn command_client(&self) -> CommandClient {
        CommandClient::lazy(
            &format!("http://{}", self.grpc_addr),
            cloudlysis_test_support::node_keys(),
            &Default::default(),
        )
        .unwrap()
    }

    /// An account's balance folded from its commits on the stream (the authoritative record).
    pub async fn balance(&self, tenant: &str, account: &str) -> i64 {
        let subject = format!("tenant.{tenant}.aggregate.account.{account}");
        let mut sum = 0i64;
        for (_, commit, _, s) in self.commits().await {
            if s != subject {
                continue;
            }
            for e in commit.events {
                let amount = e.payload["amount"].as_i64().unwrap_or(0);
                match e.event_type.as_str() {
                    "Deposited" => sum += amount,
                    "Withdrew" => sum -= amount,
                    _ => {}
                }
            }
        }
        sum
    }

    /// Every message on a stream (subject, payload as JSON, headers).
    pub async fn stream_messages(
        &self,
        stream: &str,
    ) -> Vec<(String, serde_json::Value, async_nats::HeaderMap)> {
        let mut s = self.js.get_stream(stream).await.unwrap();
        let state = s.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = s.get_raw_message(seq).await {
                let v = serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null);
                out.push((m.subject.to_string(), v, m.headers.clone()));
            }
        }
        out
    }

    pub fn token(&self, tenant: &str, rights: &[&str]) -> String {
        let rights: Vec<String> = rights.iter().map(|r| r.to_string()).collect();
        self.gateway
            .authenticator()
            .mint("test", tenant, &rights, Duration::from_secs(600))
            .unwrap()
    }

    /// POSTs a command through the Gateway router (no socket needed).
    pub async fn command(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Response<Body>) {
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .gateway
            .router()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        (resp.status().as_u16(), resp)
    }

    /// POSTs a command through another Gateway (see [`Platform::gateway_with`]).
    pub async fn command_via(
        &self,
        gw: &Gateway,
        path: &str,
        token: &str,
        body: &str,
    ) -> (u16, Response<Body>) {
        post_command(gw, path, token, None, body).await
    }

    /// POSTs a command to `account` (aggregate type `account`) that must succeed; returns its
    /// stream sequence.
    pub async fn account_command(&self, token: &str, account: &str, body: &str) -> u64 {
        let (s, resp) = self
            .command(
                &format!("/v1/commands/account/{account}"),
                Some(token),
                &[],
                body,
            )
            .await;
        let json = body_json(resp).await;
        assert_eq!(s, 200, "{json}");
        json["stream_sequence"].as_u64().unwrap()
    }

    /// Every commit on the event stream, in order, with its stream sequence.
    pub async fn commits(&self) -> Vec<(u64, Commit, async_nats::HeaderMap, String)> {
        let mut stream = self.js.get_stream("AGGREGATE_EVENTS").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                let commit: Commit = serde_json::from_slice(&m.payload).unwrap();
                out.push((seq, commit, m.headers.clone(), m.subject.to_string()));
            }
        }
        out
    }

    pub async fn message_count(&self) -> u64 {
        let mut stream = self.js.get_stream("AGGREGATE_EVENTS").await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

/// POSTs a command through `gw`'s router, with an `Idempotency-Key` when `key` is given; the
/// status and the response.
pub async fn post_command(
    gw: &Gateway,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Response<Body>) {
    let mut req = Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let resp = gw
        .router()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    (resp.status().as_u16(), resp)
}

/// [`Platform::call`] on a Gateway handle (e.g. one moved into a load task).
pub async fn gateway_call(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = gw.router().oneshot(req).await.unwrap();
    (resp.status().as_u16(), body_json(resp).await)
}

pub async fn body_json(resp: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::json!({"raw": String::from_utf8_lossy(&bytes)}))
}

async fn serve_node(
    js: &async_nats::jetstream::Context,
    settings: AggregateSettings,
) -> (
    AggregateNode,
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let node = AggregateNode::builder(js.clone(), settings)
        .register::<Account>()
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let grpc = tokio::spawn(node.clone().serve_grpc(
        listener,
        cloudlysis_test_support::node_keys(),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    (node, addr, stop, grpc)
}

async fn serve_projection(
    js: &async_nats::jetstream::Context,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (
    cloudlysis_actors::projection::ProjectionNode,
    std::net::SocketAddr,
) {
    let settings = cloudlysis_runtime::consumer::ConsumerSettings {
        nak_backoff: cloudlysis_runtime::consumer::NakBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            multiplier: 2,
        },
        ..Default::default()
    };
    let node = cloudlysis_actors::projection::ProjectionNode::builder(js.clone(), settings)
        .retire_grace(Duration::from_millis(200))
        .register::<cloudlysis_examples::balances::Balances>()
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(node.clone().serve_grpc(
        listener,
        cloudlysis_test_support::node_keys(),
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    ));
    (node, addr)
}

/// GETs through the Gateway router.
pub async fn query(
    p: &Platform,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut req = Request::get(path).header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = p
        .gateway
        .router()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, body_json(resp).await)
}

fn gateway_for(
    addr: std::net::SocketAddr,
    projection: std::net::SocketAddr,
    runner: Option<std::net::SocketAddr>,
) -> Gateway {
    Gateway::new(gateway_settings(addr, projection, runner)).unwrap()
}

pub fn gateway_settings(
    addr: std::net::SocketAddr,
    projection: std::net::SocketAddr,
    runner: Option<std::net::SocketAddr>,
) -> GatewaySettings {
    GatewaySettings {
        aggregate_addr: format!("http://{addr}"),
        projection_addr: format!("http://{projection}"),
        runner_addr: runner.map_or("http://127.0.0.1:1".into(), |r| format!("http://{r}")),
        jwt_secret: SECRET.into(),
        node_secret: cloudlysis_test_support::NODE_SECRET.into(),
        command_timeout: Duration::from_secs(10),
        max_body_bytes: 4096,
        max_in_flight: 1024,
        ui_dir: cloudlysis_gateway::config::DEFAULT_UI_DIR.into(),
        tenant_max_in_flight: None,
        tenant_weights: Default::default(),
        oidc: Default::default(),
        node_tls: Default::default(),
    }
}
