//! `cloudlysis bench workflows`: completed `transfer` sagas per second and start → completed
//! latency, against the command path measured in the same run.
//!
//! It starts a private nats-server (or uses `--nats-url`), an aggregate node, a runner node with
//! the demo saga and a Gateway router, then runs two phases with `--concurrency` workers:
//!
//! * `gateway_command` — `Deposit` commands through the Gateway (the baseline);
//! * `workflow_transfer` — `POST /v1/workflows/transfer/{id}` through the Gateway, then wait for
//!   the instance's `completed` workflow event (a core NATS subscription on
//!   `tenant.bench.workflow.transfer.*`). A transfer is at least three commands' worth of work
//!   (withdraw, deposit, plus the instance's own writes and publishes), so the report also prints
//!   transfers/s × 3 against commands/s.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use cloudlysis_runtime::config::ConfigSource;
use futures::StreamExt;
use tokio::sync::oneshot;
use tower::ServiceExt;

use crate::bench::{bench_gateway_with_runner, phase, post, with_nats};
use crate::nodes;

/// Options of `cloudlysis bench workflows`.
#[derive(Debug, Args)]
pub struct WorkflowBenchArgs {
    /// Use this NATS server instead of starting a private one
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Concurrent workers (each with its own pair of accounts)
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Transfers in the workflow phase (the command phase runs three times as many commands)
    #[arg(long, default_value_t = 600)]
    pub transfers: usize,
}

/// Runs the benchmark and prints a report.
pub async fn run(src: &ConfigSource, args: WorkflowBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.transfers >= args.concurrency,
        "--transfers must be at least --concurrency"
    );
    let nats_url = args.nats_url.clone();
    with_nats(nats_url.as_deref(), |url| async move {
        bench(src, &url, &args).await
    })
    .await
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

async fn bench(
    src: &ConfigSource,
    url: &str,
    args: &WorkflowBenchArgs,
) -> anyhow::Result<ExitCode> {
    let nats = nodes::connect(src, Some(url), "cloudlysis-bench").await?;
    let (stop, wait) = nodes::shutdown_channel();
    let node = nodes::aggregate_node(src, &nats.js, crate::demo::app().behaviours()).await?;
    let grpc = nodes::bind("127.0.0.1:0", "bench aggregate gRPC").await?;
    let aggregate = format!("http://{}", grpc.local_addr()?);
    let aggregate_server = tokio::spawn(node.serve_grpc(grpc, crate::bench::node_keys()?, wait()));
    let runner = nodes::runner_node(
        src,
        &nats.js,
        nodes::Aggregate::Addr(Some(&aggregate)),
        None,
        &crate::bench::node_keys()?,
        crate::demo::app().behaviours(),
    )
    .await?;
    let runner_grpc = nodes::bind("127.0.0.1:0", "bench runner gRPC").await?;
    let runner_addr = format!("http://{}", runner_grpc.local_addr()?);
    let runner_server =
        tokio::spawn(runner.serve_grpc(runner_grpc, crate::bench::node_keys()?, wait()));
    let (gateway, token) = bench_gateway_with_runner(
        &aggregate,
        "http://127.0.0.1:1",
        &runner_addr,
        &["commands:account", "workflows:transfer"],
    )?;
    // One router for the run, cloned per request (as a server does).
    let gateway = gateway.router();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let per_worker = args.transfers / args.concurrency;

    // Accounts: a funded source and a target per worker.
    for w in 0..args.concurrency {
        for (id, body) in [
            (
                format!("s{run_id}-{w}"),
                r#"{"type":"Open","payload":{"owner":"bench"}}"#,
            ),
            (
                format!("s{run_id}-{w}"),
                r#"{"type":"Deposit","payload":{"amount":1000000000}}"#,
            ),
            (
                format!("d{run_id}-{w}"),
                r#"{"type":"Open","payload":{"owner":"bench"}}"#,
            ),
        ] {
            let status = post(&gateway, &token, &id, body).await?;
            anyhow::ensure!(
                status == 200,
                "setting up bench account {id} returned {status}"
            );
        }
    }

    // Baseline: three commands per transfer.
    let (gw, tk, id) = (gateway.clone(), token.clone(), run_id.clone());
    let commands = phase(args.concurrency, per_worker * 3, move |w, _| {
        let (gateway, token) = (gw.clone(), tk.clone());
        let account = format!("d{id}-{w}");
        async move {
            match post(
                &gateway,
                &token,
                &account,
                r#"{"type":"Deposit","payload":{"amount":1}}"#,
            )
            .await
            {
                Ok(200) => Ok(()),
                Ok(s) => Err(format!("status {s}")),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;

    // Completion events, routed to the worker waiting for them.
    let waiters: Waiters = Arc::default();
    let mut sub = nats
        .client
        .subscribe("tenant.bench.workflow.transfer.*")
        .await
        .context("subscribing to workflow events")?;
    let routes = waiters.clone();
    let listener = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
                continue;
            };
            let kind = event["event_type"].as_str().unwrap_or_default();
            if kind == "completed" || kind == "failed" {
                let instance = event["instance"].as_str().unwrap_or_default().to_string();
                if let Some(tx) = routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&instance)
                {
                    let _ = tx.send(kind.to_string());
                }
            }
        }
    });
    let (gw, tk, id) = (gateway.clone(), token.clone(), run_id.clone());
    let transfers = phase(args.concurrency, per_worker, move |w, i| {
        let (gateway, token, waiters) = (gw.clone(), tk.clone(), waiters.clone());
        let (from, to, instance) = (
            format!("s{id}-{w}"),
            format!("d{id}-{w}"),
            format!("t{id}-{w}-{i}"),
        );
        async move {
            let (tx, rx) = oneshot::channel();
            waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(instance.clone(), tx);
            let body = format!(r#"{{"from":"{from}","to":"{to}","amount":1}}"#);
            let req = axum::http::Request::post(format!("/v1/workflows/transfer/{instance}"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .map_err(|e| e.to_string())?;
            let resp = gateway
                .clone()
                .oneshot(req)
                .await
                .map_err(|e| e.to_string())?;
            if resp.status().as_u16() != 201 {
                return Err(format!("start returned {}", resp.status()));
            }
            match tokio::time::timeout(Duration::from_secs(60), rx).await {
                Ok(Ok(kind)) if kind == "completed" => Ok(()),
                Ok(Ok(kind)) => Err(format!("transfer {instance} {kind}")),
                _ => Err(format!("transfer {instance} did not finish within 60 s")),
            }
        }
    })
    .await?;
    listener.abort();

    println!(
        "cloudlysis bench workflows: concurrency {}, {} transfers, {} commands",
        args.concurrency,
        per_worker * args.concurrency,
        per_worker * 3 * args.concurrency
    );
    println!(
        "{:<18} {:>12} {:>10} {:>10} {:>10}",
        "phase", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    for (name, r) in [
        ("gateway_command", &commands),
        ("workflow_transfer", &transfers),
    ] {
        println!(
            "{:<18} {:>12.0} {:>10.2} {:>10.2} {:>10.2}",
            name,
            r.ops_per_sec,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3
        );
    }
    println!(
        "ratio workflow_transfer x3 / gateway_command throughput: {:.2}x",
        transfers.ops_per_sec * 3.0 / commands.ops_per_sec
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(nodes::DRAIN, runner_server).await;
    let _ = tokio::time::timeout(nodes::DRAIN, aggregate_server).await;
    Ok(ExitCode::SUCCESS)
}
