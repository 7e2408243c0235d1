//! `cloudlysis dev`'s nats-server children, kept running: a server that exits while dev runs is
//! started again on the same ports and store, so its clients reconnect and what the store had
//! written is still there. At most [`MAX_RESTARTS`] restarts of one server within
//! [`RESTART_WINDOW`] (an OTP supervisor's intensity); past that dev stops with an error naming
//! the server's log, rather than restarting a server that cannot run.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::nats_server::{self, NatsServerError};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Restarts of one server allowed within [`RESTART_WINDOW`].
pub(crate) const MAX_RESTARTS: usize = 5;
/// The window [`MAX_RESTARTS`] counts in.
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long a restarted server may take to answer.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long a server may take to stop on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Starts a server again, with the arguments it was first started with.
pub(crate) type Respawn = Box<dyn Fn() -> Result<Child, NatsServerError> + Send + Sync>;

/// One server to keep running.
pub(crate) struct Member {
    /// The running process.
    pub child: Child,
    /// Its client URL (`nats://127.0.0.1:<port>`).
    pub url: String,
    /// Its log file (named in errors).
    pub log: PathBuf,
    /// How to start it again.
    pub respawn: Respawn,
}

/// The servers dev started, each watched by a task of its own.
pub(crate) struct Keeper {
    stop: watch::Sender<bool>,
    failed: watch::Receiver<Option<String>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Keeper {
    /// Watches `members` until [`Keeper::stop`].
    pub(crate) fn start(members: Vec<Member>) -> Self {
        // The restart count exists (at 0) from the start, so an alert has a baseline.
        metrics::counter!(names::DEV_NATS_RESTARTS).increment(0);
        let (stop, stop_rx) = watch::channel(false);
        let (failed_tx, failed) = watch::channel(None);
        let tasks = members
            .into_iter()
            .map(|m| tokio::spawn(keep(m, stop_rx.clone(), failed_tx.clone())))
            .collect();
        Self {
            stop,
            failed,
            tasks,
        }
    }

    /// Resolves, with why, when a server could not be kept running; pending otherwise (also
    /// when nothing is kept).
    pub(crate) fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut failed = self.failed.clone();
        async move {
            let why = match failed.wait_for(Option::is_some).await {
                Ok(why) => why.clone(),
                // Every watcher ended without a failure: they were stopped.
                Err(_) => None,
            };
            match why {
                Some(why) => why,
                None => std::future::pending().await,
            }
        }
    }

    /// Why a server could not be kept running, if one could not.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Stops every server (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and its watcher.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Keeps one server running until `stop`, restarting it within the intensity bound.
async fn keep(
    mut m: Member,
    mut stop: watch::Receiver<bool>,
    failed: watch::Sender<Option<String>>,
) {
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    // An exit seen while a restarted server was becoming ready.
    let mut exited = None;
    loop {
        let status = match exited.take() {
            Some(status) => status,
            None => tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                status = m.child.wait() => status,
            },
        };
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        let now = Instant::now();
        while restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            restarts.pop_front();
        }
        if restarts.len() >= MAX_RESTARTS {
            let why = format!(
                "nats-server on {} exited ({status}) after {MAX_RESTARTS} restarts within {}s; \
                 not starting it again: see {}",
                m.url,
                RESTART_WINDOW.as_secs(),
                m.log.display()
            );
            tracing::error!("{why}");
            let _ = failed.send(Some(why));
            return;
        }
        restarts.push_back(now);
        metrics::counter!(names::DEV_NATS_RESTARTS).increment(1);
        tracing::error!(
            url = %m.url,
            %status,
            restart = restarts.len(),
            of = MAX_RESTARTS,
            log = %m.log.display(),
            "nats-server exited while dev runs; starting it again on the same port and store"
        );
        m.child = match (m.respawn)() {
            Ok(child) => child,
            Err(e) => {
                let why = format!("nats-server on {} could not be started again: {e}", m.url);
                tracing::error!("{why}");
                let _ = failed.send(Some(why));
                return;
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            status = m.child.wait() => exited = Some(status),
            ready = nats_server::wait_until_ready(&m.url, READY_DEADLINE) => match ready {
                Ok(()) => tracing::info!(url = %m.url, "nats-server is back"),
                // Still starting: if it exits, the next turn sees it.
                Err(e) => tracing::warn!(url = %m.url, error = %e, "restarted nats-server is not ready"),
            },
        }
    }
    if let Err(e) = nats_server::stop_gracefully(&mut m.child, STOP_GRACE).await {
        tracing::warn!(url = %m.url, error = %e, "stopping nats-server");
    }
}
