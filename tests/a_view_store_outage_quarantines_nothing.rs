//! While a view's document store does not answer — its KV bucket has no stream behind it, as
//! for the seconds of a leader election on a cluster — the view's deliveries are held and
//! their writes retried, not failed towards poison: once the store answers again the view
//! equals the fold of the stream and no poison record was written. (Found by the cluster test
//! `the_platform_survives_the_loss_of_the_stream_leader`: a kill -9 of the member leading the
//! event stream and the views bucket quarantined a deposit, and the view fell short of the
//! fold.)

use std::collections::BTreeMap;
use std::time::Duration;

use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{AggregateSettings, CommandRequest};
use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_examples::account::Account;
use cloudlysis_examples::balances::Balances;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::kv::VIEWS_BUCKET;
use cloudlysis_runtime::{RequestContext, SubjectToken, TenantId};
use cloudlysis_test_support::{NatsServer, eventually, view_document};
use futures::StreamExt;

fn request(account: usize, command: &str, payload: &str) -> CommandRequest {
    CommandRequest {
        ctx: RequestContext::new(TenantId::new("acme").unwrap()),
        aggregate_id: SubjectToken::new(format!("acc-{account}")).unwrap(),
        command_type: command.into(),
        payload: payload.to_string().into(),
        expected_version: None,
        deadline: Some(tokio::time::Instant::now() + Duration::from_secs(5)),
    }
}

/// Keys of the poison bucket.
async fn poison_keys(js: &async_nats::jetstream::Context) -> Vec<String> {
    let kv = js.get_key_value("cloudlysis_poison").await.unwrap();
    match kv.keys().await {
        Ok(keys) => keys.filter_map(|k| async { k.ok() }).collect().await,
        Err(_) => Vec::new(),
    }
}

/// The value of the counter `name` summed over its series, from the Prometheus text.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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
    let config = js
        .get_stream(&bucket_stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    js.delete_stream(&bucket_stream).await.unwrap();

    let mut fold: BTreeMap<String, i64> = BTreeMap::new();
    let mut last = 0;
    for a in 0..3 {
        aggregates
            .execute("account", request(a, "Open", r#"{"owner":"o"}"#))
            .await
            .unwrap();
        for amount in [3, 4] {
            let reply = aggregates
                .execute(
                    "account",
                    request(a, "Deposit", &format!(r#"{{"amount":{amount}}}"#)),
                )
                .await
                .unwrap();
            *fold.entry(format!("acc-{a}")).or_default() += amount;
            last = reply.stream_sequence;
        }
    }

    // Long enough for the old behaviour to show (a poison record), or for the writes to have
    // been retried several times against the missing store.
    let js2 = js.clone();
    assert!(
        eventually(Duration::from_secs(30), || {
            let (js, metrics) = (js2.clone(), metrics.clone());
            async move {
                !poison_keys(&js).await.is_empty()
                    || counter(
                        &metrics.render(),
                        cloudlysis_runtime::metrics::names::VIEW_STORE_RETRIES,
                    ) >= 3.0
            }
        })
        .await,
        "neither quarantined nor retried"
    );
    assert_eq!(
        poison_keys(&js).await,
        Vec::<String>::new(),
        "a store outage quarantined events"
    );
    assert!(
        projection.checkpoint("balances") < Some(last),
        "the checkpoint passed events that were not written"
    );

    // The store is back: the held events are written, each once.
    js.create_stream(config).await.unwrap();
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
}
