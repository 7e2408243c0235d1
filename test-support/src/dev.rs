//! `cloudlysis dev` as a child of a test: started on ephemeral ports with its own data
//! directory, in a process group of its own (killed with its nats-server when the handle
//! drops), and what its banner printed — the Gateway's URL, the NATS URL, the dev token, the
//! operator's token and the example `curl` lines.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{KillGroupOnDrop, NODE_SECRET};

/// How long `dev` may take to print its banner.
pub const DEV_START_DEADLINE: Duration = Duration::from_secs(60);

/// A running `cloudlysis dev` and what it printed.
#[derive(Debug)]
pub struct Dev {
    /// The process (e.g. for a SIGTERM of a clean stop).
    pub child: tokio::process::Child,
    /// The Gateway's URL (`http://127.0.0.1:<port>`).
    pub http: String,
    /// The NATS URL, when printed.
    pub nats: Option<String>,
    /// The printed dev token (tenant `demo`).
    pub token: Option<String>,
    /// The dev operator's token from the console URL.
    pub operator: Option<String>,
    /// The example `curl` lines, in order.
    pub curls: Vec<String>,
    _group: KillGroupOnDrop,
}

impl Dev {
    /// Starts `exe dev --http-addr 127.0.0.1:0 --data-dir <data_dir>` with [`NODE_SECRET`], no
    /// inherited NATS URL or config file, and `env` on top; waits until its banner ends.
    ///
    /// # Panics
    /// When it cannot start or prints no URL within [`DEV_START_DEADLINE`] (a test's failure).
    pub async fn start(exe: &str, data_dir: &Path, env: &[(&str, &str)]) -> Dev {
        let mut child = tokio::process::Command::new(exe)
            .env("CLOUDLYSIS_NODE_SECRET", NODE_SECRET)
            .envs(env.iter().copied())
            .args(["dev", "--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("CLOUDLYSIS_NATS_URL")
            .env_remove("CLOUDLYSIS_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // Its own process group: the guard kills dev and its nats-server together.
            .process_group(0)
            .spawn()
            .expect("cloudlysis dev starts");
        let group = KillGroupOnDrop::of(&child);
        let stdout = child.stdout.take().expect("dev's stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut nats, mut token, mut operator, mut curls) =
            (None, None, None, None, Vec::new());
        let mut token_next = false;
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                let word = |prefix: &str| {
                    line.split_whitespace()
                        .find(|w| w.starts_with(prefix))
                        .map(str::to_string)
                };
                if http.is_none() {
                    http = word("http://");
                }
                if nats.is_none() {
                    nats = word("nats://");
                }
                if let Some((_, t)) = line.split_once("/ui/#token=") {
                    operator.get_or_insert(t.split_whitespace().next().unwrap_or("").to_string());
                }
                if token_next {
                    token = Some(line.trim().to_string());
                }
                token_next = line.starts_with("Dev token");
                if line.trim_start().starts_with("curl ") {
                    curls.push(line.trim().to_string());
                }
                if line.starts_with("Press Ctrl-C") {
                    break;
                }
            }
        };
        tokio::time::timeout(DEV_START_DEADLINE, read)
            .await
            .expect("dev printed its banner in time");
        Dev {
            child,
            http: http.expect("dev printed its URL"),
            nats,
            token,
            operator,
            curls,
            _group: group,
        }
    }

    /// Sends SIGTERM, as a terminal's Ctrl-C would SIGINT, and waits for the exit.
    ///
    /// # Panics
    /// When dev does not exit within 30 s (a test's failure).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait())
            .await
            .expect("dev exits within 30 s of SIGTERM")
            .expect("dev's exit status")
    }
}
