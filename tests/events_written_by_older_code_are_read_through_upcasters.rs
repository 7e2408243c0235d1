//! Event schema evolution against a real nats-server: events written by version 1 of an
//! aggregate are read by version 2 through its upcaster — when an entity rehydrates, in a
//! view, and in a rebuild of that view — and an event written by a newer version than the code
//! is refused with a clear error: the command fails naming it, and the view quarantines it as a
//! poison record.

use std::time::Duration;

use bytes::Bytes;
use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{AggregateSettings, CommandError, CommandRequest};
use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_actors::projection::generation;
use cloudlysis_actors::projection::view::{View, decode};
use cloudlysis_runtime::SubjectToken;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::envelope::{Commit, EventEnvelope};
use cloudlysis_runtime::poison::PoisonRecord;
use cloudlysis_test_support::{NatsServer, eventually, view_document};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Version 1: `Added { n }`.
mod v1 {
    use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection};
    use serde::{Deserialize, Serialize};

    pub struct Counter;
    #[derive(Deserialize)]
    #[serde(tag = "type", content = "payload")]
    pub enum Cmd {
        Add { n: u64 },
    }
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", content = "payload")]
    pub enum Ev {
        Added { n: u64 },
    }
    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        const SCHEMA_VERSION: u32 = 1;
        type State = ();
        type Command = Cmd;
        type Event = Ev;
        fn handle(_: &(), c: Cmd, _: &CommandContext) -> Result<Vec<Ev>, Rejection> {
            let Cmd::Add { n } = c;
            Ok(vec![Ev::Added { n }])
        }
        fn apply(_: &mut (), _: &Ev) {}
    }
}

/// Version 2: `Added { n }` became `Increased { amount, source }`.
mod v2 {
    use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection};
    use serde::{Deserialize, Serialize};

    pub struct Counter;
    #[derive(Default)]
    pub struct State {
        pub sum: u64,
        pub from_v1: u64,
    }
    #[derive(Deserialize)]
    #[serde(tag = "type", content = "payload")]
    pub enum Cmd {
        Increase {
            amount: u64,
        },
        /// Always refused, with the state in the message.
        Report,
    }
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", content = "payload")]
    pub enum Ev {
        Increased { amount: u64, source: String },
    }
    impl Aggregate for Counter {
        const TYPE: &'static str = "counter";
        const SCHEMA_VERSION: u32 = 2;
        type State = State;
        type Command = Cmd;
        type Event = Ev;
        fn handle(s: &State, c: Cmd, _: &CommandContext) -> Result<Vec<Ev>, Rejection> {
            match c {
                Cmd::Increase { amount } => Ok(vec![Ev::Increased {
                    amount,
                    source: "v2".into(),
                }]),
                Cmd::Report => Err(Rejection::new(format!(
                    "sum {} of which {} events from v1",
                    s.sum, s.from_v1
                ))),
            }
        }
        fn apply(s: &mut State, e: &Ev) {
            let Ev::Increased { amount, source } = e;
            s.sum += amount;
            if source == "v1" {
                s.from_v1 += 1;
            }
        }
        fn upcast(
            from: u32,
            event_type: &mut String,
            payload: &mut serde_json::Value,
        ) -> Result<(), String> {
            if from == 1 && event_type == "Added" {
                let n = payload["n"].as_u64().ok_or("`Added` without `n`")?;
                *event_type = "Increased".into();
                *payload = serde_json::json!({ "amount": n, "source": "v1" });
            }
            Ok(())
        }
    }
}

/// A view written against version 2 only.
struct Totals;

#[derive(Default, Serialize, Deserialize)]
struct Total {
    sum: u64,
    from_v1: u64,
}

impl View for Totals {
    const NAME: &'static str = "totals";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Total;
    fn aggregate_types() -> &'static [&'static str] {
        &["counter"]
    }
    fn key(e: &EventEnvelope) -> Option<String> {
        Some(e.aggregate_id.clone())
    }
    fn apply(doc: &mut Total, e: &EventEnvelope) -> Result<(), String> {
        let v2::Ev::Increased { amount, source } = decode::<v2::Counter>(e)?;
        doc.sum += amount;
        if source == "v1" {
            doc.from_v1 += 1;
        }
        Ok(())
    }
}

fn command(id: &str, command_type: &str, payload: &str) -> CommandRequest {
    CommandRequest {
        ctx: RequestContext::new(TenantId::new("acme").unwrap()),
        aggregate_id: SubjectToken::new(id).unwrap(),
        command_type: command_type.into(),
        payload: Bytes::from(payload.to_string()),
        expected_version: None,
        deadline: None,
    }
}

