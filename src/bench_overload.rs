//! `cloudlysis bench overload`: the command path through a real HTTP socket, at rest, at
//! capacity and under `--factor` times the load it sustains.
//!
//! A private nats-server, an aggregate node (demo domain) and a Gateway with a small budget
//! (`--max-in-flight`) serving on a loopback socket. Phases, each `--seconds` long, Deposits
//! over `--accounts` accounts of one tenant:
//!
//! 1. `idle` — one client in a closed loop: the unloaded latency;
//! 2. `capacity` — as many clients in a closed loop as one tenant may have in flight (the budget
//!    minus its 10 % reserve): what the platform sustains (C);
//! 3. `overload` — an open loop offering `--factor` × C requests/s, whatever the answers.
//!
//! It reports, per phase, accepted/s, refused (429, 503) and other answers, accepted latency,
//! and for the overload phase goodput / C, the refused share, answers without `Retry-After`,
//! and the process's resident memory (min / max, sampled every 250 ms).
//!
//! With `--target URL --token JWT` it starts nothing and drives a running Gateway (e.g. one that
//! `cloudlysis dev` serves): the load generator alone, so that it can run on CPUs of its own
//! (`taskset`) and the platform's goodput is measured without the generator's cost on its CPUs.
//! The accounts are opened first (an account already open is fine); memory is then the
//! platform's to measure, not this process's.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use cloudlysis_gateway::{Gateway, GatewaySettings};
use cloudlysis_runtime::config::ConfigSource;

use crate::bench::{post, with_nats};
use crate::bench_http::{Answer, Client};
use crate::nodes;

/// Options of `cloudlysis bench overload`.
#[derive(Debug, Args)]
pub struct OverloadBenchArgs {
    /// Use this NATS server instead of starting a private one
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// The Gateway's budget (gateway.max_in_flight)
    #[arg(long, default_value_t = 32)]
    pub max_in_flight: usize,
    /// Offered load of the overload phase, as a multiple of the measured capacity
    #[arg(long, default_value_t = 5.0)]
    pub factor: f64,
    /// Seconds per phase
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Accounts the Deposits go to
    #[arg(long, default_value_t = 256)]
    pub accounts: usize,
    /// Most client connections (each request in flight holds one)
    #[arg(long, default_value_t = 512)]
    pub connections: usize,
    /// Drive this running Gateway (`http://host:port`) instead of starting one in process: the
    /// load generator alone; set --max-in-flight to that Gateway's gateway.max_in_flight
    #[arg(
        long,
        value_name = "URL",
        requires = "token",
        conflicts_with = "nats_url"
    )]
    pub target: Option<String>,
    /// Bearer token of --target's tenant, with the right commands:account
    #[arg(long, value_name = "JWT", requires = "target")]
    pub token: Option<String>,
}

const SECRET: &str = "cloudlysis-bench-secret-cloudlysis-bench";
const DEPOSIT: &str = r#"{"type":"Deposit","payload":{"amount":1}}"#;
const OPEN: &str = r#"{"type":"Open","payload":{"owner":"bench"}}"#;
/// Most requests the open loop offers per second.
const MAX_RATE: f64 = 200_000.0;

/// What a phase saw.
#[derive(Default)]
struct Seen {
    accepted: Vec<Duration>,
    refused: u64,
    without_retry_after: u64,
    other: u64,
    errors: u64,
    client_waits: u64,
}

impl Seen {
    fn add(&mut self, answer: anyhow::Result<Answer>, latency: Duration) {
        match answer {
            Ok(a) if a.status == 200 => self.accepted.push(latency),
            Ok(a) if a.status == 429 || a.status == 503 => {
                self.refused += 1;
                if a.retry_after.is_none() || !a.problem_json {
                    self.without_retry_after += 1;
                }
            }
            Ok(_) => self.other += 1,
            Err(_) => self.errors += 1,
        }
    }

