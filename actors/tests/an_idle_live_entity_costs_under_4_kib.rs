//! What an idle live entity costs in memory (issue 15: ≤ 4 KiB per live entity): the heap this
//! process holds after opening 2 000 entities, over what it held before, per entity — counted
//! by a global allocator that tallies live bytes, so the figure is exact, not a resident-set
//! estimate. With one ractor actor per entity it was ≈ 9 KiB (two unbounded channels, the
//! actor's cell and task, its mailbox and supervisor record); entities are now cells in their
//! host's registry (ADR 0012).

use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{
    Aggregate, AggregateSettings, CommandContext, CommandRequest, Rejection,
};
use cloudlysis_runtime::{RequestContext, SubjectToken, TenantId};
use cloudlysis_test_support::NatsServer;
use serde::{Deserialize, Serialize};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

/// The system allocator, counting (a test-only allocator; the binary uses mimalloc).
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

struct Account;

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum Command {
    Open,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
enum Event {
    Opened,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    const SCHEMA_VERSION: u32 = 1;
    type State = bool;
    type Command = Command;
    type Event = Event;
    fn handle(open: &bool, _: Command, _: &CommandContext) -> Result<Vec<Event>, Rejection> {
        if *open {
            return Err(Rejection("already open".into()));
        }
        Ok(vec![Event::Opened])
    }
    fn apply(open: &mut bool, _: &Event) {
        *open = true;
    }
}

async fn open(node: &AggregateNode, range: std::ops::Range<usize>) {
    for i in range {
        let req = CommandRequest {
            ctx: RequestContext::new(TenantId::new("acme").unwrap()),
            aggregate_id: SubjectToken::new(format!("a{i}")).unwrap(),
            command_type: "Open".into(),
            payload: "null".into(),
            expected_version: None,
            deadline: None,
        };
        node.execute("account", req).await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_live_entity_costs_under_4_kib() {
    const N: usize = 2_000;
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let node = AggregateNode::builder(js, AggregateSettings::default())
        .register::<Account>()
        .build()
        .await
        .unwrap();
    // Warm up: the client's buffers, the registry's first shards, metrics series.
    open(&node, 0..200).await;
    let region = Region::new(GLOBAL);
    open(&node, 200..200 + N).await;
    let change = region.change();
    assert_eq!(node.live_entities("account").len(), 200 + N);
    let held = change.bytes_allocated as f64 - change.bytes_deallocated as f64
        + change.bytes_reallocated as f64;
    let per_entity = held / N as f64;
    println!("{per_entity:.0} bytes of heap per idle live entity");
    assert!(
        per_entity <= 4096.0,
        "an idle live entity holds {per_entity:.0} bytes of heap (goal: at most 4 KiB)"
    );
}