#[tokio::test]
async fn version_2_reads_version_1_events_and_refuses_version_3() {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await;

    // Version 1 writes two events.
    let old = AggregateNode::builder(js.clone(), AggregateSettings::default())
        .register::<v1::Counter>()
        .build()
        .await
        .unwrap();
    for n in [3, 4] {
        old.execute("counter", command("c-1", "Add", &format!(r#"{{"n":{n}}}"#)))
            .await
            .unwrap();
    }
    drop(old);

    // Version 2 rehydrates them through its upcaster, then writes its own.
    let node = AggregateNode::builder(js.clone(), AggregateSettings::default())
        .register::<v2::Counter>()
        .build()
        .await
        .unwrap();
    let reply = node
        .execute("counter", command("c-1", "Increase", r#"{"amount":5}"#))
        .await
        .unwrap();
    assert_eq!(reply.version, 3, "two v1 events, then this one");
    match node
        .execute("counter", command("c-1", "Report", "null"))
        .await
    {
        Err(CommandError::Rejected(why)) => {
            assert_eq!(why, "sum 12 of which 2 events from v1")
        }
        other => panic!("expected the report, got {other:?}"),
    }

    // An event from a future version 3, written by newer code, on entity c-2.
    let future = EventEnvelope {
        event_id: "future-1".into(),
        tenant_id: "acme".into(),
        aggregate_type: "counter".into(),
        aggregate_id: "c-2".into(),
        sequence: 1,
        event_type: "Increased".into(),
        schema_version: 3,
        occurred_at: "2027-01-01T00:00:00Z".into(),
        payload: serde_json::json!({"amount": 1, "source": "v3", "unit": "kg"}),
        correlation_id: None,
        traceparent: None,
    };
    let commit = Commit {
        schema_version: 1,
        commit_id: "future-1".into(),
        events: vec![future],
    };
    js.publish(
        "tenant.acme.aggregate.counter.c-2",
        serde_json::to_vec(&commit).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    match node
        .execute("counter", command("c-2", "Increase", r#"{"amount":1}"#))
        .await
    {
        Err(e) => assert!(
            e.to_string()
                .contains("counter c-2#1 (Increased, schema_version 3) is newer than this code's schema_version 2"),
            "{e}"
        ),
        Ok(r) => panic!("a command over an unreadable history was committed: {r:?}"),
    }

    // The view reads v1 and v2 events alike; the v3 event becomes a poison record.
    let settings = ConsumerSettings {
        max_deliver: 2,
        nak_backoff: NakBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2,
        },
        ..ConsumerSettings::default()
    };
    let projection = ProjectionNode::builder(js.clone(), settings)
        .register::<Totals>()
        .build()
        .await
        .unwrap();
    let views = js.get_key_value("cloudlysis_views").await.unwrap();
    let applied = eventually(Duration::from_secs(30), || {
        let views = views.clone();
        async move {
            match views.get("totals.acme.c-1").await {
                Ok(Some(bytes)) => {
                    let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    record["doc"]["sum"] == 12
                }
                _ => false,
            }
        }
    })
    .await;
    assert!(applied, "the view folded 3 + 4 (v1) + 5 (v2)");
    assert_eq!(
        view_document(&js, "totals", "acme", "c-1").await["from_v1"],
        2
    );
    let poison = js.get_key_value("cloudlysis_poison").await.unwrap();
    let records = || {
        let poison = poison.clone();
        async move {
            let keys: Vec<String> = poison
                .keys()
                .await
                .unwrap()
                .filter_map(|k| async move { k.ok() })
                .collect()
                .await;
            let mut out = Vec::new();
            for k in keys {
                if let Ok(Some(bytes)) = poison.get(&k).await {
                    out.push(serde_json::from_slice::<PoisonRecord>(&bytes).unwrap());
                }
            }
            out
        }
    };
    let quarantined = eventually(Duration::from_secs(30), || async {
        !records().await.is_empty()
    })
    .await;
    assert!(quarantined, "the v3 event is quarantined");
    let records = records().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].subject, "tenant.acme.aggregate.counter.c-2");
    assert!(
        records[0]
            .error
            .contains("is newer than this code's schema_version 2 for aggregate `counter`"),
        "{}",
        records[0].error
    );

    // A rebuild reads the v1 events through the upcaster too.
    let gens = generation::request_rebuild(&js, "totals").await.unwrap();
    let target = gens.building.expect("a rebuild generation");
    let kv = generation::bucket(&js).await.unwrap();
    let rebuilt = eventually(Duration::from_secs(60), || {
        let kv = kv.clone();
        async move {
            generation::read(&kv, "totals")
                .await
                .is_ok_and(|(g, _)| g.active >= target)
        }
    })
    .await;
    assert!(rebuilt, "the rebuild caught up and took over");
    let space = cloudlysis_runtime::kv::view_space("totals", target);
    let doc = view_document(&js, &space, "acme", "c-1").await;
    assert_eq!(doc["sum"], 12, "{doc}");
    assert_eq!(doc["from_v1"], 2, "{doc}");
    drop(projection);
    drop(node);
}
