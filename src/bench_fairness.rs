//! `cloudlysis bench fairness`: per-tenant fair admission under a flood. Tenant B sends Deposits
//! at a steady low rate, first alone (its unloaded latency, the baseline), then while tenant A
//! floods the same Gateway with `--flood-factor` times its fair share of `--max-in-flight` in
//! closed-loop workers. Reports B's rejections and latency in both phases (the goal: no
//! rejection, latency near the unloaded figure) and A's accepted rate and refusals (429).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use cloudlysis_gateway::{Gateway, GatewaySettings};
use cloudlysis_runtime::config::ConfigSource;

use crate::bench::{post, with_nats};
use crate::nodes;

/// Options of `cloudlysis bench fairness`.
#[derive(Debug, Args)]
pub struct FairnessBenchArgs {
    /// Use this NATS server instead of starting a private one
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// The Gateway's budget (gateway.max_in_flight)
    #[arg(long, default_value_t = 32)]
    pub max_in_flight: usize,
    /// Tenant B's requests per second
    #[arg(long, default_value_t = 50)]
    pub rate: u64,
    /// Seconds per phase
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Tenant A's closed-loop workers, as a multiple of its fair share (max_in_flight / 2)
    #[arg(long, default_value_t = 10)]
    pub flood_factor: usize,
}

const SECRET: &str = "cloudlysis-bench-secret-cloudlysis-bench";
const DEPOSIT: &str = r#"{"type":"Deposit","payload":{"amount":1}}"#;
const OPEN: &str = r#"{"type":"Open","payload":{"owner":"bench"}}"#;

/// What one tenant saw in a phase.
#[derive(Default)]
struct Seen {
    latencies: Vec<Duration>,
    refused: u64,
    other: u64,
}

impl Seen {
    fn pct(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// Runs the benchmark and prints a report.
pub async fn run(src: &ConfigSource, args: FairnessBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.max_in_flight >= 2,
        "--max-in-flight must be at least 2"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.rate),
        "--rate must be 1 – 1000000"
    );
    anyhow::ensure!(
        (1..=3_600).contains(&args.seconds),
        "--seconds must be 1 – 3600"
    );
    let nats_url = args.nats_url.clone();
    with_nats(nats_url.as_deref(), |url| async move {
        bench(src, &url, &args).await
    })
    .await
}

/// B at `rate`/s for `seconds`, each request on its own task (open loop).
async fn steady(gw: &axum::Router, token: &str, accounts: usize, rate: u64, seconds: u64) -> Seen {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        tick.tick().await;
        let (gw, token) = (gw.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = post(
                &gw,
                &token,
                &format!("b-{}", i as usize % accounts),
                DEPOSIT,
            )
            .await
            .unwrap_or(0);
            (status, t.elapsed())
        }));
    }
    let mut seen = Seen::default();
    for t in tasks {
        if let Ok((status, latency)) = t.await {
            match status {
                200 => seen.latencies.push(latency),
                429 | 503 => seen.refused += 1,
                _ => seen.other += 1,
            }
        }
    }
    seen
}

async fn bench(
    src: &ConfigSource,
    url: &str,
    args: &FairnessBenchArgs,
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
    let token = |tenant: &str| {
        gateway.authenticator().mint(
            "bench",
            tenant,
            &["commands:account".to_string()],
            Duration::from_secs(3600),
        )
    };
    let (a, b) = (token("tenant-a")?, token("tenant-b")?);
    // One router for the run, cloned per request (as a server does).
    let gateway = gateway.router();
    let flood = (args.max_in_flight / 2).max(1) * args.flood_factor;
    let b_accounts = 16;
    for i in 0..b_accounts {
        anyhow::ensure!(post(&gateway, &b, &format!("b-{i}"), OPEN).await? == 200);
    }
    for i in 0..flood {
        anyhow::ensure!(post(&gateway, &a, &format!("a-{i}"), OPEN).await? == 200);
    }

    let alone = steady(&gateway, &b, b_accounts, args.rate, args.seconds).await;

    let flooding = Arc::new(AtomicBool::new(true));
    let (a_ok, a_refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..flood {
        let (gw, token, flooding) = (gateway.clone(), a.clone(), flooding.clone());
        let (ok, refused) = (a_ok.clone(), a_refused.clone());
        workers.push(tokio::spawn(async move {
            while flooding.load(Ordering::Relaxed) {
                match post(&gw, &token, &format!("a-{w}"), DEPOSIT).await {
                    Ok(200) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        // A flood does not honour Retry-After; it only yields the thread.
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }));
    }
    let flood_started = Instant::now();
    let loaded = steady(&gateway, &b, b_accounts, args.rate, args.seconds).await;
    flooding.store(false, Ordering::Relaxed);
    let flood_secs = flood_started.elapsed().as_secs_f64();
    for w in workers {
        let _ = w.await;
    }

    println!(
        "cloudlysis bench fairness: max_in_flight {}, tenant B {}/s for {} s per phase, tenant A {} closed-loop workers ({}x its fair share)",
        args.max_in_flight, args.rate, args.seconds, flood, args.flood_factor
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "phase", "B ok", "B refused", "B other", "B p50 ms", "B p99 ms"
    );
    for (name, s) in [("B alone", &alone), ("B while A floods", &loaded)] {
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>9.2} {:>9.2}",
            name,
            s.latencies.len(),
            s.refused,
            s.other,
            s.pct(0.5),
            s.pct(0.99)
        );
    }
    println!(
        "tenant A while flooding: {:.0} accepted/s, {:.0} refused/s (429)",
        a_ok.load(Ordering::Relaxed) as f64 / flood_secs,
        a_refused.load(Ordering::Relaxed) as f64 / flood_secs
    );
    println!(
        "ratio B p99 loaded / unloaded: {:.2}x",
        loaded.pct(0.99) / alone.pct(0.99).max(1e-9)
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(nodes::DRAIN, server).await;
    Ok(ExitCode::SUCCESS)
}