    fn pct(&self, q: f64) -> f64 {
        let mut l = self.accepted.clone();
        l.sort_unstable();
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// Runs the benchmark and prints a report.
pub async fn run(src: &ConfigSource, args: OverloadBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.max_in_flight >= 1,
        "--max-in-flight must be at least 1"
    );
    anyhow::ensure!(
        args.factor > 0.0 && args.factor <= 100.0,
        "--factor must be in (0, 100]"
    );
    anyhow::ensure!(
        (1..=3_600).contains(&args.seconds),
        "--seconds must be 1 – 3600"
    );
    anyhow::ensure!(args.accounts >= 1, "--accounts must be at least 1");
    anyhow::ensure!(
        args.connections > args.max_in_flight,
        "--connections must be more than --max-in-flight"
    );
    if let Some(target) = &args.target {
        let addr = target_addr(target).await?;
        let token = args.token.clone().unwrap_or_default();
        let client = Client::new(addr, args.connections);
        for i in 0..args.accounts {
            let answer = client.post(&account(i), &token, OPEN).await?;
            anyhow::ensure!(
                matches!(answer.status, 200 | 409 | 422),
                "opening account o-{i} at {target}: HTTP {} (is --token valid for commands:account?)",
                answer.status
            );
        }
        measure(&client, &token, &args, None).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let nats_url = args.nats_url.clone();
    with_nats(nats_url.as_deref(), |url| async move {
        bench(src, &url, &args).await
    })
    .await
}

/// The socket address of `--target` (`http://host:port`; HTTPS is not spoken).
async fn target_addr(target: &str) -> anyhow::Result<SocketAddr> {
    let hostport = target
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--target {target}: expected http://host:port"))?
        .trim_end_matches('/');
    tokio::net::lookup_host(hostport)
        .await
        .map_err(|e| anyhow::anyhow!("--target {target}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--target {target}: no address"))
}

/// The path of account `i`'s commands.
fn account(i: usize) -> String {
    format!("/v1/commands/account/o-{i}")
}

/// `workers` clients in a closed loop for `seconds`.
async fn closed(
    client: &Client,
    token: &str,
    accounts: usize,
    workers: usize,
    seconds: u64,
) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, token, seen) = (client.clone(), token.to_string(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < until {
                let path = account(i % accounts);
                let started = Instant::now();
                let answer = client.post(&path, &token, DEPOSIT).await;
                if let Ok(mut s) = seen.lock() {
                    s.add(answer, started.elapsed());
                }
                i += workers;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Arc::try_unwrap(seen)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default()
}

/// `rate` requests/s for `seconds`, each on its own task, whatever the answers (open loop).
async fn open(client: &Client, token: &str, accounts: usize, rate: f64, seconds: u64) -> Seen {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let total = (rate * seconds as f64) as u64;
    let period = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    // Finished tasks are reaped as the loop goes: a task's memory lives until it is joined.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        // Catch up in bursts when the scheduler is late, so the offered rate holds.
        let due = started + period.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        while tasks.try_join_next().is_some() {}
        if client.saturated()
            && let Ok(mut s) = seen.lock()
        {
            s.client_waits += 1;
        }
        let (client, token, seen) = (client.clone(), token.to_string(), seen.clone());
        tasks.spawn(async move {
            let path = account(i as usize % accounts);
            let t = Instant::now();
            let answer = client.post(&path, &token, DEPOSIT).await;
            if let Ok(mut s) = seen.lock() {
                s.add(answer, t.elapsed());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(seen)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default()
}

async fn bench(
    src: &ConfigSource,
    url: &str,
    args: &OverloadBenchArgs,
) -> anyhow::Result<ExitCode> {
    let nats = nodes::connect(src, Some(url), "cloudlysis-bench").await?;
    let node = nodes::aggregate_node(src, &nats.js, crate::demo::app().behaviours()).await?;
    let grpc = nodes::bind("127.0.0.1:0", "bench gRPC").await?;
    let grpc_addr = grpc.local_addr()?;
    let (stop, wait) = nodes::shutdown_channel();
    let server = tokio::spawn(node.serve_grpc(grpc, crate::bench::node_keys()?, wait()));
    let gateway = Gateway::new(GatewaySettings {
        aggregate_addr: format!("http://{grpc_addr}"),
        projection_addr: "http://127.0.0.1:1".into(),
        runner_addr: "http://127.0.0.1:1".into(),
        jwt_secret: SECRET.into(),
        node_secret: SECRET.into(),
        command_timeout: Duration::from_secs(10),
        max_body_bytes: 65_536,
        max_in_flight: args.max_in_flight,
        ui_dir: cloudlysis_gateway::config::DEFAULT_UI_DIR.into(),
        tenant_max_in_flight: None,
        tenant_weights: Default::default(),
        oidc: Default::default(),
        node_tls: Default::default(),
    })?;
    let token = gateway.authenticator().mint(
        "bench",
        "bench",
        &["commands:account".to_string()],
        Duration::from_secs(3600),
    )?;
    let router = gateway.router();
    for i in 0..args.accounts {
        anyhow::ensure!(post(&router, &token, &format!("o-{i}"), OPEN).await? == 200);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    // Served as `cloudlysis gateway` serves it.
    let http = tokio::spawn(cloudlysis_runtime::service::serve(
        listener,
        router,
        cloudlysis_runtime::service::HttpLimits::default(),
        std::future::pending(),
    ));
    let client = Client::new(addr, args.connections);
    let measured = measure(&client, &token, args, Some(crate::bench::rss_mib)).await;
    http.abort();
    let _ = stop.send(true);
    let _ = tokio::time::timeout(nodes::DRAIN, server).await;
    measured.map(|()| ExitCode::SUCCESS)
}

/// The three phases against the Gateway `client` speaks to, and the report; `rss` samples the
/// platform's resident memory when it runs in this process.
async fn measure(
    client: &Client,
    token: &str,
    args: &OverloadBenchArgs,
    rss: Option<fn() -> f64>,
) -> anyhow::Result<()> {
    let idle = closed(client, token, args.accounts, 1, args.seconds).await;
    // One tenant's share of the budget when it is alone: the budget minus its 10 % reserve
    // (gateway::admission). More clients would be refused and measure refusals, not capacity.
    let share = if args.max_in_flight > 1 {
        args.max_in_flight - args.max_in_flight.div_ceil(10)
    } else {
        1
    };
    let capacity = closed(client, token, args.accounts, share, args.seconds).await;
    let c = capacity.accepted.len() as f64 / args.seconds as f64;
    anyhow::ensure!(c > 0.0, "nothing was accepted at capacity");
    let rate = (c * args.factor).min(MAX_RATE);

    // Memory while overloaded, sampled every 250 ms (when the platform runs in this process).
    let sampling = Arc::new(AtomicBool::new(true));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = rss.map(|rss| {
        let (sampling, samples) = (sampling.clone(), samples.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while sampling.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok(mut s) = samples.lock() {
                    s.push(rss());
                }
            }
        })
    });
    let cpu_before = crate::bench::process_cpu_seconds("self");
    let overload = open(client, token, args.accounts, rate, args.seconds).await;
    let cpu = crate::bench::process_cpu_seconds("self")
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    sampling.store(false, Ordering::Relaxed);
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    let rss = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let (rss_min, rss_max) = rss
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));

    let target = args
        .target
        .as_deref()
        .unwrap_or("a Gateway in this process");
    println!(
        "cloudlysis bench overload: {target}, gateway.max_in_flight {}, {} s per phase, {} accounts, HTTP/1.1",
        args.max_in_flight, args.seconds, args.accounts
    );
    println!(
        "{:<10} {:>11} {:>10} {:>9} {:>7} {:>9} {:>9}",
        "phase", "accepted/s", "refused/s", "other", "errors", "p50 ms", "p99 ms"
    );
    for (name, s) in [
        ("idle", &idle),
        ("capacity", &capacity),
        ("overload", &overload),
    ] {
        println!(
            "{:<10} {:>11.0} {:>10.0} {:>9} {:>7} {:>9.2} {:>9.2}",
            name,
            s.accepted.len() as f64 / args.seconds as f64,
            s.refused as f64 / args.seconds as f64,
            s.other,
            s.errors,
            s.pct(0.5),
            s.pct(0.99)
        );
    }
    let offered = rate * args.seconds as f64;
    println!(
        "offered in overload: {rate:.0}/s ({:.1}x capacity)",
        args.factor
    );
    println!(
        "goodput overload / capacity: {:.2}",
        overload.accepted.len() as f64 / args.seconds as f64 / c
    );
    println!(
        "refused share: {:.2}; refusals without Retry-After or problem+json: {}; other answers: {}; client waits: {}",
        overload.refused as f64 / offered.max(1.0),
        overload.without_retry_after,
        overload.other + overload.errors,
        overload.client_waits
    );
    println!(
        "accepted p99 overload / idle: {:.2}x; overload / capacity: {:.2}x",
        overload.pct(0.99) / idle.pct(0.99).max(1e-9),
        overload.pct(0.99) / capacity.pct(0.99).max(1e-9)
    );
    if rss.is_empty() {
        println!("resident memory during overload: the target's, not measured here");
    } else {
        println!("resident memory during overload: {rss_min:.0}–{rss_max:.0} MiB");
    }
    if let Some(cpu) = cpu {
        let what = if args.target.is_some() {
            "the load generator"
        } else {
            "generator and platform"
        };
        println!(
            "CPU of this process ({what}) during overload: {cpu:.2} s in {} s",
            args.seconds
        );
    }
    Ok(())
}
