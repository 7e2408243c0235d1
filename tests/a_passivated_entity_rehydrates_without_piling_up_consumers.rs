//! An entity passivated after its idle timeout rehydrates to the same state on its next
//! command, and the ad-hoc rehydration consumers do not pile up on the server.

mod common;

use std::time::Duration;

use cloudlysis_actors::aggregate::AggregateSettings;
use common::*;
use futures::StreamExt;

/// Rehydration consumers on the event stream (the projection's durable is not one).
async fn consumer_count(p: &Platform) -> usize {
    let stream = p.js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    stream
        .consumer_names()
        .filter(|n| {
            let ad_hoc = n
                .as_ref()
                .is_ok_and(|n| n.starts_with("cloudlysis-rehydrate-"));
            async move { ad_hoc }
        })
        .count()
        .await
}

#[tokio::test]
async fn passivation_then_rehydration_keeps_state() {
    let p = Platform::start_with(AggregateSettings {
        idle_timeout: Duration::from_millis(200),
        ..AggregateSettings::default()
    })
    .await;
    let token = p.token("acme", &["commands:account"]);
    let send = |body: &'static str| {
        let token = token.clone();
        let p = &p;
        async move {
            p.command("/v1/commands/account/acc", Some(&token), &[], body)
                .await
                .0
        }
    };
    assert_eq!(
        send(r#"{"type":"Open","payload":{"owner":"a"}}"#).await,
        200
    );
    assert_eq!(
        send(r#"{"type":"Deposit","payload":{"amount":70}}"#).await,
        200
    );
    let before = consumer_count(&p).await;

    // Wait until the entity has been passivated.
    let mut passivated = false;
    for _ in 0..500 {
        if p.node.live_entities("account").is_empty() {
            passivated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(passivated, "entity not passivated");

    // Rehydrated state: the balance is 70, so withdrawing 71 is refused and 70 is accepted.
    for _ in 0..3 {
        assert_eq!(
            send(r#"{"type":"Withdraw","payload":{"amount":71}}"#).await,
            422
        );
    }
    let (s, resp) = p
        .command(
            "/v1/commands/account/acc",
            Some(&token),
            &[],
            r#"{"type":"Withdraw","payload":{"amount":70}}"#,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        body_json(resp).await["version"],
        3,
        "versions continue after rehydration"
    );

    let after = consumer_count(&p).await;
    assert_eq!(after, before, "rehydration consumers were deleted");
    assert_eq!(after, 0);
}
