//! An in-process platform for end-to-end tests: a real nats-server, an aggregate node serving
//! gRPC on an ephemeral port, and a Gateway router pointed at it.
#![allow(dead_code)]

pub mod all;
pub mod observe;

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

    /// Starts a runner node (configured by `build`, e.g. `.workflow::<Transfer>()`), serving
    /// gRPC on an ephemeral port until the platform stops; the Gateway routes workflows to the
    /// last one started.
    pub async fn start_runner(
        &mut self,
        build: impl FnOnce(RunnerNodeBuilder) -> RunnerNodeBuilder,
    ) -> RunnerNode {
        self.start_runner_with(runner_settings(), build).await
    }

    /// [`Platform::start_runner`] with the demo `transfer` saga and its `withdraw` and `deposit`
    /// effects, which send their commands to this platform's aggregate node.
    pub async fn start_transfer_runner(&mut self) -> RunnerNode {
        use cloudlysis_examples::transfer::{DepositEffect, Transfer, WithdrawEffect};
        let client = self.command_client();
        self.start_runner(move |b| {
            b.workflow::<Transfer>()
                .effect(WithdrawEffect(client.clone()))
                .effect(DepositEffect(client))
        })
        .await
    }

    /// A transfer runner with `settings` whose effects count their executions on the returned
    /// counter (one counter for both effect types).
    pub async fn start_counted_transfer_runner(
        &mut self,
        settings: RunnerSettings,
    ) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        use cloudlysis_examples::transfer::{DepositEffect, Transfer, WithdrawEffect};
        use observe::Counted;
        let client = self.command_client();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = runs.clone();
        self.start_runner_with(settings, move |b| {
            b.workflow::<Transfer>()
                .effect(Counted {
                    inner: WithdrawEffect(client.clone()),
                    runs: r.clone(),
                })
                .effect(Counted {
                    inner: DepositEffect(client),
                    runs: r,
                })
        })
        .await;
        runs
    }

    /// [`Platform::start_runner`] with its settings.
    pub async fn start_runner_with(
        &mut self,
        settings: RunnerSettings,
        build: impl FnOnce(RunnerNodeBuilder) -> RunnerNodeBuilder,
    ) -> RunnerNode {
        let node = build(RunnerNode::builder(self.js.clone(), settings))
            .build()
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut stop = self.stop.subscribe();
        tokio::spawn(node.clone().serve_grpc(
            listener,
            cloudlysis_test_support::node_keys(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
        self.runner_addr = Some(addr);
        self.gateway = gateway_for(self.grpc_addr, self.projection_addr, Some(addr));
        node
    }

    /// Routes the Gateway's workflow and runner-admin calls to the runner nodes at `grpc`
    /// (host:port each, as a `cloudlysis runner` prints them), in that order.
    pub fn route_runners(&mut self, grpc: &[&str]) {
        let list = grpc
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        self.gateway = Gateway::new(GatewaySettings {
            runner_addr: list,
            ..gateway_settings(self.grpc_addr, self.projection_addr, None)
        })
        .unwrap();
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

    /// GETs a workflow instance through the Gateway.
    pub async fn workflow(&self, token: &str, name: &str, id: &str) -> (u16, serde_json::Value) {
        query(self, &format!("/v1/workflows/{name}/{id}"), token, &[]).await
    }

    /// Polls a workflow instance until it is no longer running (or `deadline` passes).
    pub async fn finished_workflow(
        &self,
        token: &str,
        name: &str,
        id: &str,
        deadline: Duration,
    ) -> serde_json::Value {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let (status, body) = self.workflow(token, name, id).await;
            if status == 200 && body["status"] != "running" {
                return body;
            }
            if tokio::time::Instant::now() >= end {
                let diagnosis = self.diagnose(id).await;
                panic!("{name}/{id} still not finished: {status} {body}\n{diagnosis}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the runner's streams, ledger and consumers hold about instance `id` (for the message
    /// of a failing test).
    pub async fn diagnose(&self, id: &str) -> String {
        use futures::StreamExt;
        let mut out = String::new();
        for stream in ["WORKFLOW_COMMANDS", "WORKFLOW_EVENTS"] {
            for (s, v, _) in self.stream_messages(stream).await {
                if v["instance"] == id {
                    out += &format!("{stream} {s} {v}\n");
                }
            }
        }
        if let Ok(kv) = self.js.get_key_value("cloudlysis_effects").await
            && let Ok(keys) = kv.keys().await
        {
            let keys: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
            for k in keys {
                if let Ok(Some(v)) = kv.get(&k).await {
                    out += &format!("ledger {k} {}\n", String::from_utf8_lossy(&v));
                }
            }
        }
        if let Ok(kv) = self.js.get_key_value("cloudlysis_outbox").await
            && let Ok(keys) = kv.keys().await
        {
            let keys: Vec<String> = keys.filter_map(|k| async move { k.ok() }).collect().await;
            out += &format!("outbox index {keys:?}\n");
        }
        for stream in ["WORKFLOW_COMMANDS", "WORKFLOW_EVENTS"] {
            let Ok(s) = self.js.get_stream(stream).await else {
                continue;
            };
            let names: Vec<String> = s
                .consumer_names()
                .filter_map(|n| async move { n.ok() })
                .collect()
                .await;
            for n in names {
                if let Ok(i) = s.consumer_info(&n).await {
                    out += &format!(
                        "consumer {stream}/{n}: pending {} ack_pending {} redelivered {} waiting {} floor {}\n",
                        i.num_pending,
                        i.num_ack_pending,
                        i.num_redelivered,
                        i.num_waiting,
                        i.ack_floor.stream_sequence
                    );
                }
            }
        }
        out
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

/// Runner settings for tests: quick nak backoff, short sweep.
pub fn runner_settings() -> RunnerSettings {
    RunnerSettings {
        consumer: cloudlysis_runtime::consumer::ConsumerSettings {
            nak_backoff: cloudlysis_runtime::consumer::NakBackoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(100),
                multiplier: 2,
            },
            ..Default::default()
        },
        sweep_interval: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A `cloudlysis runner` process: its gRPC and HTTP addresses, and the lines it printed.
pub struct RunnerProcess {
    pub child: tokio::process::Child,
    pub grpc: String,
    /// `http://host:port`.
    pub http: String,
    pub lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Starts `cloudlysis runner` (the binary) against `nats_url`, its effects sending commands to
/// `aggregate_addr`, with extra environment `env`.
pub async fn spawn_runner(
    nats_url: &str,
    aggregate_addr: &str,
    env: &[(&str, &str)],
) -> RunnerProcess {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"));
    cmd.args([
        "runner",
        "--nats-url",
        nats_url,
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--aggregate-addr",
        aggregate_addr,
    ])
    .env_remove("CLOUDLYSIS_CONFIG")
    .env_remove("CLOUDLYSIS_TEST_FAULT")
    .env(
        "CLOUDLYSIS_NODE_SECRET",
        cloudlysis_test_support::NODE_SECRET,
    )
    .stderr(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = tx.send(line);
        }
    });
    let (grpc, http) = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.recv().await {
            if let Some(rest) = line.split("gRPC on ").nth(1) {
                let grpc = rest.split(',').next().unwrap().trim().to_string();
                let http = line
                    .split("HTTP on ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap()
                    .to_string();
                return (grpc, http);
            }
        }
        panic!("the runner exited before listening");
    })
    .await
    .expect("the runner started");
    RunnerProcess {
        child,
        grpc,
        http,
        lines,
    }
}

impl RunnerProcess {
    /// Waits until the runner prints a line containing `text`.
    pub async fn wait_for_line(&mut self, text: &str, deadline: Duration) {
        tokio::time::timeout(deadline, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(text) {
                    return;
                }
            }
            panic!("the runner exited before printing {text:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("the runner did not print {text:?} in time"));
    }

    /// kill -9, and wait until it is gone.
    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Starts a workflow instance over gRPC for `tenant` (without waiting for the answer).
    pub fn start_workflow(
        &self,
        tenant: &str,
        workflow: &str,
        instance: &str,
        input: serde_json::Value,
    ) -> tokio::task::JoinHandle<Result<cloudlysis_proto::workflows::Instance, tonic::Status>> {
        let (addr, tenant, workflow, instance) = (
            format!("http://{}", self.grpc),
            tenant.to_string(),
            workflow.to_string(),
            instance.to_string(),
        );
        tokio::spawn(async move {
            let mut client =
                cloudlysis_proto::workflows::workflow_service_client::WorkflowServiceClient::connect(addr)
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut req = tonic::Request::new(cloudlysis_proto::workflows::StartRequest {
                workflow,
                instance,
                input_json: serde_json::to_vec(&input).unwrap(),
            });
            sign(&mut req, &tenant, &["workflows:*"]);
            cloudlysis_runtime::context::RequestContext::new(
                cloudlysis_runtime::TenantId::new(tenant).unwrap(),
            )
            .inject(req.metadata_mut());
            client.start(req).await.map(|r| r.into_inner())
        })
    }
}

/// The instance record of a workflow instance, read from KV.
pub async fn instance_record(
    js: &async_nats::jetstream::Context,
    workflow: &str,
    tenant: &str,
    instance: &str,
) -> Option<serde_json::Value> {
    let kv = js.get_key_value("cloudlysis_workflows").await.ok()?;
    let bytes = kv
        .get(format!("{workflow}.{tenant}.{instance}"))
        .await
        .ok()??;
    serde_json::from_slice(&bytes).ok()
}

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
