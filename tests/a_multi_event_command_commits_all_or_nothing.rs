//! A command that emits several events commits them atomically: one message per commit, one
//! version check for all of them. Under write conflicts between two nodes no commit is ever
//! split, and versions stay contiguous.

use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{
    Aggregate, AggregateSettings, CommandContext, CommandError, CommandRequest, Rejection,
};
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_test_support::NatsServer;
use serde::{Deserialize, Serialize};

/// Every `Burst { n }` emits `n` events; a burst larger than 5 is refused.
struct Bursts;

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum BurstCommand {
    Burst { n: u64 },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
enum BurstEvent {
    Tick { of: u64, index: u64 },
}

impl Aggregate for Bursts {
    const TYPE: &'static str = "bursts";
    const SCHEMA_VERSION: u32 = 1;
    type State = u64;
    type Command = BurstCommand;
    type Event = BurstEvent;

    fn handle(_: &u64, c: BurstCommand, _: &CommandContext) -> Result<Vec<BurstEvent>, Rejection> {
        let BurstCommand::Burst { n } = c;
        if n > 5 {
            return Err(Rejection::new("too many"));
        }
        Ok((0..n)
            .map(|index| BurstEvent::Tick { of: n, index })
            .collect())
    }

    fn apply(count: &mut u64, _: &BurstEvent) {
        *count += 1;
    }
}

fn request(n: u64) -> CommandRequest {
    CommandRequest {
        ctx: RequestContext::new(TenantId::new("acme").unwrap()),
        aggregate_id: "b-1".try_into().unwrap(),
        command_type: "Burst".into(),
        payload: bytes::Bytes::from(format!(r#"{{"n":{n}}}"#)),
        expected_version: None,
        deadline: None,
    }
}

async fn node(js: &async_nats::jetstream::Context) -> AggregateNode {
    AggregateNode::builder(js.clone(), AggregateSettings::default())
        .register::<Bursts>()
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn commits_are_never_split_under_conflicts() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let (a, b) = (node(&js).await, node(&js).await);

    let first = a.execute("bursts", request(3)).await.unwrap();
    assert_eq!(first.version, 3);
    assert_eq!(first.event_ids.len(), 3);
    assert!(matches!(
        a.execute("bursts", request(9)).await,
        Err(CommandError::Rejected(_))
    ));

    let mut tasks = Vec::new();
    for i in 0..30u64 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            node.execute("bursts", request(1 + i % 4)).await
        }));
    }
    let mut accepted_events = 3usize;
    for t in tasks {
        match t.await.unwrap() {
            Ok(reply) => accepted_events += reply.event_ids.len(),
            Err(CommandError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }

    let mut stream = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut versions = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let commit: Commit = serde_json::from_slice(&m.payload).unwrap();
        // A whole burst in one message: `of` events, indexes 0..of, consecutive versions.
        let of = commit.events[0].payload["of"].as_u64().unwrap();
        assert_eq!(commit.events.len() as u64, of, "commit {seq} split");
        for (i, e) in commit.events.iter().enumerate() {
            assert_eq!(e.payload["index"].as_u64().unwrap(), i as u64);
            versions.push(e.sequence);
        }
    }
    assert_eq!(
        versions.len(),
        accepted_events,
        "exactly the accepted events are stored"
    );
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
}
