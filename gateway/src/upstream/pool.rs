//! The channel-pool actor: one gRPC channel per node address, made on first use (connecting
//! lazily, reconnecting by itself, TLS for `https://` addresses), at most [`MAX_CHANNELS`]
//! (the least recently used goes first), dropped after [`IDLE_TTL`] unused, and evicted when its
//! node leaves the registry.
//!
//! Reads never wait: [`ChannelPool::get`] looks the address up in a shared map (a read lock
//! and an atomic "last used" stamp). Every change to the map — adopting a new channel, the
//! LRU bound, idle expiry, evicting a departed node — is made by the [`PoolActor`] behind a
//! bounded mailbox of [`POOL_MAILBOX`], supervised in the Gateway's tree. A miss makes a lazy
//! channel at once for the caller and offers it to the actor; when the mailbox is full the
//! channel serves that call unpooled (`result="unpooled"`) rather than making the caller wait.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `cloudlysis_gateway_channels` | — | channels in the pool |
//! | `cloudlysis_gateway_channel_pool_total` | `result` (`hit`, `miss`, `unpooled`, `evicted`, `expired`, `invalid`, `local`) | lookups and removals (`local`: a node in this process, called without the network) |

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cloudlysis_runtime::local::{LocalNode, NodeChannel};
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::tls::ClientTls;
use tokio::time::Instant;

use super::AbortOnDrop;

/// Most channels kept.
pub const MAX_CHANNELS: usize = 256;
/// A channel unused this long is dropped.
pub const IDLE_TTL: Duration = Duration::from_secs(300);
/// How often idle channels are looked for.
pub const IDLE_SWEEP: Duration = Duration::from_secs(30);
/// Pool changes waiting at once.
pub const POOL_MAILBOX: usize = 256;
/// Actor kind of the channel pool.
pub const POOL_KIND: &str = "channel_pool";

/// One pooled channel and when it was last handed out (ms since the pool's epoch).
#[derive(Debug)]
struct Pooled {
    channel: tonic::transport::Channel,
    used_ms: AtomicU64,
}

/// What readers and the actor share.
#[derive(Debug)]
struct Shared {
    channels: RwLock<HashMap<String, Pooled>>,
    epoch: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn report(&self, len: usize) {
        metrics::gauge!(names::GATEWAY_CHANNELS).set(len as f64);
    }
}

fn count(result: &'static str, n: u64) {
    metrics::counter!(names::GATEWAY_CHANNEL_POOL, "result" => result).increment(n);
}

/// Makes the pool's series exist at 0.
pub fn register_metrics() {
    metrics::gauge!(names::GATEWAY_CHANNELS).set(0.0);
    for result in [
        "hit", "miss", "unpooled", "evicted", "expired", "invalid", "local",
    ] {
        count(result, 0);
    }
}

/// Messages of the pool actor.
#[derive(Debug)]
pub enum PoolMsg {
    /// Keep this channel for the address (a miss made it), unless one is kept already.
    Adopt(String, tonic::transport::Channel),
    /// Drop the channel of the address (its node left); replies when done.
    Evict(String, Option<ractor::RpcReplyPort<()>>),
    /// Drop channels idle for [`IDLE_TTL`].
    Sweep,
}

/// Channels by node address: the read side, and the mailbox of the actor that changes it.
#[derive(Debug, Clone)]
pub struct ChannelPool {
    shared: Arc<Shared>,
    mailbox: BoundedRef<PoolMsg>,
    tls: ClientTls,
    connect_timeout: Duration,
    /// Nodes in this process by address: called without the network, never pooled.
    locals: Arc<HashMap<String, LocalNode>>,
}

impl ChannelPool {
    /// An empty pool whose channels connect within `connect_timeout` (each call carries its
    /// own deadline), with `tls` for `https://` addresses. Its actor is started with
    /// [`ChannelPool::actor`] behind the returned pool's mailbox.
    pub fn new(tls: ClientTls, connect_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                channels: RwLock::default(),
                epoch: Instant::now(),
            }),
            mailbox: BoundedRef::new(POOL_KIND, POOL_MAILBOX),
            tls,
            connect_timeout,
            locals: Arc::default(),
        }
    }

    /// Calls to these addresses go to the nodes in this process ([`LocalNode`]).
    pub fn with_locals(mut self, locals: Arc<HashMap<String, LocalNode>>) -> Self {
        self.locals = locals;
        self
    }

    /// The mailbox of the pool's actor (for its child spec).
    pub fn mailbox(&self) -> BoundedRef<PoolMsg> {
        self.mailbox.clone()
    }

    /// A fresh actor for this pool (each (re)start of the child).
    pub fn actor(&self) -> PoolActor {
        PoolActor {
            shared: self.shared.clone(),
        }
    }

    /// The channel to `addr` (`http://host:port` or `https://host:port`): the pooled one, or a
    /// new lazy one offered to the pool.
    pub fn get(&self, addr: &str) -> Result<NodeChannel, String> {
        if let Some(local) = self.locals.get(addr) {
            count("local", 1);
            return Ok(NodeChannel::Local(local.clone()));
        }
        {
            let map = self
                .shared
                .channels
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(p) = map.get(addr) {
                p.used_ms.store(self.shared.now_ms(), Ordering::Relaxed);
                count("hit", 1);
                return Ok(p.channel.clone().into());
            }
        }
        let channel = match self.tls.endpoint(addr) {
            Ok(e) => e
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .connect_lazy(),
            Err(e) => {
                count("invalid", 1);
                return Err(e.to_string());
            }
        };
        match self
            .mailbox
            .try_send(PoolMsg::Adopt(addr.to_string(), channel.clone()))
        {
            Ok(()) => count("miss", 1),
            Err(_) => count("unpooled", 1),
        }
        Ok(channel.into())
    }

    /// Drops the channel to `addr` (its node left), once the actor has done it.
    pub async fn evict(&self, addr: &str) {
        let _ = self
            .mailbox
            .ask(
                |reply| PoolMsg::Evict(addr.to_string(), Some(reply)),
                Duration::from_secs(5),
            )
            .await;
    }

    /// Addresses with a channel now.
    pub fn addresses(&self) -> Vec<String> {
        let map = self
            .shared
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = map.keys().cloned().collect();
        v.sort();
        v
    }
}

