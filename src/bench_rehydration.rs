//! `cloudlysis bench rehydration`: how long an entity takes to come back (its first command on
//! a node that has never seen it) against the length of its history, with and without
//! snapshots, in the same run.
//!
//! Two aggregates with one behaviour — `bench_plain` replays every event, `bench_snap` takes a
//! snapshot every `--every` events — get one entity per `--lengths` value, written in commits
//! of `--per-commit` events (at most 1 000). Then, `--runs` times per entity, a fresh aggregate node is built
//! and the entity's first command timed: rehydration (snapshot read, ad-hoc consumer, fold)
//! plus the command. It prints the median per length and the ratio snapshot / plain.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{
    Aggregate, AggregateSettings, CommandContext, CommandRequest, Rejection, Snapshots,
};
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use serde::{Deserialize, Serialize};

use crate::nodes;

/// Options of `cloudlysis bench rehydration`.
#[derive(Debug, Args)]
pub struct RehydrationBenchArgs {
    /// Use this NATS server instead of starting a private one
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Entity lengths (events), comma-separated
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub lengths: Vec<u64>,
    /// Snapshot interval of the snapshotting aggregate (events)
    #[arg(long, default_value_t = 1000)]
    pub every: u64,
    /// Timed rehydrations per entity (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Events per commit while writing the histories (1 gives one commit per event)
    #[arg(long, default_value_t = 1000)]
    pub per_commit: u64,
}

/// Longest history the benchmark writes (events), bounding its run time and store.
const MAX_LENGTH: u64 = 1_000_000;
/// Most events per commit while writing histories (and the default snapshot interval).
const COMMIT: u64 = 1000;

#[derive(Default, Serialize, Deserialize)]
struct Count {
    events: u64,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum Cmd {
    Add { n: u64 },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
enum Ev {
    Added,
}

fn handle(_: &Count, c: Cmd) -> Result<Vec<Ev>, Rejection> {
    let Cmd::Add { n } = c;
    Ok((0..n).map(|_| Ev::Added).collect())
}

struct Plain;

impl Aggregate for Plain {
    const TYPE: &'static str = "bench_plain";
    const SCHEMA_VERSION: u32 = 1;
    type State = Count;
    type Command = Cmd;
    type Event = Ev;
    fn handle(s: &Count, c: Cmd, _: &CommandContext) -> Result<Vec<Ev>, Rejection> {
        handle(s, c)
    }
    fn apply(s: &mut Count, _: &Ev) {
        s.events += 1;
    }
}

struct Snap;

/// The snapshot interval of [`Snap`], set once from `--every` before any node starts.
static EVERY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

impl Aggregate for Snap {
    const TYPE: &'static str = "bench_snap";
    const SCHEMA_VERSION: u32 = 1;
    type State = Count;
    type Command = Cmd;
    type Event = Ev;
    fn handle(s: &Count, c: Cmd, _: &CommandContext) -> Result<Vec<Ev>, Rejection> {
        handle(s, c)
    }
    fn apply(s: &mut Count, _: &Ev) {
        s.events += 1;
    }
    fn snapshots() -> Option<Snapshots<Count>> {
        Some(Snapshots::json(*EVERY.get().unwrap_or(&COMMIT), 1))
    }
}

fn add(id: &str, n: u64) -> anyhow::Result<CommandRequest> {
    Ok(CommandRequest {
        ctx: RequestContext::new(TenantId::new("bench")?),
        aggregate_id: SubjectToken::new(id)?,
        command_type: "Add".into(),
        payload: Bytes::from(format!(r#"{{"n":{n}}}"#)),
        expected_version: None,
        deadline: None,
    })
}

async fn node(js: &async_nats::jetstream::Context) -> anyhow::Result<AggregateNode> {
    AggregateNode::builder(js.clone(), AggregateSettings::default())
        .register::<Plain>()
        .register::<Snap>()
        .build()
        .await
        .context("bench aggregate node")
}

/// Runs the benchmark and prints a report.
pub async fn run(src: &ConfigSource, args: RehydrationBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.runs >= 1, "--runs must be at least 1");
    anyhow::ensure!(args.every >= 1, "--every must be at least 1");
    anyhow::ensure!(
        (1..=COMMIT).contains(&args.per_commit),
        "--per-commit must be 1..={COMMIT}"
    );
    anyhow::ensure!(
        !args.lengths.is_empty() && args.lengths.iter().all(|l| (1..=MAX_LENGTH).contains(l)),
        "--lengths must be 1..={MAX_LENGTH} events each"
    );
    let _ = EVERY.set(args.every);
    let nats_url = args.nats_url.clone();
    crate::bench::with_nats(nats_url.as_deref(), |url| async move {
        bench(src, &url, &args).await
    })
    .await
}

async fn bench(
    src: &ConfigSource,
    url: &str,
    args: &RehydrationBenchArgs,
) -> anyhow::Result<ExitCode> {
    let nats = nodes::connect(src, Some(url), "cloudlysis-bench").await?;
    let writer = node(&nats.js).await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    println!(
        "bench rehydration: lengths {:?} in commits of {} events, snapshot every {} events, {} runs each (median)",
        args.lengths, args.per_commit, args.every, args.runs
    );
    println!(
        "{:>10}  {:>14}  {:>14}  {:>16}",
        "events", "plain ms", "snapshot ms", "snapshot / plain"
    );
    for &length in &args.lengths {
        let id = format!("e{length}-{}", &run_id[..8]);
        for ty in [Plain::TYPE, Snap::TYPE] {
            let mut left = length;
            while left > 0 {
                let n = left.min(args.per_commit);
                writer
                    .execute(ty, add(&id, n)?)
                    .await
                    .map_err(|e| anyhow::anyhow!("writing {ty}/{id}: {e}"))?;
                left -= n;
            }
        }
        // Snapshots are written in the background: wait until the latest one is in.
        if length >= args.every {
            wait_for_snapshot(&nats.js, &id, length / args.every * args.every).await?;
        }
        let mut plain = Vec::new();
        let mut snap = Vec::new();
        for _ in 0..args.runs {
            for (ty, out) in [(Plain::TYPE, &mut plain), (Snap::TYPE, &mut snap)] {
                let fresh = node(&nats.js).await?;
                let started = Instant::now();
                fresh
                    .execute(ty, add(&id, 0)?)
                    .await
                    .map_err(|e| anyhow::anyhow!("rehydrating {ty}/{id}: {e}"))?;
                out.push(started.elapsed());
            }
        }
        let (p, s) = (median(&mut plain), median(&mut snap));
        println!(
            "{length:>10}  {:>14.2}  {:>14.2}  {:>16.3}",
            ms(p),
            ms(s),
            ms(s) / ms(p).max(f64::MIN_POSITIVE)
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_snapshot(
    js: &async_nats::jetstream::Context,
    id: &str,
    version: u64,
) -> anyhow::Result<()> {
    use cloudlysis_runtime::kv as buckets;
    let kv = js.get_key_value(buckets::SNAPSHOTS_BUCKET).await?;
    let key = buckets::snapshot_key(Snap::TYPE, "bench", id);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(bytes)) = kv.get(&key).await {
            let record: serde_json::Value = serde_json::from_slice(&bytes)?;
            if record["version"].as_u64() >= Some(version) {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the snapshot of {id} did not reach version {version} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
