//! `cloudlysis bench commands`: a load generator for the command path, measured against raw
//! JetStream publishes with the same concurrency in the same run.
//!
//! It starts a private nats-server (or uses `--nats-url`), an aggregate node on an ephemeral
//! gRPC port and a Gateway router, then runs, per phase, `--concurrency` workers each on its own
//! account until `--commands` commands are done:
//!
//! * `raw_publish` — `async-nats` JetStream publish + ack of a commit-sized payload;
//! * `gateway_command` — `POST /v1/commands/account/{id}` (Deposit) through the Gateway router
//!   (in process, no HTTP socket) → gRPC → entity → JetStream append with optimistic
//!   concurrency; with `--http`, `gateway_http`: the same over HTTP/1.1 on a loopback socket,
//!   one keep-alive connection per worker, so the HTTP edge is measured too, and then
//!   `health_http`: `GET /health` on the same Gateway and socket, what the HTTP edge alone
//!   sustains (a ceiling for any request). With `--idempotency-keys` every command carries a
//!   fresh `Idempotency-Key`, as a client that retries safely sends one. With `--local-node`
//!   the Gateway calls the node in process (`gateway_local`: no HTTP/2 hop, as in
//!   `cloudlysis dev`) instead of over gRPC on loopback (as between processes).
//!
//! It prints throughput and latency percentiles and the ratios, and the CPU time per operation
//! of each phase (this process and the private nats-server, from `/proc`): how many raw
//! publishes of CPU a command costs.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use cloudlysis_gateway::{Gateway, GatewaySettings};
use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::nats_server;
use cloudlysis_runtime::service;
use tower::ServiceExt;

use crate::nodes;

/// Options of `cloudlysis bench commands`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Use this NATS server instead of starting a private one
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Concurrent workers (each on its own account)
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Commands (and raw publishes) per phase
    #[arg(long, default_value_t = 5000)]
    pub commands: usize,
    /// Send the commands over a real HTTP socket (HTTP/1.1, one keep-alive connection per
    /// worker) instead of into the Gateway's router in process
    #[arg(long)]
    pub http: bool,
    /// Every command carries a fresh `Idempotency-Key`, as a client that retries safely sends
    /// one (the entity then looks the key up and records its result)
    #[arg(long)]
    pub idempotency_keys: bool,
    /// The Gateway calls the aggregate node in this process, without the network (as in
    /// `cloudlysis dev`), instead of over gRPC on loopback (as between processes)
    #[arg(long)]
    pub local_node: bool,
}

const SECRET: &str = "cloudlysis-bench-secret-cloudlysis-bench";

/// The node credentials of the benchmarks' in-process nodes (signed with [`SECRET`]).
pub(crate) fn node_keys() -> anyhow::Result<cloudlysis_runtime::credential::NodeKeys> {
    Ok(cloudlysis_runtime::credential::NodeKeys::new(
        SECRET.as_bytes(),
    )?)
}

/// Runs the benchmark and prints a report.
pub async fn run(src: &ConfigSource, args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.commands >= args.concurrency,
        "--commands must be at least --concurrency"
    );
    let nats_url = args.nats_url.clone();
    with_nats(nats_url.as_deref(), |url| async move {
        bench(src, &url, &args).await
    })
    .await
}

/// The process id of the private nats-server [`with_nats`] runs (0: none), so a benchmark can
/// count the server's CPU time beside its own.
static PRIVATE_NATS_PID: AtomicU32 = AtomicU32::new(0);

/// CPU seconds (user + system) used so far by this process and by the private nats-server
/// (0 when there is none or it cannot be read), from `/proc/<pid>/stat` (Linux).
pub(crate) fn cpu_seconds() -> (f64, f64) {
    let nats = match PRIVATE_NATS_PID.load(Ordering::Relaxed) {
        0 => None,
        pid => process_cpu_seconds(&pid.to_string()),
    };
    (
        process_cpu_seconds("self").unwrap_or(0.0),
        nats.unwrap_or(0.0),
    )
}

/// CPU seconds of process `pid` (`self` for this one), or `None` off Linux or when it is gone.
pub(crate) fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15, in ticks of USER_HZ (100 on Linux).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU per operation of a phase, in µs: this process's and the private nats-server's.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuPerOp {
    pub(crate) process_us: f64,
    pub(crate) nats_us: f64,
}

impl CpuPerOp {
    /// Between two [`cpu_seconds`] readings, over `ops` operations.
    pub(crate) fn between(before: (f64, f64), after: (f64, f64), ops: usize) -> Self {
        let per = |a: f64, b: f64| (a - b).max(0.0) * 1e6 / ops.max(1) as f64;
        Self {
            process_us: per(after.0, before.0),
            nats_us: per(after.1, before.1),
        }
    }

