//! `cloudlysis bench entities`: what a live entity costs. An aggregate node (demo `account`)
//! in this process, commands straight into it (no Gateway, no gRPC), `--workers` at once:
//!
//! 1. `deposits` — Deposits to `--existing` accounts that are already live: the rate of
//!    commands on existing entities;
//! 2. `opens` — Opens of `--entities` new accounts: the rate of commands that start an entity
//!    (spawn, a last-message lookup that finds nothing, the first commit);
//!
//! then the resident memory the new live entities added, per entity (RSS after the opens minus
//! RSS before them, once the allocator has settled).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{Aggregate, AggregateSettings, CommandRequest};
use cloudlysis_examples::account::Account;
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::context::{RequestContext, TenantId};

use crate::nodes;

/// Options of `cloudlysis bench entities`.
#[derive(Debug, Args)]
pub struct EntitiesBenchArgs {
    /// Use this NATS server instead of starting a private one
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// New entities to open (and keep live)
    #[arg(long, default_value_t = 20_000)]
    pub entities: usize,
    /// Live accounts the deposit phase uses
    #[arg(long, default_value_t = 256)]
    pub existing: usize,
    /// Deposits in the deposit phase
    #[arg(long, default_value_t = 20_000)]
    pub deposits: usize,
    /// Commands in flight at once
    #[arg(long, default_value_t = 64)]
    pub workers: usize,
}

/// Most entities the benchmark opens.
const MAX_ENTITIES: usize = 1_000_000;

fn command(id: &str, command_type: &str, payload: &'static str) -> anyhow::Result<CommandRequest> {
    Ok(CommandRequest {
        ctx: RequestContext::new(TenantId::new("bench")?),
        aggregate_id: SubjectToken::new(id)?,
        command_type: command_type.into(),
        payload: Bytes::from_static(payload.as_bytes()),
        expected_version: None,
        deadline: None,
    })
}

/// Runs the benchmark and prints a report.
pub async fn run(src: &ConfigSource, args: EntitiesBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=MAX_ENTITIES).contains(&args.entities),
        "--entities must be 1..={MAX_ENTITIES}"
    );
    anyhow::ensure!(
        (1..=10_000_000).contains(&args.existing),
        "--existing must be 1 – 10000000"
    );
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    anyhow::ensure!(
        args.deposits >= args.workers,
        "--deposits must be at least --workers"
    );
    let nats_url = args.nats_url.clone();
    crate::bench::with_nats(nats_url.as_deref(), |url| async move {
        bench(src, &url, &args).await
    })
    .await
}

/// Runs `count` commands made by `make(i)` with `workers` in flight; commands/s.
async fn run_phase<F>(
    node: &AggregateNode,
    workers: usize,
    count: usize,
    make: F,
) -> anyhow::Result<f64>
where
    F: Fn(usize) -> anyhow::Result<CommandRequest> + Send + Sync + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (node, next, make) = (node.clone(), next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                node.execute(Account::TYPE, make(i)?)
                    .await
                    .map_err(|e| anyhow::anyhow!("command {i}: {e}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

async fn bench(
    src: &ConfigSource,
    url: &str,
    args: &EntitiesBenchArgs,
) -> anyhow::Result<ExitCode> {
    let nats = nodes::connect(src, Some(url), "cloudlysis-bench").await?;
    let settings = AggregateSettings {
        // Nothing passivates during the run, and every new entity fits.
        idle_timeout: Duration::from_secs(24 * 3600),
        max_entities: args.entities + args.existing + 1,
        ..AggregateSettings::default()
    };
    let node = AggregateNode::builder(nats.js.clone(), settings)
        .register::<Account>()
        .build()
        .await?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let open = r#"{"owner":"bench"}"#;
    let existing = args.existing;
    let r = run.clone();
    run_phase(&node, args.workers, existing, move |i| {
        command(&format!("x{r}-{i}"), "Open", open)
    })
    .await?;
    let r = run.clone();
    let deposits = run_phase(&node, args.workers, args.deposits, move |i| {
        command(
            &format!("x{r}-{}", i % existing),
            "Deposit",
            r#"{"amount":1}"#,
        )
    })
    .await?;

    let before = settled_rss().await;
    let r = run.clone();
    let opens = run_phase(&node, args.workers, args.entities, move |i| {
        command(&format!("n{r}-{i}"), "Open", open)
    })
    .await?;
    let after = settled_rss().await;
    let per_entity = (after - before) * 1024.0 * 1024.0 / args.entities as f64;

    println!(
        "cloudlysis bench entities: {} new entities, {} deposits over {} live accounts, {} in flight",
        args.entities, args.deposits, args.existing, args.workers
    );
    println!("deposits to live entities: {deposits:.0} commands/s");
    println!("opens of new entities:     {opens:.0} commands/s");
    println!("ratio opens / deposits: {:.2}", opens / deposits);
    println!(
        "resident memory: {before:.1} MiB before the opens, {after:.1} MiB after: {:.1} KiB per live entity",
        per_entity / 1024.0
    );
    drop(node);
    Ok(ExitCode::SUCCESS)
}

/// RSS in MiB once it stops moving (the allocator returns freed pages lazily).
async fn settled_rss() -> f64 {
    let mut last = crate::bench::rss_mib();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = crate::bench::rss_mib();
        if (now - last).abs() < 0.25 {
            return now;
        }
        last = now;
    }
    last
}
