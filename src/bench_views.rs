//! `cloudlysis bench views`: the event path measured against a raw pull consumer in the same
//! run.
//!
//! It starts a private nats-server (or uses `--nats-url`) and runs four phases:
//!
//! 1. **preload** — `--events` one-event `Deposited` commits over `--accounts` accounts are
//!    published straight to `AGGREGATE_EVENTS`;
//! 2. **raw_drain** — an `async-nats` durable pull consumer with the projection's policy
//!    (explicit ack, `max_ack_pending = PROJECTION_MAX_IN_FLIGHT`) drains them, acking each;
//! 3. **view_apply** — a projection node with the demo `balances` view starts on the same
//!    stream and applies them (decode, read the document, fold, revision-checked write, ack),
//!    counted from when the node is up (as the raw drain from when its consumer exists); the
//!    node's start, and the rate counting it, are printed beside;
//! 4. **latency** — at a fixed `--rate` for `--seconds`: a `Deposit` through the Gateway router
//!    and the aggregate node, then a query with the command's `x-min-sequence` (read-your-writes);
//!    the time the document was written (seen on a KV watch) is recorded too. For comparison, a
//!    raw publish → pull-consumer delivery latency at the same rate.
//!
//! It prints events/s per phase with the ratio view_apply / raw_drain, and p50 / p99 latencies.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use clap::Args;
use cloudlysis_actors::projection::view::DocumentRecord;
use cloudlysis_examples::load::Deposits;
use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::consumer::{ConsumerRole, ConsumerSettings};
use cloudlysis_runtime::context::TenantId;
use cloudlysis_runtime::{stream, subject};
use futures::StreamExt;
use tower::ServiceExt;

use crate::bench::{CpuPerOp, bench_gateway, cpu_seconds, post, with_nats};
use crate::nodes;

/// Options of `cloudlysis bench views`.
#[derive(Debug, Args)]
pub struct ViewBenchArgs {
    /// Use this NATS server instead of starting a private one
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Events preloaded for the drain phases
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Accounts the preloaded events spread over
    #[arg(long, default_value_t = 100)]
    pub accounts: usize,
    /// Commands per second in the latency phase
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Length of the latency phase in seconds
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Handler lanes per view (as `cloudlysis projection --lanes`)
    #[arg(long, value_name = "N")]
    pub lanes: Option<String>,
}

const TENANT: &str = "bench";
const RAW_DURABLE: &str = "cloudlysis-bench-raw-drain";

