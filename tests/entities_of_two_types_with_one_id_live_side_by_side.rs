//! Entities are kept per aggregate type, by tenant and id: `account/7` and `order/7` of one
//! tenant live side by side. (When entities were supervised actors, their names omitted the
//! type at first, so the second one's start collided with the first: 503.)

use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_actors::aggregate::{
    Aggregate, AggregateSettings, CommandContext, CommandRequest, Rejection,
};
use cloudlysis_examples::account::Account;
use cloudlysis_runtime::{RequestContext, SubjectToken, TenantId};
use cloudlysis_test_support::NatsServer;
use serde::{Deserialize, Serialize};

struct Order;

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
enum OrderCommand {
    Place,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
enum OrderEvent {
    Placed,
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    const SCHEMA_VERSION: u32 = 1;
    type State = ();
    type Command = OrderCommand;
    type Event = OrderEvent;
    fn handle(_: &(), _: OrderCommand, _: &CommandContext) -> Result<Vec<OrderEvent>, Rejection> {
        Ok(vec![OrderEvent::Placed])
    }
    fn apply(_: &mut (), _: &OrderEvent) {}
}

fn request(id: &str, command: &str, payload: &str) -> CommandRequest {
    CommandRequest {
        ctx: RequestContext::new(TenantId::new("acme").unwrap()),
        aggregate_id: SubjectToken::new(id).unwrap(),
        command_type: command.into(),
        payload: payload.to_string().into(),
        expected_version: None,
        deadline: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_and_an_order_with_the_same_id_both_run() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let node = AggregateNode::builder(js, AggregateSettings::default())
        .register::<Account>()
        .register::<Order>()
        .build()
        .await
        .unwrap();
    for id in ["7", "8"] {
        node.execute("account", request(id, "Open", r#"{"owner":"o"}"#))
            .await
            .unwrap();
        node.execute("order", request(id, "Place", "null"))
            .await
            .unwrap();
    }
    for ty in ["account", "order"] {
        let mut live = node.live_entities(ty);
        live.sort();
        assert_eq!(live, ["acme.7", "acme.8"], "{ty}");
    }
}
