//! Runner nodes in the platform, workflows through the Gateway, and `cloudlysis runner`
//! processes.

use std::time::Duration;

use super::*;

impl Platform {
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

    /// A transfer runner with `settings` whose withdraw effect waits until the returned sender
    /// says `true` (see [`observe::Gated`]); the counters count withdraw and deposit runs.
    pub async fn start_gated_transfer_runner(
        &mut self,
        settings: RunnerSettings,
    ) -> (
        tokio::sync::watch::Sender<bool>,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        use cloudlysis_examples::transfer::{DepositEffect, Transfer, WithdrawEffect};
        use observe::{Counted, Gated};
        let client = self.command_client();
        let (gate, open) = tokio::sync::watch::channel(false);
        let withdraws = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let deposits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (w, d) = (withdraws.clone(), deposits.clone());
        self.start_runner_with(settings, move |b| {
            b.workflow::<Transfer>()
                .effect(Gated {
                    inner: WithdrawEffect(client.clone()),
                    open,
                    runs: w,
                })
                .effect(Counted {
                    inner: DepositEffect(client),
                    runs: d,
                })
        })
        .await;
        (gate, withdraws, deposits)
    }

    /// A gated transfer runner whose consumers poison on the second failure (`max_deliver` 2:
    /// an outage counted as failures would quarantine at once), accounts `a` (100) and `b`,
    /// and transfer `t-1` of 40 started, its withdraw waiting at the gate. Returns the gate,
    /// the withdraw and deposit counters and the tenant's token.
    pub async fn gated_transfer_at_its_withdraw(&mut self) -> GatedTransfer {
        let mut settings = runner_settings();
        settings.consumer.max_deliver = 2;
        let (gate, withdraws, deposits) = self.start_gated_transfer_runner(settings).await;
        let token = self.token("acme", &["commands:*", "workflows:*"]);
        self.open_accounts(&token, 100).await;
        self.start_transfer(&token, "t-1", "a", "b", 40).await;
        observe::until_started(&withdraws).await;
        GatedTransfer {
            gate,
            withdraws,
            deposits,
            token,
        }
    }

    /// The runner's `held` in `GET /admin/nodes` (each entry without `oldest_seconds`, which
    /// moves), once `done` says so of the entries as they are; panics after 30 s.
    pub async fn runner_holds(
        &self,
        token: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (s, body) = gateway_call(&self.gateway, "GET", "/admin/nodes", token, "").await;
            assert_eq!(s, 200, "{body}");
            let runner = body["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["role"] == "runner")
                .cloned()
                .unwrap();
            let held = runner["held"].as_array().cloned().unwrap_or_default();
            if done(&held) {
                let mut held = serde_json::Value::Array(held);
                for h in held.as_array_mut().unwrap() {
                    h.as_object_mut().unwrap().remove("oldest_seconds");
                }
                return held;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the runner's holds: {runner}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens accounts `a` (with `balance` deposited) and `b` of tenant `acme`.
    pub async fn open_accounts(&self, token: &str, balance: u64) {
        self.account_command(token, "a", r#"{"type":"Open","payload":{"owner":"a"}}"#)
            .await;
        self.account_command(
            token,
            "a",
            &format!(r#"{{"type":"Deposit","payload":{{"amount":{balance}}}}}"#),
        )
        .await;
        self.account_command(token, "b", r#"{"type":"Open","payload":{"owner":"b"}}"#)
            .await;
    }

    /// Asserts that transfer `id` of 40 from `a` (opened with 100) to `b` completes within 30 s
    /// with each effect run once, and that nothing was quarantined.
    pub async fn transfer_completed_once(
        &self,
        token: &str,
        id: &str,
        withdraws: &std::sync::atomic::AtomicU64,
        deposits: &std::sync::atomic::AtomicU64,
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        let done = self
            .finished_workflow(token, "transfer", id, Duration::from_secs(30))
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(withdraws.load(SeqCst), 1, "withdrawn once");
        assert_eq!(deposits.load(SeqCst), 1, "deposited once");
        assert_eq!(self.balance("acme", "a").await, 60);
        assert_eq!(self.balance("acme", "b").await, 40);
        assert_eq!(observe::poison_keys(&self.js).await, Vec::<String>::new());
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

    /// Starts transfer `id` (`amount` from account `from` to `to`) through the Gateway and
    /// asserts it was created.
    pub async fn start_transfer(&self, token: &str, id: &str, from: &str, to: &str, amount: u64) {
        let (s, resp) = self
            .command(
                &format!("/v1/workflows/transfer/{id}"),
                Some(token),
                &[],
                &format!(r#"{{"from":"{from}","to":"{to}","amount":{amount}}}"#),
            )
            .await;
        assert_eq!(s, 201, "{}", body_json(resp).await);
    }
}

/// What [`Platform::gated_transfer_at_its_withdraw`] set up.
pub struct GatedTransfer {
    /// Opens the withdraw's gate (send `true`).
    pub gate: tokio::sync::watch::Sender<bool>,
    pub withdraws: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub deposits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub token: String,
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
