//! `cloudlysis dev`: the platform on one machine. Starts a `nats-server` child (JetStream, store
//! under the data dir) unless `--nats-url` is given, ensures the streams, serves the HTTP
//! endpoints, prints what runs where, and shuts everything down on Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cloudlysis_runtime::config::{ConfigSource, settings};
use cloudlysis_runtime::nats_server;

use crate::App;
use crate::cli::DevArgs;
use crate::dev_nats::{Keeper, Member, Respawn};
use crate::platform::{Hosting, Platform};
use crate::{nodes, streams};

/// The token secret of `cloudlysis dev` when `CLOUDLYSIS_JWT_SECRET` is not set. Dev only.
pub const DEV_JWT_SECRET: &str = "cloudlysis-dev-secret-do-not-use-in-production";
/// The node secret of `cloudlysis dev` when `CLOUDLYSIS_NODE_SECRET` is not set (its nodes
/// listen on loopback only). Dev only.
pub const DEV_NODE_SECRET: &str = "cloudlysis-dev-node-secret-do-not-use-in-production";
/// The tenant of the printed dev token.
pub const DEV_TENANT: &str = "demo";

/// Rights of the dev operator's Control UI token.
pub const DEV_OPERATOR_RIGHTS: &[&str] = &[
    "commands:*",
    "queries:*",
    "workflows:*",
    "workflows:*:operate",
    "runner:admin",
    "admin:read",
    "admin:operate",
];

/// Default HTTP listen address of `cloudlysis dev`.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// How long the NATS child may take to answer JetStream requests.
const NATS_START_DEADLINE: Duration = Duration::from_secs(30);

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(src: &ConfigSource, args: DevArgs, app: &App) -> anyhow::Result<ExitCode> {
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
    // Dev's Gateway routes to dev's own nodes: a registry placement is not used, a bad value
    // is refused like everywhere else.
    if crate::nodes::registry_placement(src)? {
        eprintln!(
            "cloudlysis dev: gateway.placement = registry is not used here; the Gateway routes to dev's own nodes"
        );
    }
    // Bind first: a taken port should fail before anything is started.
    let listener = tokio::net::TcpListener::bind(&http_addr)
        .await
        .with_context(|| {
            format!("cannot listen on {http_addr} (setting http.addr / --http-addr)")
        })?;
    let http_local = listener.local_addr()?;
    // The dev secret is public: never serve it beyond this machine.
    if !http_local.ip().is_loopback()
        && src
            .raw(&cloudlysis_gateway::config::JWT_SECRET, None)
            .is_none()
    {
        anyhow::bail!(
            "cloudlysis dev listens on {http_local}, which is not loopback: set CLOUDLYSIS_JWT_SECRET \
             (setting gateway.jwt_secret) instead of using the public dev secret"
        );
    }

    let mut nats_members = Vec::new();
    let nats_url = match src.raw(&settings::NATS_URL, args.nats_url.as_deref()) {
        Some(_) if args.cluster => {
            anyhow::bail!(
                "--cluster starts its own NATS cluster: drop --nats-url (setting nats.url)"
            )
        }
        Some((url, _)) => url,
        None if args.cluster => {
            let (members, urls) = start_nats_cluster(&data_dir).await?;
            nats_members = members;
            urls
        }
        None => {
            let member = start_nats(&data_dir).await?;
            let url = member.url.clone();
            nats_members.push(member);
            url
        }
    };
    let own_nats = !nats_members.is_empty();
    // The servers dev started are kept running while it runs (`dev_nats`); one that cannot be
    // kept stops dev like Ctrl-C does, and dev then exits with the reason.
    let keeper = Keeper::start(nats_members);
    let failed = keeper.failed();
    let stopped = async move {
        tokio::select! {
            _ = nodes::shutdown_signal() => {}
            why = failed => eprintln!("stopping: {why}"),
        }
    };
    let nats = DevNats {
        url: &nats_url,
        own: own_nats,
        cluster: args.cluster,
    };
    let result = serve(src, nats, listener, app, &data_dir, stopped).await;
    let failure = keeper.failure();
    if own_nats {
        eprintln!("stopping nats-server");
    }
    keeper.stop().await;
    match failure {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => result,
    }
}

