//! Snapshots against a real nats-server: an entity with 10 000 events rehydrates from its
//! latest snapshot plus the events after it — shown by deleting the first commits from the
//! stream, which a full replay could not survive — keeps recognising an idempotency key whose
//! stored result is gone, and an entity whose snapshot is corrupt falls back to a full replay.

use std::time::Duration;

use bytes::Bytes;
use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{
    Aggregate, AggregateSettings, CommandContext, CommandError, CommandRequest, Rejection,
    Snapshots,
};
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::kv as buckets;
use cloudlysis_runtime::stream::AGGREGATE_EVENTS;
use cloudlysis_test_support::{NatsServer, eventually};
use serde::{Deserialize, Serialize};

struct Tally;

#[derive(Default, Serialize, Deserialize)]
struct Count {
    events: u64,
}

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum Cmd {
    /// `n` events in one commit.
    AddMany { n: u64 },
    /// Always refused, with the state in the message.
    Report,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
enum Ev {
    Added,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    const SCHEMA_VERSION: u32 = 1;
    type State = Count;
    type Command = Cmd;
    type Event = Ev;
    fn handle(s: &Count, c: Cmd, _: &CommandContext) -> Result<Vec<Ev>, Rejection> {
        match c {
            Cmd::AddMany { n } => Ok((0..n).map(|_| Ev::Added).collect()),
            Cmd::Report => Err(Rejection::new(format!("{} events", s.events))),
        }
    }
    fn apply(s: &mut Count, _: &Ev) {
        s.events += 1;
    }
    fn snapshots() -> Option<Snapshots<Count>> {
        Some(Snapshots::json(1000, 1))
    }
}

fn command(id: &str, body: &str, key: Option<&str>) -> CommandRequest {
    let mut ctx = RequestContext::new(TenantId::new("acme").unwrap());
    ctx.idempotency_key = key.map(str::to_string);
    let (command_type, payload) = match body {
        "Report" => ("Report", "null".to_string()),
        n => ("AddMany", format!(r#"{{"n":{n}}}"#)),
    };
    CommandRequest {
        ctx,
        aggregate_id: SubjectToken::new(id).unwrap(),
        command_type: command_type.into(),
        payload: Bytes::from(payload),
        expected_version: None,
        deadline: None,
    }
}

async fn node(js: &async_nats::jetstream::Context) -> AggregateNode {
    AggregateNode::builder(js.clone(), AggregateSettings::default())
        .register::<Tally>()
        .build()
        .await
        .unwrap()
}

async fn report(node: &AggregateNode, id: &str) -> String {
    match node.execute("tally", command(id, "Report", None)).await {
        Err(CommandError::Rejected(state)) => state,
        other => panic!("expected the report of {id}, got {other:?}"),
    }
}

/// Waits until the snapshot of `id` is at `version`.
async fn snapshot_at(snapshots: &async_nats::jetstream::kv::Store, id: &str, version: u64) {
    let key = buckets::snapshot_key("tally", "acme", id);
    let written = eventually(Duration::from_secs(30), || {
        let (snapshots, key) = (snapshots.clone(), key.clone());
        async move {
            match snapshots.get(&key).await {
                Ok(Some(bytes)) => {
                    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["version"]
                        == version
                }
                _ => false,
            }
        }
    })
    .await;
    assert!(written, "the snapshot of {id} reached version {version}");
}

#[tokio::test]
async fn a_long_entity_rehydrates_from_its_snapshot_and_a_corrupt_one_is_ignored() {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await;
    let first = node(&js).await;

    // 10 000 events in 10 commits (the first with an idempotency key), then a tail of 7.
    let keyed = first
        .execute("tally", command("t-1", "1000", Some("k-1")))
        .await
        .unwrap();
    for _ in 1..10 {
        first
            .execute("tally", command("t-1", "1000", None))
            .await
            .unwrap();
    }
    for _ in 0..7 {
        first
            .execute("tally", command("t-1", "1", None))
            .await
            .unwrap();
    }
    let snapshots = js
        .get_key_value(buckets::SNAPSHOTS_BUCKET)
        .await
        .expect("the snapshot bucket exists");
    snapshot_at(&snapshots, "t-1", 10_000).await;
    drop(first);

    // Take the first five commits (5 000 events, the keyed one among them) out of the stream,
    // and the keyed command's stored result out of the idempotency bucket: only the snapshot
    // knows them now.
    let stream = js.get_stream(AGGREGATE_EVENTS).await.unwrap();
    for seq in 1..=5 {
        assert!(stream.delete_message(seq).await.unwrap());
    }
    let idem = js.get_key_value(buckets::IDEMPOTENCY_BUCKET).await.unwrap();
    // The record is written after the answer: purge it once it is there.
    let record = buckets::idempotency_key("acme", "tally", "t-1", "k-1");
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(idem.get(&record).await, Ok(Some(_)))
        })
        .await,
        "the idempotency record was stored"
    );
    idem.purge(&record).await.unwrap();

    let second = node(&js).await;
    assert_eq!(
        report(&second, "t-1").await,
        "10007 events",
        "snapshot (10 000) plus the tail (7); a full replay would count 5 007"
    );
    let retried = second
        .execute("tally", command("t-1", "1000", Some("k-1")))
        .await
        .unwrap();
    assert!(
        retried.replayed,
        "the retry is recognised from the snapshot"
    );
    assert_eq!(retried.version, keyed.version);
    let next = second
        .execute("tally", command("t-1", "1", None))
        .await
        .unwrap();
    assert_eq!(next.version, 10_008);

    // An entity whose snapshot is corrupt replays its whole history.
    for n in ["1000", "500"] {
        second
            .execute("tally", command("t-2", n, None))
            .await
            .unwrap();
    }
    snapshot_at(&snapshots, "t-2", 1000).await;
    snapshots
        .put(
            buckets::snapshot_key("tally", "acme", "t-2"),
            Bytes::from_static(b"{\"format\":1,\"state\":"),
        )
        .await
        .unwrap();
    drop(second);
    let third = node(&js).await;
    assert_eq!(report(&third, "t-2").await, "1500 events");
    let next = third
        .execute("tally", command("t-2", "1", None))
        .await
        .unwrap();
    assert_eq!(next.version, 1501);
}