/// The actor that changes the pool (see the module docs).
pub struct PoolActor {
    shared: Arc<Shared>,
}

impl BoundedActor for PoolActor {
    type Msg = PoolMsg;
    type State = AbortOnDrop;
    type Arguments = ();
    const KIND: &'static str = POOL_KIND;

    async fn pre_start(
        &self,
        myself: BoundedRef<PoolMsg>,
        _: (),
    ) -> Result<AbortOnDrop, ActorProcessingErr> {
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_SWEEP);
            tick.tick().await;
            loop {
                tick.tick().await;
                // A full mailbox is busy with changes already; the next tick sweeps.
                let _ = myself.try_send(PoolMsg::Sweep);
            }
        });
        Ok(AbortOnDrop(ticker))
    }

    async fn handle(
        &self,
        _: &BoundedRef<PoolMsg>,
        msg: PoolMsg,
        _: &mut AbortOnDrop,
    ) -> Result<(), ActorProcessingErr> {
        let now = self.shared.now_ms();
        let mut map = self
            .shared
            .channels
            .write()
            .unwrap_or_else(|p| p.into_inner());
        match msg {
            PoolMsg::Adopt(addr, channel) => {
                if !map.contains_key(&addr) {
                    while map.len() >= MAX_CHANNELS {
                        let Some(oldest) = map
                            .iter()
                            .min_by_key(|(_, p)| p.used_ms.load(Ordering::Relaxed))
                            .map(|(a, _)| a.clone())
                        else {
                            break;
                        };
                        map.remove(&oldest);
                        count("evicted", 1);
                    }
                    map.insert(
                        addr,
                        Pooled {
                            channel,
                            used_ms: AtomicU64::new(now),
                        },
                    );
                }
            }
            PoolMsg::Evict(addr, reply) => {
                if map.remove(&addr).is_some() {
                    count("evicted", 1);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            PoolMsg::Sweep => {
                let ttl = IDLE_TTL.as_millis() as u64;
                let before = map.len();
                map.retain(|_, p| now.saturating_sub(p.used_ms.load(Ordering::Relaxed)) < ttl);
                count("expired", (before - map.len()) as u64);
            }
        }
        self.shared.report(map.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle(pool: &ChannelPool) {
        // The actor runs on this (paused-clock) runtime: yield until its mailbox is empty.
        for _ in 0..10_000 {
            if pool.mailbox.depth() == 0 {
                tokio::task::yield_now().await;
                if pool.mailbox.depth() == 0 {
                    return;
                }
            }
            tokio::task::yield_now().await;
        }
        panic!("the pool actor did not drain its mailbox");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pool_actor_reuses_bounds_expires_and_evicts() {
        let pool = ChannelPool::new(ClientTls::default(), Duration::from_secs(1));
        let (_actor, _) =
            cloudlysis_runtime::mailbox::spawn(pool.actor(), (), &pool.mailbox(), None)
                .await
                .unwrap();
        pool.get("http://127.0.0.1:1").unwrap();
        settle(&pool).await;
        pool.get("http://127.0.0.1:1").unwrap();
        assert_eq!(pool.addresses(), ["http://127.0.0.1:1"]);
        pool.evict("http://127.0.0.1:1").await;
        assert!(pool.addresses().is_empty());
        for port in 0..MAX_CHANNELS + 10 {
            pool.get(&format!("http://127.0.0.1:{}", 1000 + port))
                .unwrap();
            settle(&pool).await;
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let kept = pool.addresses();
        assert_eq!(kept.len(), MAX_CHANNELS);
        assert!(
            !kept.contains(&"http://127.0.0.1:1000".to_string()),
            "the oldest stayed"
        );
        tokio::time::advance(IDLE_TTL).await;
        pool.get("http://127.0.0.1:9").unwrap();
        pool.mailbox().try_send(PoolMsg::Sweep).unwrap();
        settle(&pool).await;
        assert_eq!(pool.addresses(), ["http://127.0.0.1:9"]);
        assert!(pool.get("not a uri").is_err());
    }

    #[tokio::test]
    async fn without_its_actor_the_pool_still_serves_calls_unpooled() {
        // No actor (stopped, restarting): calls get a channel, nothing is kept.
        let pool = ChannelPool::new(ClientTls::default(), Duration::from_secs(1));
        for port in 0..POOL_MAILBOX + 5 {
            pool.get(&format!("http://127.0.0.1:{}", 2000 + port))
                .unwrap();
        }
        assert!(pool.addresses().is_empty());
        assert_eq!(pool.mailbox.depth(), 0);
    }
}
