//! A command whose commit (its events with the headers) is over NATS `max_payload` is refused —
//! the client never sends it, so "nothing was committed" is known and said — instead of being
//! answered `outcome-unknown` as if it might have landed. The entity goes on: the next command
//! commits at version 1. (Before: `OutcomeUnknown("publish … failed: max payload size
//! exceeded")`, which tells a client to find out whether it committed.)

use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{
    Aggregate, AggregateSettings, CommandContext, CommandError, CommandRequest, Rejection,
};
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_test_support::NatsServer;
use serde::{Deserialize, Serialize};

/// `Grow { kib }` records a blob of `kib` KiB.
struct Blobs;

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum BlobCommand {
    Grow { kib: usize },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
enum BlobEvent {
    Grown { blob: String },
}

impl Aggregate for Blobs {
    const TYPE: &'static str = "blobs";
    const SCHEMA_VERSION: u32 = 1;
    type State = u64;
    type Command = BlobCommand;
    type Event = BlobEvent;

    fn handle(_: &u64, c: BlobCommand, _: &CommandContext) -> Result<Vec<BlobEvent>, Rejection> {
        let BlobCommand::Grow { kib } = c;
        Ok(vec![BlobEvent::Grown {
            blob: "x".repeat(kib * 1024),
        }])
    }

    fn apply(count: &mut u64, _: &BlobEvent) {
        *count += 1;
    }
}

fn grow(kib: usize) -> CommandRequest {
    CommandRequest {
        ctx: RequestContext::new(TenantId::new("acme").unwrap()),
        aggregate_id: "b-1".try_into().unwrap(),
        command_type: "Grow".into(),
        payload: bytes::Bytes::from(format!(r#"{{"kib":{kib}}}"#)),
        expected_version: None,
        deadline: None,
    }
}

#[tokio::test]
async fn an_oversized_commit_is_refused_as_not_committed() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let node = AggregateNode::builder(js.clone(), AggregateSettings::default())
        .register::<Blobs>()
        .build()
        .await
        .unwrap();
    let max = js.client().server_info().max_payload;

    let refused = node.execute("blobs", grow(max / 1024 + 1)).await;
    match &refused {
        Err(CommandError::Rejected(m)) => {
            assert!(m.contains("max_payload"), "{m}");
            assert!(m.contains("nothing was committed"), "{m}");
        }
        other => panic!("expected a refusal that says nothing was committed, got {other:?}"),
    }
    let stored = js
        .get_stream("AGGREGATE_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(stored, 0, "nothing was committed");

    let next = node.execute("blobs", grow(1)).await.unwrap();
    assert_eq!(next.version, 1);
}