/// Runs the benchmark and prints a report.
pub async fn run(src: &ConfigSource, args: ViewBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=10_000_000).contains(&args.events),
        "--events must be 1 – 10000000"
    );
    anyhow::ensure!(args.accounts >= 1, "--accounts must be at least 1");
    anyhow::ensure!(
        (1..=10_000).contains(&args.rate),
        "--rate must be between 1 and 10000 commands per second"
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

async fn bench(src: &ConfigSource, url: &str, args: &ViewBenchArgs) -> anyhow::Result<ExitCode> {
    let settings = ConsumerSettings::load(ConsumerRole::Projection, src)?;
    let nats = nodes::connect(src, Some(url), "cloudlysis-bench").await?;
    let js = nats.js.clone();
    stream::ensure_stream(&js, &stream::aggregate_events()).await?;

    // 1. Preload.
    let started = Instant::now();
    let last = preload(&js, args.events, args.accounts).await?;
    let preload_rate = args.events as f64 / started.elapsed().as_secs_f64();

    // What the process sent to NATS (the raw drain and the view share the connection).
    let stats = nats.client.statistics();
    let sent = move || {
        use std::sync::atomic::Ordering::Relaxed;
        stats.out_messages.load(Relaxed)
    };
    // 2. Raw drain with the projection's consumer policy.
    let sent_before_raw = sent();
    let cpu_before_raw = cpu_seconds();
    let raw_rate = raw_drain(&js, &settings, args.events).await?;
    let cpu_raw = CpuPerOp::between(cpu_before_raw, cpu_seconds(), args.events);
    let sent_raw = sent() - sent_before_raw;

    // 3. The balances view applies the same events. Its rate is counted from when the node is
    // up, as the raw drain's is from when its consumer exists; the node's start is reported
    // beside it.
    let cpu_before_view = cpu_seconds();
    let sent_before_view = sent();
    let started = Instant::now();
    let projection = nodes::projection_node(
        src,
        &js,
        None,
        args.lanes.as_deref(),
        crate::demo::app().behaviours(),
    )
    .await?;
    let node_start = started.elapsed();
    let applied_at_start = projection.commits_applied("balances").unwrap_or(0);
    let apply_started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    while projection.commits_applied("balances").unwrap_or(0) < args.events as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the view did not apply {} events within 10 minutes",
            args.events
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let view_rate = (args.events as u64).saturating_sub(applied_at_start) as f64
        / apply_started.elapsed().as_secs_f64();
    let with_start_rate = args.events as f64 / started.elapsed().as_secs_f64();
    let cpu_view = CpuPerOp::between(cpu_before_view, cpu_seconds(), args.events);
    let sent_view = sent() - sent_before_view;
    while projection.checkpoint("balances").unwrap_or(0) < last {
        anyhow::ensure!(Instant::now() < deadline, "the checkpoint did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 4. Latency at a fixed rate.
    let aggregate = nodes::aggregate_node(src, &js, crate::demo::app().behaviours()).await?;
    let (agg_listener, query_listener) = (
        nodes::bind("127.0.0.1:0", "bench aggregate gRPC").await?,
        nodes::bind("127.0.0.1:0", "bench projection gRPC").await?,
    );
    let (agg_addr, query_addr) = (agg_listener.local_addr()?, query_listener.local_addr()?);
    let (stop, wait) = nodes::shutdown_channel();
    let agg_server =
        tokio::spawn(aggregate.serve_grpc(agg_listener, crate::bench::node_keys()?, wait()));
    let query_server = tokio::spawn(projection.clone().serve_grpc(
        query_listener,
        crate::bench::node_keys()?,
        wait(),
    ));
    let (gateway, token) = bench_gateway(
        &format!("http://{agg_addr}"),
        &format!("http://{query_addr}"),
        &["commands:account", "queries:balances"],
    )?;
    let latency = command_to_view(&gateway.router(), &token, &js, args).await?;
    let raw_latency = raw_latency(&js, args).await?;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(nodes::DRAIN, agg_server).await;
    let _ = tokio::time::timeout(nodes::DRAIN, query_server).await;

    let lanes = src.get_in_range(
        &cloudlysis_actors::projection::LANES,
        args.lanes.as_deref(),
        cloudlysis_actors::projection::DEFAULT_LANES as u64,
        1,
        cloudlysis_actors::projection::MAX_LANES as u64,
    )?;
    println!(
        "cloudlysis bench views: {} events over {} accounts; PROJECTION_MAX_IN_FLIGHT {}; \
         {lanes} lanes per view; latency phase {} commands/s for {} s",
        args.events, args.accounts, settings.max_in_flight, args.rate, args.seconds
    );
    println!("{:<14} {:>12}", "phase", "events/s");
    println!("{:<14} {:>12.0}", "preload", preload_rate);
    println!("{:<14} {:>12.0}", "raw_drain", raw_rate);
    println!("{:<14} {:>12.0}", "view_apply", view_rate);
    println!(
        "ratio view_apply / raw_drain throughput: {:.2}x",
        view_rate / raw_rate
    );
    // CPU per event (this process and the private nats-server): what a change to the path
    // moves, less noisy than a rate.
    for (name, c) in [("raw_drain", cpu_raw), ("view_apply", cpu_view)] {
        println!(
            "cpu per event {name}: {:.1} us (this process {:.1} us, nats-server {:.1} us)",
            c.total_us(),
            c.process_us,
            c.nats_us
        );
    }
    for (name, n) in [("raw_drain", sent_raw), ("view_apply", sent_view)] {
        println!(
            "nats per event {name}: {:.2} messages sent (acks, fetches, document writes)",
            n as f64 / args.events as f64
        );
    }
    println!(
        "view node start: {:.0} ms ({applied_at_start} events applied by then); counting it, \
         view_apply {with_start_rate:.0} events/s, ratio {:.2}x",
        node_start.as_secs_f64() * 1e3,
        with_start_rate / raw_rate
    );
    println!(
        "{:<34} {:>8} {:>10} {:>10} {:>10}",
        "latency", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for (name, l) in [
        ("raw publish -> delivered", &raw_latency),
        ("command -> document written", &latency.written),
        ("command -> read-your-writes query", &latency.visible),
    ] {
        println!(
            "{:<34} {:>8} {:>10.2} {:>10.2} {:>10.2}",
            name,
            l.samples,
            l.p50.as_secs_f64() * 1e3,
            l.p99.as_secs_f64() * 1e3,
            l.max.as_secs_f64() * 1e3
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes `events` one-event deposit commits, 256 in flight; returns the last stream
/// sequence.
async fn preload(js: &jetstream::Context, events: usize, accounts: usize) -> anyhow::Result<u64> {
    let load = Deposits {
        tenant: TenantId::new(TENANT)?,
        prefix: "pre-".into(),
        events: events as u64,
        accounts: accounts as u64,
        amount: |_| 1,
        window: 256,
    };
    Ok(load.publish(js).await?.last_sequence)
}

/// Drains `events` messages with a durable pull consumer (the projection's policy), acking each.
async fn raw_drain(
    js: &jetstream::Context,
    settings: &ConsumerSettings,
    events: usize,
) -> anyhow::Result<f64> {
    let events_stream = js.get_stream(stream::AGGREGATE_EVENTS).await?;
    let consumer = events_stream
        .create_consumer(pull::Config {
            durable_name: Some(RAW_DURABLE.into()),
            filter_subject: subject::filter::aggregate_type_events(&subject::SubjectToken::new(
                "account",
            )?),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: settings.max_in_flight as i64,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(settings.max_in_flight as usize)
        .messages()
        .await?;
    let mut n = 0;
    while n < events {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("raw drain stalled")?
            .context("raw drain ended")?
            .map_err(|e| anyhow::anyhow!("raw drain: {e}"))?;
        m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        n += 1;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    drop(messages);
    events_stream.delete_consumer(RAW_DURABLE).await?;
    Ok(rate)
}

pub(crate) struct Latency {
    samples: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn percentiles(mut all: Vec<Duration>) -> Latency {
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Latency {
        samples: all.len(),
        p50: pick(0.50),
        p99: pick(0.99),
        max: all.last().copied().unwrap_or_default(),
    }
}

struct CommandLatency {
    written: Latency,
    visible: Latency,
}

/// At a fixed rate: Deposit through the Gateway, then a query with `x-min-sequence`.
async fn command_to_view(
    gateway: &axum::Router,
    token: &str,
    js: &jetstream::Context,
    args: &ViewBenchArgs,
) -> anyhow::Result<CommandLatency> {
    const ACCOUNTS: usize = 20;
    for a in 0..ACCOUNTS {
        let status = post(
            gateway,
            token,
            &format!("lat-{a}"),
            r#"{"type":"Open","payload":{"owner":"bench"}}"#,
        )
        .await?;
        anyhow::ensure!(status == 200, "opening a bench account returned {status}");
    }
    // When each stream sequence's document write was seen.
    let written: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let kv = js
        .get_key_value(cloudlysis_runtime::kv::VIEWS_BUCKET)
        .await?;
    let mut watch = kv.watch("balances.bench.>").await?;
    let seen = written.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(entry)) = watch.next().await {
            if let Ok(r) = serde_json::from_slice::<DocumentRecord>(&entry.value) {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(r.last_seq)
                    .or_insert_with(Instant::now);
            }
        }
    });
    let total = args.rate as usize * args.seconds as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        ticker.tick().await;
        let (gateway, token) = (gateway.clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let account = format!("lat-{}", i % ACCOUNTS);
            let t0 = Instant::now();
            let req = axum::http::Request::post(format!("/v1/commands/account/{account}"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    r#"{"type":"Deposit","payload":{"amount":1}}"#,
                ))?;
            let resp = gateway.clone().oneshot(req).await?;
            anyhow::ensure!(resp.status() == 200, "deposit returned {}", resp.status());
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await?;
            let seq = serde_json::from_slice::<serde_json::Value>(&body)?["stream_sequence"]
                .as_u64()
                .context("no stream_sequence in the command response")?;
            let req = axum::http::Request::get(format!("/v1/query/balances/{account}"))
                .header("authorization", format!("Bearer {token}"))
                .header("x-min-sequence", seq.to_string())
                .body(axum::body::Body::empty())?;
            let resp = gateway.clone().oneshot(req).await?;
            anyhow::ensure!(resp.status() == 200, "query returned {}", resp.status());
            Ok::<_, anyhow::Error>((seq, t0, t0.elapsed()))
        }));
    }
    let mut visible = Vec::with_capacity(total);
    let mut sent = Vec::with_capacity(total);
    for t in tasks {
        let (seq, t0, took) = t.await??;
        visible.push(took);
        sent.push((seq, t0));
    }
    watcher.abort();
    let seen = written.lock().unwrap_or_else(|p| p.into_inner());
    let written = sent
        .iter()
        .filter_map(|(seq, t0)| seen.get(seq).map(|t| t.saturating_duration_since(*t0)))
        .collect();
    Ok(CommandLatency {
        written: percentiles(written),
        visible: percentiles(visible),
    })
}

/// At the same rate: publish → delivered to a durable pull consumer.
async fn raw_latency(js: &jetstream::Context, args: &ViewBenchArgs) -> anyhow::Result<Latency> {
    let events_stream = js.get_stream(stream::AGGREGATE_EVENTS).await?;
    let filter = "tenant.bench.aggregate.rawlat.>";
    let consumer = events_stream
        .create_consumer(pull::Config {
            durable_name: Some(RAW_DURABLE.into()),
            filter_subject: filter.into(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let total = args.rate as usize * args.seconds as usize;
    let mut sent = Vec::with_capacity(total);
    let mut messages = consumer.messages().await?;
    let receiver = tokio::spawn(async move {
        let mut arrived = Vec::with_capacity(total);
        while arrived.len() < total {
            let Ok(Some(Ok(m))) =
                tokio::time::timeout(Duration::from_secs(30), messages.next()).await
            else {
                break;
            };
            let at = Instant::now();
            let i: usize = std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(usize::MAX);
            let _ = m.ack().await;
            arrived.push((i, at));
        }
        arrived
    });
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        ticker.tick().await;
        sent.push(Instant::now());
        js.publish(
            format!("tenant.bench.aggregate.rawlat.r{}", i % 20),
            i.to_string().into(),
        )
        .await?;
    }
    let arrived = receiver.await?;
    let lat = arrived
        .into_iter()
        .filter_map(|(i, at)| sent.get(i).map(|t| at.saturating_duration_since(*t)))
        .collect();
    events_stream.delete_consumer(RAW_DURABLE).await?;
    Ok(percentiles(lat))
}
