//! The channel pool: one gRPC channel per node address, created on first use (connecting
//! lazily, reconnecting by itself), at most [`MAX_CHANNELS`] (the least recently used goes
//! first), dropped after [`IDLE_TTL`] unused, and evicted when its node leaves the registry.
//!
//! A map under a mutex, not an actor: a lookup is the hot path of every request and takes
//! nanoseconds; nothing in it waits. `cloudlysis_gateway_channels` (gauge) and
//! `cloudlysis_gateway_channel_pool_total{result="hit"|"miss"|"evicted"|"expired"}` show it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cloudlysis_runtime::metrics::names;
use tokio::time::Instant;

/// Most channels kept.
pub const MAX_CHANNELS: usize = 256;
/// A channel unused this long is dropped.
pub const IDLE_TTL: Duration = Duration::from_secs(300);

/// Channels by node address.
#[derive(Debug)]
pub struct ChannelPool {
    channels: Mutex<HashMap<String, (tonic::transport::Channel, Instant)>>,
    connect_timeout: Duration,
}

/// Makes the pool's series exist at 0.
pub fn register_metrics() {
    metrics::gauge!(names::GATEWAY_CHANNELS).set(0.0);
    for result in ["hit", "miss", "evicted", "expired"] {
        metrics::counter!(names::GATEWAY_CHANNEL_POOL, "result" => result).increment(0);
    }
}

impl ChannelPool {
    /// An empty pool whose channels connect within `connect_timeout` (each call carries its
    /// own deadline).
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            channels: Mutex::default(),
            connect_timeout,
        }
    }

    /// The channel to `addr` (`http://host:port`), made on first use.
    pub fn get(&self, addr: &str) -> Result<tonic::transport::Channel, String> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some((channel, used)) = map.get_mut(addr) {
            *used = now;
            metrics::counter!(names::GATEWAY_CHANNEL_POOL, "result" => "hit").increment(1);
            return Ok(channel.clone());
        }
        // Idle channels go first, then the least recently used while the pool is full.
        let before = map.len();
        map.retain(|_, (_, used)| now.duration_since(*used) < IDLE_TTL);
        let expired = before - map.len();
        if expired > 0 {
            metrics::counter!(names::GATEWAY_CHANNEL_POOL, "result" => "expired")
                .increment(expired as u64);
        }
        while map.len() >= MAX_CHANNELS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(a, _)| a.clone())
            else {
                break;
            };
            map.remove(&oldest);
            metrics::counter!(names::GATEWAY_CHANNEL_POOL, "result" => "evicted").increment(1);
        }
        let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
            .map_err(|e| format!("invalid node address {addr}: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        map.insert(addr.to_string(), (channel.clone(), now));
        metrics::counter!(names::GATEWAY_CHANNEL_POOL, "result" => "miss").increment(1);
        metrics::gauge!(names::GATEWAY_CHANNELS).set(map.len() as f64);
        Ok(channel)
    }

    /// Drops the channel to `addr` (its node left).
    pub fn evict(&self, addr: &str) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if map.remove(addr).is_some() {
            metrics::counter!(names::GATEWAY_CHANNEL_POOL, "result" => "evicted").increment(1);
        }
        metrics::gauge!(names::GATEWAY_CHANNELS).set(map.len() as f64);
    }

    /// Addresses with a channel now.
    pub fn addresses(&self) -> Vec<String> {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = map.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pool_reuses_bounds_expires_and_evicts() {
        let pool = ChannelPool::new(Duration::from_secs(1));
        pool.get("http://127.0.0.1:1").unwrap();
        pool.get("http://127.0.0.1:1").unwrap();
        assert_eq!(pool.addresses(), ["http://127.0.0.1:1"]);
        pool.evict("http://127.0.0.1:1");
        assert!(pool.addresses().is_empty());
        for port in 0..MAX_CHANNELS + 10 {
            pool.get(&format!("http://127.0.0.1:{}", 1000 + port))
                .unwrap();
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
        assert_eq!(pool.addresses(), ["http://127.0.0.1:9"]);
        assert!(pool.get("not a uri").is_err());
    }
}
