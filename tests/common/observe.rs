//! What tests look at besides the API: an effect that counts its executions, the poison
//! bucket's keys, a counter in the process's Prometheus output.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloudlysis_actors::runner::{Effect, EffectContext, EffectError};
use cloudlysis_examples::transfer::{AccountMove, Moved};
use futures::StreamExt;

/// Counts executions of the effect it wraps.
pub struct Counted<E> {
    pub inner: E,
    pub runs: Arc<AtomicU64>,
}

impl<E: Effect<Command = AccountMove, Output = Moved>> Effect for Counted<E> {
    const TYPE: &'static str = E::TYPE;
    type Command = AccountMove;
    type Output = Moved;

    async fn execute(&self, cmd: AccountMove, ctx: &EffectContext) -> Result<Moved, EffectError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.inner.execute(cmd, ctx).await
    }
}

/// Runs the effect it wraps once `open` says so, counting executions (as they start).
pub struct Gated<E> {
    pub inner: E,
    pub open: tokio::sync::watch::Receiver<bool>,
    pub runs: Arc<AtomicU64>,
}

impl<E: Effect<Command = AccountMove, Output = Moved>> Effect for Gated<E> {
    const TYPE: &'static str = E::TYPE;
    type Command = AccountMove;
    type Output = Moved;

    async fn execute(&self, cmd: AccountMove, ctx: &EffectContext) -> Result<Moved, EffectError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        self.inner.execute(cmd, ctx).await
    }
}

/// Keys of the poison bucket, asked until NATS answers (a cluster member may have just
/// restarted); panics after 30 s.
pub async fn poison_keys(js: &async_nats::jetstream::Context) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = async {
            let bucket = js.get_key_value("cloudlysis_poison").await.ok()?;
            let keys = bucket.keys().await.ok()?;
            let keys: Vec<Result<String, _>> = keys.collect().await;
            keys.into_iter().collect::<Result<Vec<String>, _>>().ok()
        };
        match answer.await {
            Some(keys) => return keys,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            None => panic!("the poison bucket does not answer"),
        }
    }
}

/// The sum of the samples of family `name` whose labels include `labels`, in the process's
/// Prometheus output `text` (0 when absent).
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Takes a stream away (a KV bucket's store: no responders, as while its leader is elected) and
/// returns its config, to [`restore_stream`] it.
pub async fn remove_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> async_nats::jetstream::stream::Config {
    let config = js
        .get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    js.delete_stream(name).await.unwrap();
    config
}

/// Creates a stream [`remove_stream`] took away again (empty).
pub async fn restore_stream(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::stream::Config,
) {
    js.create_stream(config).await.unwrap();
}

/// A KV bucket taken away with its records, to be put back as they were (see [`take_bucket`]).
pub struct TakenBucket {
    pub config: async_nats::jetstream::stream::Config,
    /// Key, value and revision of every record, oldest revision first.
    pub records: Vec<(String, bytes::Bytes, u64)>,
}

/// Takes KV bucket `bucket` away (its stream deleted: no responders, as while its leader is
/// elected), keeping its records to [`put_back`] — as a leader election keeps them.
pub async fn take_bucket(js: &async_nats::jetstream::Context, bucket: &str) -> TakenBucket {
    let kv = js.get_key_value(bucket).await.unwrap();
    let keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    let mut records = Vec::new();
    for key in keys {
        if let Some(entry) = kv.entry(&key).await.unwrap() {
            records.push((key, entry.value, entry.revision));
        }
    }
    records.sort_by_key(|(_, _, revision)| *revision);
    let config = remove_stream(js, &format!("KV_{bucket}")).await;
    TakenBucket { config, records }
}

/// Creates a bucket [`take_bucket`] took away again with its records at their revisions, so a
/// compare-and-set a handler began before the outage succeeds after it (the sequences between
/// them are filled and purged). Not atomic: call it just after the holder's retry was seen (a
/// held-age gauge moved), so that its next try, a backoff away (at least 0.8 s once held for
/// 1 s), finds the records in place.
pub async fn put_back(js: &async_nats::jetstream::Context, taken: TakenBucket) {
    let mut config = taken.config;
    config.first_sequence = taken.records.first().map(|(_, _, revision)| *revision);
    let name = config.name.clone();
    let prefix = format!("$KV.{}.", name.trim_start_matches("KV_"));
    let stream = js.create_stream(config).await.unwrap();
    let gap = format!("{prefix}_restore_gap");
    for (key, value, revision) in taken.records {
        loop {
            let next = stream.get_info().await.unwrap().state.last_sequence + 1;
            if next >= revision {
                assert_eq!(next, revision, "{key} cannot be put back at {revision}");
                break;
            }
            js.publish(gap.clone(), bytes::Bytes::new())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        js.publish(format!("{prefix}{key}"), value)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    stream.purge().filter(gap).await.unwrap();
}

/// Waits (up to 30 s) until a message was quarantined, or the retry counter `retries` reached
/// 3 — long enough for a store outage counted as failures to have shown as poison — and
/// returns the poison bucket's keys then.
pub async fn poison_after_an_outage(
    js: &async_nats::jetstream::Context,
    metrics: impl Fn() -> String,
    retries: &str,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = poison_keys(js).await;
        if !keys.is_empty() || counter(&metrics(), retries, &[]) >= 3.0 {
            return keys;
        }
        assert!(Instant::now() < deadline, "neither quarantined nor retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until counter `count` (with `labels`) reached 3 in `metrics` — messages tried again
/// through an outage — asserting at each look that nothing was quarantined; panics after 30 s.
pub async fn held_not_poisoned(
    js: &async_nats::jetstream::Context,
    metrics: impl Fn() -> String,
    count: &str,
    labels: &[(&str, &str)],
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(&metrics(), count, labels) < 3.0 {
        assert_eq!(
            poison_keys(js).await,
            Vec::<String>::new(),
            "the outage quarantined a message"
        );
        assert!(Instant::now() < deadline, "{count} did not reach 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(poison_keys(js).await, Vec::<String>::new());
}

/// Waits until `runs` counts a start (an effect at its gate); panics after 30 s.
pub async fn until_started(runs: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the effect did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `gauge` (the series with `labels`) in `metrics` until it reads at least `seconds` (a
/// hold's age grows while the store stays away), panicking after 30 s.
pub async fn held_for_at_least(
    metrics: impl Fn() -> String,
    gauge: &str,
    labels: &[(&str, &str)],
    seconds: f64,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if counter(&metrics(), gauge, labels) >= seconds {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{gauge} did not reach {seconds} s while the store was away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