    /// Both together.
    pub(crate) fn total_us(&self) -> f64 {
        self.process_us + self.nats_us
    }
}

/// Runs `f` against `nats_url`, or against a private nats-server (file storage, ephemeral port,
/// temp directory) that is stopped and removed afterwards.
pub async fn with_nats<F, Fut>(nats_url: Option<&str>, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let dir = std::env::temp_dir().join(format!("cloudlysis-bench-{}", uuid::Uuid::new_v4()));
    let mut child = None;
    let url = match nats_url {
        Some(u) => u.to_string(),
        None => {
            let bin = nats_server::find()?;
            std::fs::create_dir_all(dir.join("nats"))?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let c = nats_server::spawn(
                &bin,
                "127.0.0.1",
                port,
                &dir.join("nats"),
                &dir.join("nats.log"),
            )?;
            PRIVATE_NATS_PID.store(c.id().unwrap_or(0), Ordering::Relaxed);
            child = Some(c);
            let url = format!("nats://127.0.0.1:{port}");
            nats_server::wait_until_ready(&url, Duration::from_secs(30))
                .await
                .map_err(|e| anyhow::anyhow!("nats-server did not start: {e}"))?;
            url
        }
    };
    let result = f(url).await;
    PRIVATE_NATS_PID.store(0, Ordering::Relaxed);
    if let Some(mut c) = child {
        nats_server::stop_gracefully(&mut c, Duration::from_secs(10)).await?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn bench(src: &ConfigSource, url: &str, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let nats = nodes::connect(src, Some(url), "cloudlysis-bench").await?;
    let node = nodes::aggregate_node(src, &nats.js, crate::demo::app().behaviours()).await?;
    let grpc = nodes::bind("127.0.0.1:0", "bench gRPC").await?;
    let grpc_addr = grpc.local_addr()?;
    let (stop, wait) = nodes::shutdown_channel();
    let serving: cloudlysis_runtime::admission::NodeServing = node_keys()?.into();
    let aggregate_addr = format!("http://{grpc_addr}");
    let mut locals = std::collections::HashMap::new();
    if args.local_node {
        locals.insert(aggregate_addr.clone(), node.local(&serving).await);
    }
    let records = node.clone();
    let server = tokio::spawn(node.serve_grpc(grpc, serving, wait()));
    let gateway = Gateway::with_local_nodes(
        bench_settings(&aggregate_addr, "http://127.0.0.1:1", "http://127.0.0.1:1"),
        locals,
    )?;
    let token = bench_token(&gateway, &["commands:account"])?;
    // One router for the run, cloned per request (as a server does).
    let gateway = gateway.router();
    let run_id = uuid::Uuid::new_v4().simple().to_string();

    // Accounts to deposit into.
    for w in 0..args.concurrency {
        let status = post(
            &gateway,
            &token,
            &format!("b{run_id}-{w}"),
            r#"{"type":"Open","payload":{"owner":"bench"}}"#,
        )
        .await?;
        anyhow::ensure!(status == 200, "opening a bench account returned {status}");
    }
    let payload = vec![b'x'; 420]; // about the size of a one-event commit
    let per_worker = args.commands / args.concurrency;

    let (js, raw_id) = (nats.js.clone(), run_id.clone());
    let stats = nats.client.statistics();
    let traffic = move || {
        use std::sync::atomic::Ordering::Relaxed;
        [
            stats.out_messages.load(Relaxed),
            stats.out_bytes.load(Relaxed),
            stats.in_messages.load(Relaxed),
            stats.in_bytes.load(Relaxed),
        ]
    };
    let traffic_at_start = traffic();
    let cpu_at_start = cpu_seconds();
    let raw = phase(args.concurrency, per_worker, move |w, _| {
        let js = js.clone();
        let payload = payload.clone();
        let subject = format!("tenant.bench.aggregate.raw.r{raw_id}-{w}");
        async move {
            js.publish(subject, payload.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await?;

    // Over a socket: the Gateway served on loopback, one keep-alive connection per worker.
    let http = if args.http {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Served as `cloudlysis gateway` serves it: the API beside /health, /ready, /metrics.
        let router = gateway
            .clone()
            .merge(service::router(service::ServiceEndpoints {
                readiness: service::Readiness::new(),
                metrics: cloudlysis_runtime::metrics::install()?,
            }));
        let server = tokio::spawn(cloudlysis_runtime::service::serve(
            listener,
            router,
            cloudlysis_runtime::service::HttpLimits::default(),
            std::future::pending(),
        ));
        Some((
            crate::bench_http::Client::new(addr, args.concurrency),
            server,
        ))
    } else {
        None
    };
    let client = http.as_ref().map(|(c, _)| c.clone());
    let (gw, tk, cmd_id) = (gateway.clone(), token.clone(), run_id.clone());
    let keyed = args.idempotency_keys;
    let ops = per_worker * args.concurrency;
    let cpu_raw = CpuPerOp::between(cpu_at_start, cpu_seconds(), ops);
    let traffic_before_cmd = traffic();
    let cpu_before_cmd = cpu_seconds();
    let cmd = phase(args.concurrency, per_worker, move |w, i| {
        let (gateway, token, client) = (gw.clone(), tk.clone(), client.clone());
        let id = format!("b{cmd_id}-{w}");
        let key = keyed.then(|| format!("k{cmd_id}-{w}-{i}"));
        async move {
            let deposit = r#"{"type":"Deposit","payload":{"amount":1}}"#;
            let key = key.as_deref();
            let status = match client {
                Some(c) => c
                    .post_keyed(&format!("/v1/commands/account/{id}"), &token, deposit, key)
                    .await
                    .map(|a| a.status),
                None => post_keyed(&gateway, &token, &id, deposit, key).await,
            }
            .map_err(|e| e.to_string())?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        }
    })
    .await?;
    // Keyed commands' idempotency records are written after the answers: the phase's cost
    // includes them, so wait for the last ones before reading CPU and traffic.
    records.flush_records(Duration::from_secs(10)).await;
    let cpu_cmd = CpuPerOp::between(cpu_before_cmd, cpu_seconds(), ops);
    let traffic_after_cmd = traffic();
    // The HTTP edge alone: GET /health over the same socket, same workers.
    let health = match &http {
        Some((client, _)) => {
            let client = client.clone();
            Some(
                phase(args.concurrency, per_worker, move |_, _| {
                    let client = client.clone();
                    async move {
                        match client.get("/health").await.map(|a| a.status) {
                            Ok(200) => Ok(()),
                            Ok(status) => Err(format!("status {status}")),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                })
                .await?,
            )
        }
        None => None,
    };
    if let Some((_, server)) = http {
        server.abort();
    }
    let cmd_name = match (args.http, args.local_node) {
        (true, false) => "gateway_http",
        (true, true) => "gateway_http_local",
        (false, false) => "gateway_command",
        (false, true) => "gateway_local",
    };

    println!(
        "cloudlysis bench commands: concurrency {}, {} operations per phase{}{}{}",
        args.concurrency,
        per_worker * args.concurrency,
        if args.http {
            ", commands over HTTP/1.1 on loopback"
        } else {
            ", commands into the Gateway's router in process"
        },
        if keyed {
            ", each with an Idempotency-Key"
        } else {
            ""
        },
        if args.local_node {
            ", the aggregate node called in process"
        } else {
            ", the aggregate node called over gRPC on loopback"
        }
    );
    println!(
        "{:<16} {:>12} {:>10} {:>10} {:>10}",
        "phase", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    let mut rows = vec![("raw_publish", &raw), (cmd_name, &cmd)];
    rows.extend(health.as_ref().map(|h| ("health_http", h)));
    for (name, r) in rows {
        println!(
            "{:<16} {:>12.0} {:>10.2} {:>10.2} {:>10.2}",
            name,
            r.ops_per_sec,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3
        );
    }
    println!(
        "ratio {cmd_name} / raw_publish throughput: {:.2}x",
        cmd.ops_per_sec / raw.ops_per_sec
    );
    if let Some(h) = &health {
        println!(
            "ratio {cmd_name} / health_http throughput: {:.2}x",
            cmd.ops_per_sec / h.ops_per_sec
        );
    }
    // CPU per operation: less sensitive than throughput to a noisy host, and what a change to
    // the path moves.
    for (name, c) in [("raw_publish", cpu_raw), (cmd_name, cpu_cmd)] {
        println!(
            "cpu per op {name}: {:.0} us (this process {:.0} us, nats-server {:.0} us)",
            c.total_us(),
            c.process_us,
            c.nats_us
        );
    }
    // What each phase sent to and received from NATS, per operation.
    for (name, (from, to)) in [
        ("raw_publish", (traffic_at_start, traffic_before_cmd)),
        (cmd_name, (traffic_before_cmd, traffic_after_cmd)),
    ] {
        let per = |i: usize| to[i].saturating_sub(from[i]) as f64 / ops.max(1) as f64;
        println!(
            "nats per op {name}: {:.2} messages / {:.0} bytes out, {:.2} messages / {:.0} bytes in",
            per(0),
            per(1),
            per(2),
            per(3)
        );
    }
    // CPU time is counted in ticks of 10 ms: a short run's raw publishes may count none.
    if cpu_raw.total_us() > 0.0 {
        println!(
            "cpu per op {cmd_name} / raw_publish: {:.1}x",
            cpu_cmd.total_us() / cpu_raw.total_us()
        );
    } else {
        println!(
            "cpu per op {cmd_name} / raw_publish: n/a (the raw publishes used less CPU than the \
             10 ms the clock counts; run more operations)"
        );
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(nodes::DRAIN, server).await;
    Ok(ExitCode::SUCCESS)
}

/// A Gateway for load generators (in process, generous limits) and a token of tenant `bench`
/// with `rights`.
pub(crate) fn bench_gateway(
    aggregate_addr: &str,
    projection_addr: &str,
    rights: &[&str],
) -> anyhow::Result<(Gateway, String)> {
    bench_gateway_with_runner(
        aggregate_addr,
        projection_addr,
        "http://127.0.0.1:1",
        rights,
    )
}

/// [`bench_gateway`] that also routes workflows to `runner_addr`.
pub(crate) fn bench_gateway_with_runner(
    aggregate_addr: &str,
    projection_addr: &str,
    runner_addr: &str,
    rights: &[&str],
) -> anyhow::Result<(Gateway, String)> {
    let gateway = Gateway::new(bench_settings(aggregate_addr, projection_addr, runner_addr))?;
    let token = bench_token(&gateway, rights)?;
    Ok((gateway, token))
}

/// The settings of a benchmark's Gateway: the node addresses, generous limits.
pub(crate) fn bench_settings(
    aggregate_addr: &str,
    projection_addr: &str,
    runner_addr: &str,
) -> GatewaySettings {
    GatewaySettings {
        aggregate_addr: aggregate_addr.into(),
        projection_addr: projection_addr.into(),
        runner_addr: runner_addr.into(),
        jwt_secret: SECRET.into(),
        node_secret: SECRET.into(),
        command_timeout: Duration::from_secs(10),
        max_body_bytes: 65_536,
        max_in_flight: 4096,
        ui_dir: cloudlysis_gateway::config::DEFAULT_UI_DIR.into(),
        tenant_max_in_flight: None,
        tenant_weights: Default::default(),
        oidc: Default::default(),
        node_tls: Default::default(),
    }
}

/// A token of tenant `bench` with `rights`, for an hour.
pub(crate) fn bench_token(gateway: &Gateway, rights: &[&str]) -> anyhow::Result<String> {
    let rights: Vec<String> = rights.iter().map(|r| r.to_string()).collect();
    Ok(gateway
        .authenticator()
        .mint("bench", "bench", &rights, Duration::from_secs(3600))?)
}

/// POSTs a command through `gateway` (its router, built once and cloned per request as a
/// server does — building a router per request would cost more than the request).
pub(crate) async fn post(
    gateway: &axum::Router,
    token: &str,
    id: &str,
    body: &'static str,
) -> anyhow::Result<u16> {
    post_keyed(gateway, token, id, body, None).await
}

/// [`post`] with an `Idempotency-Key` when `key` is given.
pub(crate) async fn post_keyed(
    gateway: &axum::Router,
    token: &str,
    id: &str,
    body: &'static str,
    key: Option<&str>,
) -> anyhow::Result<u16> {
    let mut req = axum::http::Request::post(format!("/v1/commands/account/{id}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let req = req.body(axum::body::Body::from(body)).context("request")?;
    let resp = gateway.clone().oneshot(req).await.context("gateway")?;
    Ok(resp.status().as_u16())
}

pub(crate) struct Report {
    pub(crate) ops_per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
}

pub(crate) async fn phase<F, Fut>(
    workers: usize,
    per_worker: usize,
    op: F,
) -> anyhow::Result<Report>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let t = Instant::now();
                op(w, i).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut all = Vec::with_capacity(workers * per_worker);
    for t in tasks {
        all.extend(t.await?.map_err(|e| anyhow::anyhow!(e))?);
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Ok(Report {
        ops_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        max: *all.last().unwrap_or(&Duration::ZERO),
    })
}

/// This process's resident set size in MiB (Linux; 0 elsewhere).
pub(crate) fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