/// Starts a 3-node JetStream cluster on loopback (stores under `<data dir>/nats-cluster/<i>`)
/// and waits until every member answers; returns the children and the members' URLs.
async fn start_nats_cluster(data_dir: &std::path::Path) -> anyhow::Result<(Vec<Member>, String)> {
    let binary = nats_server::find()?;
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free()?, free()?)))
        .collect::<anyhow::Result<_>>()?;
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
        .collect();
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for (i, (port, route_port)) in ports.iter().enumerate() {
        let store = data_dir.join("nats-cluster").join(i.to_string());
        std::fs::create_dir_all(&store).with_context(|| {
            format!(
                "cannot create {} (setting dev.data_dir / --data-dir)",
                store.display()
            )
        })?;
        let log = data_dir.join(format!("nats-server-{i}.log"));
        let args = nats_server::ClusterArgs {
            name: "cloudlysis-dev".into(),
            port: *route_port,
            routes: routes.clone(),
        };
        let respawn: Respawn = {
            let (binary, port, store, log) = (binary.clone(), *port, store.clone(), log.clone());
            Box::new(move || {
                nats_server::spawn_clustered(&binary, "127.0.0.1", port, &store, &log, &args)
            })
        };
        let url = format!("nats://127.0.0.1:{port}");
        children.push(Member {
            child: respawn()?,
            url: url.clone(),
            log,
            respawn,
        });
        urls.push(url);
    }
    for url in &urls {
        if let Err(e) = nats_server::wait_until_ready(url, NATS_START_DEADLINE).await {
            for mut m in children {
                let _ = m.child.kill().await;
            }
            anyhow::bail!(
                "the NATS cluster did not become ready ({url}: {e}); see {}/nats-server-*.log",
                data_dir.display()
            );
        }
    }
    eprintln!(
        "started a 3-node nats-server {} cluster on {}, stores in {}",
        binary.version,
        urls.join(", "),
        data_dir.join("nats-cluster").display()
    );
    Ok((children, urls.join(",")))
}

async fn start_nats(data_dir: &std::path::Path) -> anyhow::Result<Member> {
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
    let respawn: Respawn = {
        let (binary, store, log) = (binary.clone(), store.clone(), log.clone());
        Box::new(move || nats_server::spawn(&binary, "127.0.0.1", port, &store, &log))
    };
    let mut child = respawn()?;
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
    Ok(Member {
        child,
        url,
        log,
        respawn,
    })
}

/// The NATS dev uses: its URL, whether dev started it, and whether as a 3-node cluster.
struct DevNats<'a> {
    url: &'a str,
    own: bool,
    cluster: bool,
}

async fn serve(
    src: &ConfigSource,
    nats: DevNats<'_>,
    listener: tokio::net::TcpListener,
    app: &App,
    data_dir: &std::path::Path,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let DevNats {
        url: nats_url,
        own: own_nats,
        cluster,
    } = nats;
    let http_local = listener.local_addr()?;
    let nats = nodes::connect(src, Some(nats_url), "cloudlysis-dev").await?;
    let (table, problems) = if cluster {
        // Every stream and bucket replicated on the three members; the cluster may still be
        // electing its meta leader, so the first creation is retried for a while.
        cloudlysis_runtime::stream::set_replicas(3);
        let mut tries = 0;
        loop {
            match streams::apply(&nats.js, streams::Mode::Ensure).await {
                Ok(r) => break r,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "waiting for the NATS cluster");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    } else {
        streams::apply(&nats.js, streams::Mode::Ensure).await?
    };
    if !problems.is_empty() {
        print!("{table}");
        for p in &problems {
            eprintln!("error: {p}");
        }
        return Ok(ExitCode::FAILURE);
    }

    let platform = Platform::start(src, &nats, app, Hosting::Dev).await?;
    let (token, operator) = platform.dev_tokens()?;
    let (token, operator) = (&token, &operator);
    let Platform {
        grpc_addr,
        query_addr,
        runner_addr,
        ref aggregate_types,
        ref workflows,
        ..
    } = platform;

    let http = format!("http://{http_local}");
    println!("Cloudlysis dev is running.");
    println!(
        "  Gateway    {http}  (POST /v1/commands/{{type}}/{{id}}, GET /v1/query/{{view}}/{{key}}, POST|GET /v1/workflows/{{name}}/{{id}}; /admin/...; /health /ready /metrics)"
    );
    println!(
        "  Console    {http}/ui/#token={operator}  (the Control UI, signed in as the dev operator)"
    );
    println!("  Aggregate  grpc://{grpc_addr}  (aggregates: {aggregate_types})");
    println!(
        "  Projection grpc://{query_addr}  (views: {})",
        app.behaviours().view_names().join(", ")
    );
    println!(
        "  Runner     grpc://{runner_addr}  (workflows: {workflows}; effects: {})",
        app.behaviours().effect_types().join(", ")
    );
    println!(
        "  NATS       {nats_url}{}",
        if own_nats && cluster {
            format!(
                "  (3-node cluster, streams and buckets R3, stores in {})",
                data_dir.join("nats-cluster").display()
            )
        } else if own_nats {
            format!("  (JetStream store in {})", data_dir.join("nats").display())
        } else {
            String::new()
        }
    );
    println!("  Streams");
    for line in table.lines() {
        println!("    {line}");
    }
    println!(
        "Dev token (tenant {DEV_TENANT}, rights commands:* queries:* workflows:*, valid 24h):"
    );
    println!("  {token}");
    println!("Try:");
    print!("{}", app.hints(&http, token));
    println!("Press Ctrl-C to stop.");

    let limits = crate::nodes::http_limits(src)?;
    cloudlysis_runtime::service::serve(listener, platform.router.clone(), limits, stopped).await;
    eprintln!("shutting down");
    platform.stop().await;
    Ok(ExitCode::SUCCESS)
}
