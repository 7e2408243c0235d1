//! What starting (and stopping) one more child costs as a supervisor's children grow — the
//! aggregate node starts one per entity. The baseline is the same operation under a supervisor
//! with no other children, measured in the same run; the cost should stay flat (the children
//! are indexed by name and actor id, not scanned).
//!
//! Run: `cargo bench -p cloudlysis-supervision --bench start_child`.

use std::time::Duration;

use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_supervision::{ChildSpec, Restart, SupervisorConfig, SupervisorRef};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

struct Idle;

impl BoundedActor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    const KIND: &'static str = "bench";
    async fn pre_start(&self, _: BoundedRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: &BoundedRef<()>,
        _: (),
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

fn spec(name: String) -> ChildSpec {
    ChildSpec::bounded(name, BoundedRef::new(Idle::KIND, 4), || (Idle, ()))
        .restart(Restart::Temporary)
}

fn start_child(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("start_and_stop_one_child");
    group.measurement_time(Duration::from_secs(5));
    for existing in [0usize, 10_000, 100_000] {
        let sup = rt.block_on(async {
            let sup = SupervisorRef::start(SupervisorConfig::new("bench"), None)
                .await
                .unwrap();
            for i in 0..existing {
                sup.start_child(spec(format!("idle-{i}"))).await.unwrap();
            }
            sup
        });
        let mut n = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(existing), &existing, |b, _| {
            b.to_async(&rt).iter(|| {
                n += 1;
                let name = format!("probe-{n}");
                let sup = sup.clone();
                async move {
                    sup.start_child(spec(name.clone())).await.unwrap();
                    sup.stop_child(&name).await.unwrap();
                }
            })
        });
        rt.block_on(sup.shutdown(Duration::from_secs(120))).unwrap();
    }
    group.finish();
}

criterion_group!(benches, start_child);
criterion_main!(benches);
