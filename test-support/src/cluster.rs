//! A 3-node NATS cluster on loopback for tests: every member runs JetStream with its own store,
//! on ephemeral client and route ports; any member can be killed (-9) and restarted with its
//! store, as a crashed machine comes back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cloudlysis_runtime::nats_server::{self, ClusterArgs, NatsServerBinary};

use crate::{HarnessError, START_DEADLINE, free_port, tail};

/// Members of a test cluster.
pub const MEMBERS: usize = 3;

struct Member {
    port: u16,
    route_port: u16,
    child: Option<tokio::process::Child>,
}

/// A 3-node JetStream cluster owned by one test; every member is killed on drop.
pub struct NatsCluster {
    binary: NatsServerBinary,
    name: String,
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl NatsCluster {
    /// Starts three members and waits until JetStream answers with a meta leader (R3 streams
    /// can be created).
    pub async fn start() -> Result<Self, HarnessError> {
        let binary = nats_server::find()?;
        let dir = tempfile::Builder::new()
            .prefix("cloudlysis-nats-cluster-")
            .tempdir()?;
        let mut members = Vec::new();
        for _ in 0..MEMBERS {
            members.push(Member {
                port: free_port()?,
                route_port: free_port()?,
                child: None,
            });
        }
        let mut cluster = Self {
            binary,
            name: format!("cloudlysis-test-{}", std::process::id()),
            dir,
            members,
        };
        for i in 0..MEMBERS {
            std::fs::create_dir_all(cluster.store_dir(i))?;
            cluster.launch(i)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// The client URLs of every member, comma separated (what a node's `nats.url` takes).
    pub fn urls(&self) -> String {
        (0..MEMBERS)
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.members[i].port)
    }

    /// Member `i`'s server name (as stream and consumer info name leaders).
    pub fn server_name(&self, i: usize) -> String {
        format!("cloudlysis-{}", self.members[i].port)
    }

    /// Which member a server name belongs to.
    pub fn member_named(&self, name: &str) -> Option<usize> {
        (0..MEMBERS).find(|i| self.server_name(*i) == name)
    }

    /// A client connected to member `i` only (it still learns the others from the cluster).
    pub async fn client(&self, i: usize) -> async_nats::Client {
        match async_nats::connect(self.url(i)).await {
            Ok(c) => c,
            Err(e) => panic!("connect to cluster member {i} at {}: {e}", self.url(i)),
        }
    }

    /// A JetStream context on a client of member `i`.
    pub async fn jetstream(&self, i: usize) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client(i).await)
    }

    /// Crashes member `i` (SIGKILL), waiting for the process to exit.
    pub async fn kill9(&mut self, i: usize) -> Result<(), HarnessError> {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts member `i` again on its ports and store; waits until it answers JetStream.
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        self.kill9(i).await?;
        self.launch(i)?;
        let url = self.url(i);
        nats_server::wait_until_ready(&url, START_DEADLINE)
            .await
            .map_err(|reason| self.not_ready(i, reason))
    }

    fn store_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("store-{i}"))
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("nats-{i}.log"))
    }

    fn launch(&mut self, i: usize) -> Result<(), HarnessError> {
        let routes = self
            .members
            .iter()
            .map(|m| format!("nats-route://127.0.0.1:{}", m.route_port))
            .collect();
        let args = ClusterArgs {
            name: self.name.clone(),
            port: self.members[i].route_port,
            routes,
        };
        let child = nats_server::spawn_clustered(
            &self.binary,
            "127.0.0.1",
            self.members[i].port,
            &self.store_dir(i),
            &self.log(i),
            &args,
        )?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Waits until an R3 stream can be created and deleted (a meta leader exists and every
    /// member takes part).
    async fn wait_ready(&self) -> Result<(), HarnessError> {
        let end = Instant::now() + START_DEADLINE * 2;
        let mut last = String::from("not tried");
        while Instant::now() < end {
            match self.probe().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            // A poll interval, not synchronisation: the members are separate processes.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(self.not_ready(0, last))
    }

    async fn probe(&self) -> Result<(), String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(self.url(0))
            .await
            .map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let name = "CLOUDLYSIS_CLUSTER_PROBE";
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec!["cloudlysis.cluster.probe".into()],
            num_replicas: MEMBERS,
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        js.delete_stream(name).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    fn not_ready(&self, i: usize, reason: String) -> HarnessError {
        HarnessError::NotReady {
            port: self.members[i].port,
            deadline: START_DEADLINE,
            reason,
            log: tail(&self.log(i)),
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(child) = m.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}
