//! An integration-test harness for applications: a private `nats-server` on an ephemeral port
//! and the whole platform over the application's behaviours — aggregate, projection and runner
//! nodes and a Gateway — in this process, with the Gateway on an ephemeral loopback HTTP port.
//!
//! ```no_run
//! # async fn t() -> Result<(), cloudlysis::harness::HarnessError> {
//! # let app = cloudlysis::App::new("t");
//! let platform = cloudlysis::harness::Harness::start(&app).await?;
//! // POST {platform.http}/v1/commands/<type>/<id> with `Authorization: Bearer {platform.token}`
//! platform.stop().await;
//! # Ok(()) }
//! ```
//!
//! The `nats-server` binary (2.10 or newer) is found through `NATS_SERVER_BIN`, a
//! `.tools/nats-server/bin/` folder above the working directory, or `PATH`. Settings come from
//! defaults only — never from the process environment or a config file — and tokens and node
//! credentials use the public dev secrets: loopback only, tests only.

use std::path::PathBuf;
use std::time::Duration;

use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::nats_server;

use crate::App;
use crate::platform::{Hosting, Platform};

/// How long the private nats-server may take to answer.
const NATS_START: Duration = Duration::from_secs(30);

/// The platform could not start (the cause, outermost first).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HarnessError(String);

impl From<anyhow::Error> for HarnessError {
    fn from(e: anyhow::Error) -> Self {
        Self(format!("{e:#}"))
    }
}

/// A running platform for tests; stopped by [`Harness::stop`] (or, abruptly, when dropped).
pub struct Harness {
    /// The Gateway's base URL: `http://127.0.0.1:<port>`.
    pub http: String,
    /// A token of tenant `demo` with `commands:*`, `queries:*` and `workflows:*`.
    pub token: String,
    /// A token of tenant `demo` with every right, admin included (the Control UI's).
    pub operator_token: String,
    /// The private nats-server: `nats://127.0.0.1:<port>`.
    pub nats_url: String,
    platform: Option<Platform>,
    http_server: tokio::task::JoinHandle<()>,
    nats: Option<tokio::process::Child>,
    dir: PathBuf,
}

impl Harness {
    /// Starts a private nats-server, ensures the streams, and starts the nodes and the Gateway
    /// with `app`'s behaviours.
    pub async fn start(app: &App) -> Result<Self, HarnessError> {
        app.validate().map_err(|e| HarnessError(e.to_string()))?;
        let dir = std::env::temp_dir().join(format!(
            "cloudlysis-harness-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let started = Self::start_in(app, dir.clone()).await;
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    async fn start_in(app: &App, dir: PathBuf) -> Result<Self, HarnessError> {
        let io = |what: &str, e: std::io::Error| HarnessError(format!("{what}: {e}"));
        let bin = nats_server::find().map_err(|e| HarnessError(e.to_string()))?;
        std::fs::create_dir_all(dir.join("nats")).map_err(|e| io("temp dir", e))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| io("a free port for nats-server", e))?
            .port();
        let child = nats_server::spawn(
            &bin,
            "127.0.0.1",
            port,
            &dir.join("nats"),
            &dir.join("nats.log"),
        )
        .map_err(|e| HarnessError(e.to_string()))?;
        let nats_url = format!("nats://127.0.0.1:{port}");
        nats_server::wait_until_ready(&nats_url, NATS_START)
            .await
            .map_err(|e| {
                HarnessError(format!(
                    "nats-server did not start ({e}); see {}",
                    dir.join("nats.log").display()
                ))
            })?;
        let src = ConfigSource::from_env(std::iter::empty::<(String, String)>());
        let nats = crate::nodes::connect(&src, Some(&nats_url), "cloudlysis-harness").await?;
        let (table, problems) =
            crate::streams::apply(&nats.js, crate::streams::Mode::Ensure).await?;
        if !problems.is_empty() {
            return Err(HarnessError(format!("{table}{}", problems.join("; "))));
        }
        let platform = Platform::start(&src, &nats, app, Hosting::Dev).await?;
        let (token, operator_token) = platform.dev_tokens()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| io("the Gateway's port", e))?;
        let http = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|e| io("the Gateway's port", e))?
        );
        let router = platform.router.clone();
        // Served as `cloudlysis dev` serves it (header deadline, connection bound).
        let http_server = tokio::spawn(cloudlysis_runtime::service::serve(
            listener,
            router,
            cloudlysis_runtime::service::HttpLimits::default(),
            std::future::pending(),
        ));
        Ok(Self {
            http,
            token,
            operator_token,
            nats_url,
            platform: Some(platform),
            http_server,
            nats: Some(child),
            dir,
        })
    }

    /// Stops the Gateway, drains the nodes, stops nats-server and removes its store.
    pub async fn stop(mut self) {
        self.http_server.abort();
        if let Some(platform) = self.platform.take() {
            platform.stop().await;
        }
        if let Some(mut child) = self.nats.take() {
            let _ = nats_server::stop_gracefully(&mut child, Duration::from_secs(10)).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Not stopped: the nats-server child is killed with its handle; the store goes too.
        self.http_server.abort();
        if self.nats.take().is_some() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
