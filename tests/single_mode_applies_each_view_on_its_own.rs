//! Single mode: one consumer feeds three views and the middle one fails on an event. The other
//! two apply it; the failing view alone gets a poison record (naming it) and moves on — one
//! broken view never keeps an event from the others. Before the fix the combined handler
//! stopped at the first failing view, and after `max_deliver` the message was poisoned and
//! terminated: the views registered after it never saw the event.

use std::time::Duration;

use cloudlysis_actors::projection::view::View;
use cloudlysis_actors::projection::{ProjectionMode, ProjectionNode};
use cloudlysis_examples::load::Deposits;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::context::TenantId;
use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_runtime::poison::PoisonRecord;
use cloudlysis_test_support::{NatsServer, eventually, view_document};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Sum {
    sum: i64,
}

fn amount(e: &EventEnvelope) -> i64 {
    e.payload["amount"].as_i64().unwrap_or(0)
}

macro_rules! view {
    ($ty:ident, $name:literal, $apply:expr) => {
        struct $ty;
        impl View for $ty {
            const NAME: &'static str = $name;
            const SCHEMA_VERSION: u32 = 1;
            type Document = Sum;
            fn aggregate_types() -> &'static [&'static str] {
                &["account"]
            }
            fn key(e: &EventEnvelope) -> Option<String> {
                Some(e.aggregate_id.clone())
            }
            fn apply(doc: &mut Sum, e: &EventEnvelope) -> Result<(), String> {
                let f: fn(&mut Sum, &EventEnvelope) -> Result<(), String> = $apply;
                f(doc, e)
            }
        }
    };
}

view!(First, "first", |d, e| {
    d.sum += amount(e);
    Ok(())
});
view!(Middle, "middle", |d, e| {
    if amount(e) == 3 {
        return Err("3 is refused".into());
    }
    d.sum += amount(e);
    Ok(())
});
view!(Last, "last", |d, e| {
    d.sum += amount(e);
    Ok(())
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_views_around_a_failing_one_apply_every_event() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let settings = ConsumerSettings {
        max_deliver: 3,
        nak_backoff: NakBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2,
        },
        ..ConsumerSettings::default()
    };
    let node = ProjectionNode::builder(js.clone(), settings)
        .mode(ProjectionMode::Single)
        .register::<First>()
        .register::<Middle>()
        .register::<Last>()
        .build()
        .await
        .unwrap();
    // Deposits 1, 2, 3, 4, 5, 1, 2, … to one account: every fifth is a 3.
    let published = Deposits {
        tenant: TenantId::new("acme").unwrap(),
        prefix: "acc-".into(),
        events: 20,
        accounts: 1,
        amount: |i| (i % 5 + 1) as i64,
        window: 8,
    }
    .publish(&js)
    .await
    .unwrap();
    let last = published.last_sequence;
    let n = node.clone();
    assert!(
        eventually(Duration::from_secs(60), move || {
            let n = n.clone();
            async move { n.checkpoint("last") >= Some(last) }
        })
        .await,
        "the views did not catch up with {last}"
    );
    let total = published.balances["acc-0"];
    assert_eq!(
        view_document(&js, "first", "acme", "acc-0").await["sum"],
        total
    );
    assert_eq!(
        view_document(&js, "last", "acme", "acc-0").await["sum"],
        total
    );
    assert_eq!(
        view_document(&js, "middle", "acme", "acc-0").await["sum"],
        total - 4 * 3,
        "the middle view applied all but its four refused events"
    );

    let poison = js.get_key_value("cloudlysis_poison").await.unwrap();
    let keys: Vec<String> = poison
        .keys()
        .await
        .unwrap()
        .map(|k| k.unwrap())
        .collect()
        .await;
    assert_eq!(keys.len(), 4, "{keys:?}");
    for key in keys {
        assert!(
            key.starts_with("cloudlysis-projection-all.middle."),
            "{key}"
        );
        let record: PoisonRecord =
            serde_json::from_slice(&poison.get(&key).await.unwrap().unwrap()).unwrap();
        assert_eq!(record.view.as_deref(), Some("middle"));
        assert_eq!(record.error, "3 is refused");
    }
}
