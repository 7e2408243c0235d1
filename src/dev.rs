//! `cloudlysis dev`: the platform on one machine. Starts a `nats-server` child (JetStream, store
//! under the data dir) unless `--nats-url` is given, ensures the streams, serves the HTTP
//! endpoints, prints what runs where, and shuts everything down on Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cloudlysis_runtime::config::{ConfigSource, settings};
use cloudlysis_runtime::nats::{self, NatsSettings};
use cloudlysis_runtime::service::{self, Readiness, ServiceEndpoints};
use cloudlysis_runtime::{metrics, nats_server};

use cloudlysis_supervision::{SupervisorConfig, SupervisorRef};

use crate::cli::DevArgs;
use crate::streams;

/// Default HTTP listen address of `cloudlysis dev`.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// How long the NATS child may take to answer JetStream requests.
const NATS_START_DEADLINE: Duration = Duration::from_secs(30);

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(src: &ConfigSource, args: DevArgs) -> anyhow::Result<ExitCode> {
    let http_addr: String = src.get_or(
        &settings::HTTP_ADDR,
        args.http_addr.as_deref(),
        DEFAULT_HTTP_ADDR.into(),
    )?;
    let data_dir: PathBuf = src.get_or(
        &settings::DEV_DATA_DIR,
        args.data_dir.as_ref().and_then(|p| p.to_str()),
        PathBuf::from(".cloudlysis/dev"),
    )?;
    // Bind first: a taken port should fail before anything is started.
    let listener = tokio::net::TcpListener::bind(&http_addr)
        .await
        .with_context(|| {
            format!("cannot listen on {http_addr} (setting http.addr / --http-addr)")
        })?;
    let http_local = listener.local_addr()?;

    let mut nats_child = None;
    let nats_url = match src.raw(&settings::NATS_URL, args.nats_url.as_deref()) {
        Some((url, _)) => url,
        None => {
            let (child, url) = start_nats(&data_dir).await?;
            nats_child = Some(child);
            url
        }
    };
    let result = serve(
        src,
        &nats_url,
        listener,
        http_local,
        &data_dir,
        nats_child.is_some(),
    )
    .await;
    if let Some(mut child) = nats_child {
        eprintln!("stopping nats-server");
        nats_server::stop_gracefully(&mut child, Duration::from_secs(15)).await?;
    }
    result
}

async fn start_nats(data_dir: &std::path::Path) -> anyhow::Result<(tokio::process::Child, String)> {
    let binary = nats_server::find()?;
    let store = data_dir.join("nats");
    std::fs::create_dir_all(&store).with_context(|| {
        format!(
            "cannot create {} (setting dev.data_dir / --data-dir)",
            store.display()
        )
    })?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = data_dir.join("nats-server.log");
    let mut child = nats_server::spawn(&binary, "127.0.0.1", port, &store, &log)?;
    let url = format!("nats://127.0.0.1:{port}");
    if let Err(e) = nats_server::wait_until_ready(&url, NATS_START_DEADLINE).await {
        let _ = child.kill().await;
        anyhow::bail!(
            "nats-server {} did not become ready on {url}: {e} (see {})",
            binary.path.display(),
            log.display()
        );
    }
    eprintln!(
        "started nats-server {} ({}) on {url}, store {}",
        binary.version,
        binary.path.display(),
        store.display()
    );
    Ok((child, url))
}

async fn serve(
    src: &ConfigSource,
    nats_url: &str,
    listener: tokio::net::TcpListener,
    http_local: std::net::SocketAddr,
    data_dir: &std::path::Path,
    own_nats: bool,
) -> anyhow::Result<ExitCode> {
    let settings = NatsSettings::load(src, Some(nats_url), "cloudlysis-dev")?;
    let client = nats::connect(&settings).await?;
    let js = nats::jetstream(client.clone(), settings.request_timeout);
    let (table, problems) = streams::apply(&js, streams::Mode::Ensure).await?;
    if !problems.is_empty() {
        print!("{table}");
        for p in &problems {
            eprintln!("error: {p}");
        }
        return Ok(ExitCode::FAILURE);
    }

    let handle = metrics::install()?;
    metrics::record_build_info("dev");
    let readiness = Readiness::new();
    readiness.nats(client.clone());
    readiness.flag("streams", true);
    // The node's supervision tree; the roles add their subtrees as they land.
    let root = SupervisorRef::start(SupervisorConfig::new("dev"), None).await?;
    let app = service::router(ServiceEndpoints {
        readiness,
        metrics: handle,
    })
    .merge(cloudlysis_supervision::snapshot::router(root.clone()));

    let http = format!("http://{http_local}");
    println!("Cloudlysis dev is running.");
    println!(
        "  NATS       {nats_url}{}",
        if own_nats {
            format!("  (JetStream store in {})", data_dir.join("nats").display())
        } else {
            String::new()
        }
    );
    println!("  HTTP       {http}  (/health /ready /metrics /admin/supervision)");
    println!("  Streams");
    for line in table.lines() {
        println!("    {line}");
    }
    println!("  Not in this version yet: the gateway, aggregate, projection and runner nodes.");
    println!("Try:  curl -s {http}/ready");
    println!("Press Ctrl-C to stop.");

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    eprintln!("shutting down");
    root.shutdown(Duration::from_secs(30)).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
