//! An entity whose history is short rehydrates on a fresh node without creating a consumer on
//! the server: when its last commit holds every event, from that commit alone; with at most two
//! events before its last commit, one `STREAM.MSG.GET` per commit. A longer history goes
//! through one ad-hoc consumer. The state folded is exact either way: the command after
//! rehydration is decided on it.
//!
//! A new entity's first command reads nothing at all: it is decided on the empty state and its
//! commit lands only while the subject is empty; on an entity that has history, the same
//! command conflicts, the state is read, and the command is decided again on it.
//!
//! Seen on the server: every consumer creation is a request on
//! `$JS.API.CONSUMER.CREATE.AGGREGATE_EVENTS.…` and every message read one on
//! `$JS.API.STREAM.MSG.GET.AGGREGATE_EVENTS`, which a subscriber on the same account sees.

use std::time::Duration;

use bytes::Bytes;
use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{
    Aggregate, AggregateSettings, CommandContext, CommandRequest, ExecuteReply, Rejection,
};
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_test_support::NatsServer;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Counts events; `Add` appends `n` events in one commit, `Expect` is refused unless the
/// state holds exactly `count` events.
struct Tally;

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum Cmd {
    Add { n: u32 },
    Expect { count: u64 },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
enum Evt {
    Added,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    const SCHEMA_VERSION: u32 = 1;
    type State = u64;
    type Command = Cmd;
    type Event = Evt;
    fn handle(state: &u64, cmd: Cmd, _: &CommandContext) -> Result<Vec<Evt>, Rejection> {
        match cmd {
            Cmd::Add { n } => Ok((0..n).map(|_| Evt::Added).collect()),
            Cmd::Expect { count } if *state == count => Ok(vec![Evt::Added]),
            Cmd::Expect { count } => Err(Rejection::new(format!(
                "state holds {state} events, not {count}"
            ))),
        }
    }
    fn apply(state: &mut u64, _: &Evt) {
        *state += 1;
    }
}

async fn node(server: &NatsServer) -> AggregateNode {
    AggregateNode::builder(server.jetstream().await, AggregateSettings::default())
        .register::<Tally>()
        .build()
        .await
        .unwrap()
}

async fn run(
    node: &AggregateNode,
    id: &str,
    (command_type, payload): (&str, String),
) -> ExecuteReply {
    node.execute(
        Tally::TYPE,
        CommandRequest {
            ctx: RequestContext::new(TenantId::new("acme").unwrap()),
            aggregate_id: SubjectToken::new(id).unwrap(),
            command_type: command_type.into(),
            payload: Bytes::from(payload),
            expected_version: None,
            deadline: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("command on {id}: {e}"))
}

fn add(n: u32) -> (&'static str, String) {
    ("Add", format!(r#"{{"n":{n}}}"#))
}

fn expect(count: u64) -> (&'static str, String) {
    ("Expect", format!(r#"{{"count":{count}}}"#))
}

/// Counts the requests on `subject` the server forwarded so far (a flush — a PING answered
/// after everything sent to this client — makes sure they have arrived).
async fn forwarded(watcher: &async_nats::Client, sub: &mut async_nats::Subscriber) -> usize {
    watcher.flush().await.unwrap();
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, sub.next()).await {
        n += 1;
    }
    n
}

/// Writes `commits` (events per commit) for `id` through one node, then runs `Expect` on a
/// fresh node, and returns how many rehydration consumers the server was asked to create.
async fn consumers_created(server: &NatsServer, id: &str, commits: &[u32]) -> usize {
    let writer = node(server).await;
    for &n in commits {
        run(&writer, id, add(n)).await;
    }
    let total: u64 = commits.iter().map(|&n| u64::from(n)).sum();

    let watcher = server.client().await;
    let mut creates = watcher
        .subscribe("$JS.API.CONSUMER.CREATE.AGGREGATE_EVENTS.>")
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    let fresh = node(server).await;
    let reply = run(&fresh, id, expect(total)).await;
    assert_eq!(reply.version, total + 1, "{id}: versions continue");

    // The server forwarded any creation request before the node got its answer.
    forwarded(&watcher, &mut creates).await
}

#[tokio::test]
async fn one_commit_is_read_from_the_last_message_alone() {
    let server = NatsServer::start().await.unwrap();
    assert_eq!(consumers_created(&server, "one", &[5]).await, 0);
}

#[tokio::test]
async fn a_few_commits_are_read_one_by_one() {
    let server = NatsServer::start().await.unwrap();
    assert_eq!(consumers_created(&server, "few", &[1, 1, 4]).await, 0);
    assert_eq!(consumers_created(&server, "two", &[2, 3]).await, 0);
}

#[tokio::test]
async fn a_long_history_is_read_through_one_consumer() {
    let server = NatsServer::start().await.unwrap();
    assert_eq!(consumers_created(&server, "long", &[1, 1, 1, 1]).await, 1);
    let commits = vec![7; 40];
    assert_eq!(consumers_created(&server, "longer", &commits).await, 1);
}

#[tokio::test]
async fn a_new_entity_commits_without_reading_anything_first() {
    let server = NatsServer::start().await.unwrap();
    let watcher = server.client().await;
    let mut reads = watcher
        .subscribe("$JS.API.STREAM.MSG.GET.AGGREGATE_EVENTS")
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let first = node(&server).await;
    for i in 0..5 {
        let reply = run(&first, &format!("new-{i}"), add(3)).await;
        assert_eq!(reply.version, 3);
    }
    assert_eq!(
        forwarded(&watcher, &mut reads).await,
        0,
        "no read for new entities"
    );

    // The same command on an entity with history (written by another node): the commit on the
    // assumed empty state conflicts, the history is read, and versions continue.
    let other = node(&server).await;
    let reply = run(&other, "new-0", add(2)).await;
    assert_eq!(reply.version, 5, "decided again on the real state");
    assert!(
        forwarded(&watcher, &mut reads).await >= 1,
        "the history was read"
    );
    run(&other, "new-0", expect(5)).await;
}
