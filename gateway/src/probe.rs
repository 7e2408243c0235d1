//! The probe fan-out actor: asks every node the Gateway routes to for its description (role,
//! version, uptime, whether it takes work, its supervision tree) — at most
//! [`PROBE_CONCURRENCY`] calls at once, each with a [`PROBE_DEADLINE`], the answers cached for
//! [`PROBE_TTL`] — behind a bounded mailbox of [`PROBE_MAILBOX`]. With registry placement the
//! nodes asked are the registry's live ones at each fan-out.
//!
//! Requests that arrive while a fan-out runs wait in the mailbox and are answered from the
//! fresh cache: repeated calls within the TTL cost one fan-out. A full mailbox refuses at once
//! (the route answers 503 with `Retry-After`). The actor runs under the Gateway's supervisor.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `cloudlysis_gateway_probes_total` | `result` (`fanout`, `cached`, `rejected`) | probe requests and how they were answered |

use std::time::Duration;

use cloudlysis_proto::node::node_admin_client::NodeAdminClient;
use cloudlysis_proto::node::{DescribeRequest, DescribeResponse};
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_runtime::metrics::names;
use futures::StreamExt;
use ractor::RpcReplyPort;

/// Most probe calls in flight at once.
pub const PROBE_CONCURRENCY: usize = 8;
/// Deadline of one node's probe.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(2);
/// How long answers are served from the cache.
pub const PROBE_TTL: Duration = Duration::from_secs(1);
/// Probe requests waiting at once.
pub const PROBE_MAILBOX: usize = 64;
/// Actor kind of the probe fan-out.
pub const PROBE_KIND: &str = "probe_fanout";

/// A node the Gateway routes to.
#[derive(Clone, Debug)]
pub struct Target {
    /// `aggregate`, `projection` or `runner`.
    pub role: &'static str,
    /// Its gRPC address.
    pub address: String,
    /// Its channel.
    pub channel: cloudlysis_runtime::local::NodeChannel,
}

/// What one node answered.
#[derive(Clone, Debug)]
pub struct Probed {
    /// The node asked.
    pub role: &'static str,
    /// Its address.
    pub address: String,
    /// Its description, or why there is none.
    pub answer: Result<DescribeResponse, String>,
}

/// Messages of the probe actor.
pub enum ProbeMsg {
    /// Every node's answer, fresh within the TTL; the context (the Gateway's own tenant-less
    /// credential, the request's correlation and trace) travels with the calls of a fan-out it
    /// starts.
    Probe(crate::NodeCall, RpcReplyPort<Vec<Probed>>),
}

/// The nodes to ask, decided at each fan-out (the static addresses, or the registry's live
/// nodes).
pub type Targets = std::sync::Arc<dyn Fn() -> Vec<Target> + Send + Sync>;

/// The probe fan-out actor.
pub struct ProbeActor {
    /// The nodes to ask.
    pub targets: Targets,
    /// Fan-outs made (shared with the Gateway, which reports it).
    pub fanouts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The actor's state: the last fan-out and when it ran.
pub struct ProbeState {
    cache: Option<(tokio::time::Instant, Vec<Probed>)>,
}

impl BoundedActor for ProbeActor {
    type Msg = ProbeMsg;
    type State = ProbeState;
    type Arguments = ();
    const KIND: &'static str = PROBE_KIND;

    async fn pre_start(
        &self,
        _: BoundedRef<ProbeMsg>,
        _: (),
    ) -> Result<ProbeState, ActorProcessingErr> {
        Ok(ProbeState { cache: None })
    }

    async fn handle(
        &self,
        _: &BoundedRef<ProbeMsg>,
        msg: ProbeMsg,
        state: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        let ProbeMsg::Probe(ctx, reply) = msg;
        if let Some((at, answers)) = &state.cache
            && at.elapsed() < PROBE_TTL
        {
            metrics::counter!(names::GATEWAY_PROBES, "result" => "cached").increment(1);
            let _ = reply.send(answers.clone());
            return Ok(());
        }
        metrics::counter!(names::GATEWAY_PROBES, "result" => "fanout").increment(1);
        self.fanouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answers = fan_out(&(self.targets)(), &ctx).await;
        state.cache = Some((tokio::time::Instant::now(), answers.clone()));
        let _ = reply.send(answers);
        Ok(())
    }
}

/// Asks every target, [`PROBE_CONCURRENCY`] at a time, each within [`PROBE_DEADLINE`].
async fn fan_out(targets: &[Target], ctx: &crate::NodeCall) -> Vec<Probed> {
    futures::stream::iter(targets.iter().cloned().map(|t| {
        let ctx = ctx.clone();
        async move {
            let mut client = NodeAdminClient::new(t.channel.clone());
            let mut req = tonic::Request::new(DescribeRequest {});
            ctx.inject(req.metadata_mut());
            req.set_timeout(PROBE_DEADLINE);
            let answer = match tokio::time::timeout(PROBE_DEADLINE, client.describe(req)).await {
                Ok(Ok(r)) => Ok(r.into_inner()),
                Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => Err(format!("no answer within {PROBE_DEADLINE:?}")),
            };
            Probed {
                role: t.role,
                address: t.address,
                answer,
            }
        }
    }))
    .buffered(PROBE_CONCURRENCY)
    .collect()
    .await
}
