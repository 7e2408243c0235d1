//! Shared pieces of the consumer tests: a real server with the event stream, a scriptable
//! handler, publishing and polling helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cloudlysis_actors::consumer::{self, CheckpointFn, ConsumerHandle};
use cloudlysis_actors::handler::{Delivery, EventHandler, HandlerError};
use cloudlysis_runtime::consumer::{ConsumerPolicy, ConsumerSettings, DurableName, NakBackoff};
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::mailbox::ActorProcessingErr;
use cloudlysis_runtime::{nats, stream, subject};
use cloudlysis_supervision::{Backoff, SupervisorRef};
use cloudlysis_test_support::NatsServer;
use serde::Deserialize;

pub const STREAM: &str = "AGGREGATE_EVENTS";

/// What a test event asks the handler to do.
#[derive(Debug, Deserialize)]
pub struct TestEvent {
    pub id: u64,
    #[serde(default)]
    pub fail_times: u64,
    #[serde(default)]
    pub always_fail: bool,
    #[serde(default)]
    pub panic_once: bool,
    /// Deferred (not due yet) this many times before it succeeds.
    #[serde(default)]
    pub defer_times: u64,
    /// Its store "does not answer" this many times before it succeeds.
    #[serde(default)]
    pub unavailable_times: u64,
}

/// What the handler saw, shared across handler restarts.
#[derive(Clone, Default)]
pub struct Seen {
    pub attempts: Arc<Mutex<HashMap<u64, u64>>>,
    pub successes: Arc<Mutex<HashMap<u64, u64>>>,
    /// The server's delivery count of each message's last success.
    pub delivered: Arc<Mutex<HashMap<u64, u64>>>,
    /// Each message waits for a permit when set (to hold messages in flight).
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Seen {
    pub fn gated() -> Self {
        Self {
            gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
            ..Self::default()
        }
    }
    pub fn attempts(&self, id: u64) -> u64 {
        self.attempts.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
    pub fn successes(&self, id: u64) -> u64 {
        self.successes
            .lock()
            .unwrap()
            .get(&id)
            .copied()
            .unwrap_or(0)
    }
    pub fn distinct_successes(&self) -> usize {
        self.successes.lock().unwrap().len()
    }
}

pub struct Scripted(pub Seen);

impl EventHandler for Scripted {
    type Event = TestEvent;
    type State = ();
    const KIND: &'static str = "test_handler";

    async fn init(&self) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<TestEvent>, _: &mut ()) -> Result<(), HandlerError> {
        if let Some(gate) = &self.0.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        let e = &d.event;
        let n = {
            let mut a = self.0.attempts.lock().unwrap();
            let n = a.entry(e.id).or_insert(0);
            *n += 1;
            *n
        };
        if n <= e.defer_times {
            return Err(HandlerError::defer(
                Duration::from_millis(50),
                format!("event {} not due (delivery {n})", e.id),
            ));
        }
        if n <= e.defer_times + e.unavailable_times {
            return Err(HandlerError::unavailable(format!(
                "event {}: the store does not answer (try {n})",
                e.id
            )));
        }
        if e.panic_once && n == 1 {
            panic!("event {} panics once", e.id);
        }
        if e.always_fail || n <= e.fail_times {
            return Err(HandlerError::new(format!(
                "event {} failed attempt {n}",
                e.id
            )));
        }
        *self.0.successes.lock().unwrap().entry(e.id).or_insert(0) += 1;
        self.0
            .delivered
            .lock()
            .unwrap()
            .insert(e.id, d.meta.delivered);
        Ok(())
    }
}

pub fn policy(name: &str, max_in_flight: u64, max_deliver: u64) -> ConsumerPolicy {
    ConsumerPolicy {
        durable: DurableName::projection_view(&name.try_into().unwrap()),
        filter_subjects: vec![subject::filter::all_aggregate_events()],
        settings: ConsumerSettings {
            ack_wait: Duration::from_secs(30),
            max_deliver,
            max_in_flight,
            nak_backoff: NakBackoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
                multiplier: 2,
            },
            server_max_ack_pending: None,
        },
    }
}

pub async fn server() -> (NatsServer, async_nats::jetstream::Context) {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    stream::ensure_stream(&js, &stream::aggregate_events())
        .await
        .unwrap();
    (server, js)
}

/// Publishes `payload` (JSON text) as event `id` of aggregate `a-<id>` for tenant `acme`.
pub async fn publish(js: &async_nats::jetstream::Context, id: u64, payload: &str) {
    let tenant = TenantId::new("acme").unwrap();
    let subj = subject::aggregate_event(
        &tenant,
        &"account".try_into().unwrap(),
        &format!("a-{id}").try_into().unwrap(),
    );
    nats::publish(
        js,
        subj,
        &RequestContext::new(tenant),
        &format!("evt-{id}"),
        None,
        Bytes::from(payload.to_string()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

pub async fn start(
    js: &async_nats::jetstream::Context,
    name: &str,
    policy: ConsumerPolicy,
    seen: &Seen,
    checkpoint: Option<CheckpointFn>,
) -> (SupervisorRef, ConsumerHandle<TestEvent>) {
    let seen = seen.clone();
    let (config, handle) =
        consumer::supervised(name, js.clone(), STREAM, policy, checkpoint, move || {
            Scripted(seen.clone())
        });
    let sup = SupervisorRef::start(config.backoff(Backoff::none()), None)
        .await
        .unwrap();
    (sup, handle)
}

/// Polls `cond` every 20 ms for up to 30 s.
pub async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 30 s");
}

/// The value of one metric series in the Prometheus text, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}
