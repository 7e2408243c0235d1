//! Bounded-mailbox throughput against its baselines, measured in the same run:
//!
//! * `bounded_ref` — `BoundedRef::send(..).await` into a `BoundedActor` (capacity 1024);
//! * `ractor_cast` — raw `ActorRef::cast` into a plain ractor actor (unbounded mailbox);
//! * `tokio_mpsc` — a `tokio::sync::mpsc` channel of capacity 1024 drained by one task.
//!
//! Each iteration sends `N` messages from one producer and waits until the consumer has
//! handled all of them, on a one-thread runtime (pure per-message cost) and on a two-worker
//! runtime (cross-thread hand-off). Run: `cargo bench -p cloudlysis-runtime --bench mailbox`.

use std::time::Duration;

use cloudlysis_runtime::mailbox::{self, ActorProcessingErr, BoundedActor, BoundedRef};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

const N: u64 = 10_000;
const CAPACITY: usize = 1024;

enum Msg {
    Work(u64),
    Done(oneshot::Sender<u64>),
}

struct Bounded;

impl BoundedActor for Bounded {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();
    const KIND: &'static str = "bench";

    async fn pre_start(&self, _: BoundedRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: &BoundedRef<Msg>,
        msg: Msg,
        sum: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Work(x) => *sum = sum.wrapping_add(x),
            Msg::Done(tx) => {
                let _ = tx.send(*sum);
            }
        }
        Ok(())
    }
}

struct Raw;

impl Actor for Raw {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Msg>,
        msg: Msg,
        sum: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Work(x) => *sum = sum.wrapping_add(x),
            Msg::Done(tx) => {
                let _ = tx.send(*sum);
            }
        }
        Ok(())
    }
}

fn throughput(c: &mut Criterion) {
    // One thread: the pure per-message cost, no cross-thread wake-ups.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    group(c, "mailbox_1_thread", &single);
    // Two workers (the machine's cores): producer and actor on different threads.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    group(c, "mailbox_2_threads", &multi);
}

fn group(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(N));
    group.measurement_time(Duration::from_secs(5));

    let bounded = rt.block_on(async {
        let r = BoundedRef::new(Bounded::KIND, CAPACITY);
        mailbox::spawn(Bounded, (), &r, None).await.expect("spawn");
        r
    });
    group.bench_function("bounded_ref", |b| {
        b.to_async(rt).iter(|| async {
            for i in 0..N {
                let _ = bounded.send(Msg::Work(i)).await;
            }
            let (tx, rx) = oneshot::channel();
            let _ = bounded.send(Msg::Done(tx)).await;
            rx.await.expect("reply")
        })
    });

    let raw = rt.block_on(async { Actor::spawn(None, Raw, ()).await.expect("spawn").0 });
    group.bench_function("ractor_cast", |b| {
        b.to_async(rt).iter(|| async {
            for i in 0..N {
                let _ = raw.cast(Msg::Work(i));
            }
            let (tx, rx) = oneshot::channel();
            let _ = raw.cast(Msg::Done(tx));
            rx.await.expect("reply")
        })
    });

    let mpsc = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(CAPACITY);
        tokio::spawn(async move {
            let mut sum = 0u64;
            while let Some(msg) = rx.recv().await {
                match msg {
                    Msg::Work(x) => sum = sum.wrapping_add(x),
                    Msg::Done(tx) => {
                        let _ = tx.send(sum);
                    }
                }
            }
        });
        tx
    });
    group.bench_function("tokio_mpsc", |b| {
        b.to_async(rt).iter(|| async {
            for i in 0..N {
                let _ = mpsc.send(Msg::Work(i)).await;
            }
            let (tx, rx) = oneshot::channel();
            let _ = mpsc.send(Msg::Done(tx)).await;
            rx.await.expect("reply")
        })
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
