//! Poison records for messages the server gave up on by itself. A message whose every delivery
//! expired (its node died or stalled before settling it, `max_deliver` times) is dropped by the
//! server without a word to the consumer; the server publishes a `MAX_DELIVERIES` advisory
//! instead. Every node running the durable listens for it and writes the poison record (the
//! first writer wins; the others find it; while the poison bucket does not answer, each keeps
//! trying), so nothing leaves the stream's consumer without one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use cloudlysis_runtime::poison::{self, PoisonRecord};
use cloudlysis_runtime::subject;
use futures::StreamExt;
use serde::Deserialize;

use super::Shared;

/// The fields of a `io.nats.jetstream.advisory.v1.max_deliver` advisory we use.
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

/// Listens for the durable's `MAX_DELIVERIES` advisories until aborted.
pub(super) async fn watch(
    js: jetstream::Context,
    poison_kv: kv::Store,
    shared: Arc<Shared>,
    io_timeout: Duration,
) {
    let subject = subject::max_deliveries_advisory(&shared.stream, &shared.durable);
    let client = js.client();
    loop {
        let mut sub = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%subject, error = %e, "cannot subscribe to max-deliveries advisories; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(msg) = sub.next().await {
            let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(&msg.payload) else {
                tracing::warn!(%subject, "max-deliveries advisory does not decode");
                continue;
            };
            record(&js, &poison_kv, &shared, &advisory, io_timeout).await;
        }
    }
}

/// Writes the poison record of an expired message unless one exists.
async fn record(
    js: &jetstream::Context,
    poison_kv: &kv::Store,
    shared: &Shared,
    advisory: &MaxDeliveries,
    io_timeout: Duration,
) {
    let seq = advisory.stream_seq;
    let original = async {
        js.get_stream(&shared.stream)
            .await
            .map_err(|e| e.to_string())?
            .get_raw_message(seq)
            .await
            .map_err(|e| e.to_string())
    };
    let (subject, headers) = match tokio::time::timeout(io_timeout, original).await {
        Ok(Ok(m)) => (m.subject.to_string(), Some(m.headers)),
        _ => (String::new(), None),
    };
    let record = PoisonRecord::new(
        &shared.stream,
        &shared.durable,
        seq,
        &subject,
        headers.as_ref(),
        format!(
            "delivered {} times without being settled: every delivery's ack wait expired \
             (the handling node died or stalled); the server stopped redelivering it",
            advisory.deliveries
        ),
        advisory.deliveries,
    );
    let Ok(bytes) = serde_json::to_vec(&record) else {
        return;
    };
    let key = poison::key(&shared.durable, seq);
    // The advisory is said once: a record not written now is never written. Keep trying while
    // the poison bucket does not answer (later advisories wait in the subscription meanwhile).
    let mut failures = 0u32;
    loop {
        let why = match tokio::time::timeout(
            io_timeout,
            poison_kv.create(&key, bytes.clone().into()),
        )
        .await
        {
            Ok(Ok(_)) => {
                tracing::warn!(consumer = %shared.durable, seq, "message expired max_deliver times; quarantined as poison");
                super::announce_poison(js, &record).await;
                shared.metrics.poison.increment(1);
                return;
            }
            // Another node wrote it first, or the handler's own quarantine did.
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        failures += 1;
        shared.metrics.poison_write_failures.increment(1);
        if failures == 1 || failures.is_multiple_of(12) {
            tracing::error!(consumer = %shared.durable, seq, attempt = failures, error = %why, "cannot write the poison record of an expired message; trying again");
        }
        tokio::time::sleep(crate::task::retry_delay(failures)).await;
    }
}
