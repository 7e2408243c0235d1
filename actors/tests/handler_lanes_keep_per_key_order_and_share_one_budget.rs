//! A consumer with several handler lanes: messages with the same partition key are handled one
//! at a time in delivery order, different keys run concurrently, and all lanes together stay
//! within one `max_in_flight` — which is also the server's `max_ack_pending`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cloudlysis_actors::consumer::{self, PartitionFn};
use cloudlysis_actors::handler::{Delivery, EventHandler, HandlerError};
use cloudlysis_runtime::mailbox::ActorProcessingErr;
use cloudlysis_supervision::{Backoff, SupervisorRef};
use common::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Keyed {
    id: u64,
    key: u64,
}

#[derive(Clone)]
struct Record {
    order: Arc<Mutex<HashMap<u64, Vec<u64>>>>,
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
    /// The first messages of keys 0 and 1 each wait here for the other: only concurrent lanes
    /// get past it.
    meet: Arc<tokio::sync::Barrier>,
}

struct Recorder(Record);

impl EventHandler for Recorder {
    type Event = Keyed;
    type State = ();
    const KIND: &'static str = "lane_test";

    async fn init(&self) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<Keyed>, _: &mut ()) -> Result<(), HandlerError> {
        let r = &self.0;
        let now = r.now.fetch_add(1, Ordering::SeqCst) + 1;
        r.max.fetch_max(now, Ordering::SeqCst);
        if d.event.id < 2 && d.meta.delivered == 1 {
            r.meet.wait().await;
        }
        // Long enough for the other lanes to pile up if they could.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        r.order
            .lock()
            .unwrap()
            .entry(d.event.key)
            .or_default()
            .push(d.event.id);
        r.now.fetch_sub(1, Ordering::SeqCst);
        r.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

const EVENTS: u64 = 198;
const KEYS: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_keep_per_key_order_run_keys_concurrently_and_share_one_budget() {
    let (_server, js) = server().await;
    for id in 0..EVENTS {
        publish(&js, id, &format!(r#"{{"id":{id},"key":{}}}"#, id % KEYS)).await;
    }
    let record = Record {
        order: Arc::default(),
        now: Arc::default(),
        max: Arc::default(),
        done: Arc::default(),
        meet: Arc::new(tokio::sync::Barrier::new(2)),
    };
    let partition: PartitionFn<Keyed> = Arc::new(|e: &Keyed| e.key);
    let r = record.clone();
    let (config, handle) = consumer::supervised_lanes(
        "lanes",
        js.clone(),
        STREAM,
        policy("lanes", 3, 5),
        None,
        8,
        Some(partition),
        move || Recorder(r.clone()),
    );
    let _sup = SupervisorRef::start(config.backoff(Backoff::none()), None)
        .await
        .unwrap();

    until(|| record.done.load(Ordering::SeqCst) >= EVENTS as usize).await;

    let order = record.order.lock().unwrap().clone();
    for key in 0..KEYS {
        let ids = &order[&key];
        assert!(ids.len() as u64 >= EVENTS / KEYS, "key {key}");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "key {key} handled out of order: {ids:?}"
        );
    }
    let max = record.max.load(Ordering::SeqCst);
    assert!(max >= 2, "lanes never ran concurrently");
    // Eight lanes, but one budget of three: never more than three handled at once.
    assert!(
        max <= 3,
        "{max} handled at once with max_in_flight 3 over 8 lanes"
    );
    assert_eq!(handle.handler.capacity(), 3);
    let mut consumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
            "cloudlysis-projection-view-lanes",
        )
        .await
        .unwrap();
    assert_eq!(consumer.info().await.unwrap().config.max_ack_pending, 3);
}
