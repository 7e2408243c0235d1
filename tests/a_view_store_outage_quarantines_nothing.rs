//! While a view's document store does not answer — its KV bucket has no stream behind it, as
//! for the seconds of a leader election on a cluster — the view's deliveries are held and
//! their writes retried, not failed towards poison: once the store answers again the view
//! equals the fold of the stream and no poison record was written. Meanwhile
//! `cloudlysis_view_store_oldest_held_seconds` says how long the events have waited. (Found by the cluster test
//! `the_platform_survives_the_loss_of_the_stream_leader`: a kill -9 of the member leading the
//! event stream and the views bucket quarantined a deposit, and the view fell short of the
//! fold.)

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cloudlysis_actors::aggregate::AggregateSettings;
use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_examples::account::Account;
use cloudlysis_examples::balances::Balances;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::kv::VIEWS_BUCKET;
use cloudlysis_test_support::{NatsServer, eventually, view_document};
use common::account_request;
use common::observe::{
    counter, held_for_at_least, poison_after_an_outage, poison_keys, remove_stream, restore_stream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_whose_store_is_down_holds_its_events_and_quarantines_none() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let aggregates = AggregateNode::builder(js.clone(), AggregateSettings::default())
        .register::<Account>()
        .build()
        .await
        .unwrap();
    // Quick redeliveries and few of them: were a store failure counted as the event's, the
    // events below would be quarantined within a fraction of a second.
    let settings = ConsumerSettings {
        max_deliver: 3,
        nak_backoff: NakBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            multiplier: 2,
        },
        ..ConsumerSettings::default()
    };
    let projection = ProjectionNode::builder(js.clone(), settings)
        .register::<Balances>()
        .build()
        .await
        .unwrap();

    // The store goes away: the views bucket's stream is deleted (kept to be put back).
    let bucket_stream = format!("KV_{VIEWS_BUCKET}");
    let config = remove_stream(&js, &bucket_stream).await;

    let mut fold: BTreeMap<String, i64> = BTreeMap::new();
    let mut last = 0;
    for a in 0..3 {
        aggregates
            .execute("account", account_request(a, "Open", r#"{"owner":"o"}"#))
            .await
            .unwrap();
        for amount in [3, 4] {
            let reply = aggregates
                .execute(
                    "account",
                    account_request(a, "Deposit", &format!(r#"{{"amount":{amount}}}"#)),
                )
                .await
                .unwrap();
            *fold.entry(format!("acc-{a}")).or_default() += amount;
            last = reply.stream_sequence;
        }
    }

    // Long enough for an outage counted as failures to show as poison records.
    let quarantined = poison_after_an_outage(
        &js,
        || metrics.render(),
        cloudlysis_runtime::metrics::names::VIEW_STORE_RETRIES,
    )
    .await;
    assert_eq!(
        quarantined,
        Vec::<String>::new(),
        "a store outage quarantined events"
    );
    assert!(
        projection.checkpoint("balances") < Some(last),
        "the checkpoint passed events that were not written"
    );

    // How long the events have been held is in sight while the store stays away.
    let held = cloudlysis_runtime::metrics::names::VIEW_STORE_OLDEST_HELD;
    held_for_at_least(|| metrics.render(), held, &[("view", "balances")], 1.0).await;

    // The store is back: the held events are written, each once.
    restore_stream(&js, config).await;
    let p = projection.clone();
    assert!(
        eventually(Duration::from_secs(30), move || {
            let p = p.clone();
            async move { p.checkpoint("balances") >= Some(last) }
        })
        .await,
        "the view did not catch up with {last} after the store came back"
    );
    for (account, sum) in &fold {
        let doc = view_document(&js, "balances", "acme", account).await;
        assert_eq!(doc["balance"], *sum, "{account}");
    }
    assert_eq!(poison_keys(&js).await, Vec::<String>::new());
    assert_eq!(
        counter(&metrics.render(), held, &[("view", "balances")]),
        0.0,
        "nothing is held once the view caught up"
    );
}
