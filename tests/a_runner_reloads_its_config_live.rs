//! Live reload of a `cloudlysis runner` process's config file, as an operator runs it: a lower
//! effect concurrency takes effect with no restart (Status and the supervision snapshot's
//! mailbox capacity both say so) and drops nothing in flight; a disabled workflow takes no new
//! starts; an invalid file is refused with the setting named and the old config stays in force.

mod common;

use std::time::Duration;

use common::{Platform, spawn_runner};

/// The concurrency Status reports for each effect type.
fn concurrency(status: &serde_json::Value, effect: &str) -> u64 {
    status["effects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["effect_type"] == effect)
        .and_then(|e| e["concurrency"].as_u64())
        .unwrap_or_else(|| panic!("no effect {effect} in {status}"))
}

/// The mailbox capacity of effect `effect`'s handler in the runner's supervision tree
/// (`NodeAdmin/Describe` on its gRPC address).
async fn mailbox_capacity(grpc: &str, effect: &str) -> u64 {
    use cloudlysis_proto::node::SupervisorNode;
    use cloudlysis_proto::node::node_admin_client::NodeAdminClient;
    let mut client = NodeAdminClient::with_interceptor(
        common::node_channel(grpc).await,
        common::operator_credential,
    );
    let tree = client
        .describe(cloudlysis_proto::node::DescribeRequest {})
        .await
        .unwrap()
        .into_inner()
        .supervision
        .unwrap();
    fn find<'a>(node: &'a SupervisorNode, name: &str) -> Option<&'a SupervisorNode> {
        if node.name == name {
            return Some(node);
        }
        node.supervisors.iter().find_map(|s| find(s, name))
    }
    let sub = find(&tree, &format!("effect-{effect}"))
        .unwrap_or_else(|| panic!("no effect-{effect} supervisor in {tree:?}"));
    sub.children
        .iter()
        .filter(|c| c.kind == "effect_worker")
        .filter_map(|c| c.mailbox.as_ref().map(|m| m.capacity))
        .max()
        .unwrap_or_else(|| panic!("no mailbox under effect-{effect}: {sub:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_concurrency_applies_live_and_an_invalid_file_changes_nothing() {
    let mut p = Platform::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runner.toml");
    let write = |text: &str| std::fs::write(&config, text).unwrap();
    write("[runner]\neffect_concurrency = \"withdraw=8,deposit=8\"\n");
    let mut runner = spawn_runner(
        &p.server.url(),
        &format!("http://{}", p.grpc_addr),
        &[("CLOUDLYSIS_CONFIG", config.to_str().unwrap())],
    )
    .await;
    p.route_runners(&[&runner.grpc]);
    let token = p.token("acme", &["commands:*", "workflows:*", "runner:admin"]);
    let (st, nodes) = p.call("GET", "/admin/runner/nodes", &token, "").await;
    assert_eq!(st, 200, "{nodes}");
    let node = nodes["nodes"][0]["node_id"].as_str().unwrap().to_string();
    let status = || async {
        let (st, s) = p
            .call("GET", &format!("/admin/runner/nodes/{node}"), &token, "")
            .await;
        assert_eq!(st, 200, "{s}");
        s
    };
    let reload = || async {
        p.call(
            "POST",
            &format!("/admin/runner/nodes/{node}/reload"),
            &token,
            "",
        )
        .await
    };
    assert_eq!(concurrency(&status().await, "withdraw"), 8);
    assert_eq!(mailbox_capacity(&runner.grpc, "withdraw").await, 8);

    for account in ["src", "dst"] {
        p.account_command(
            &token,
            account,
            &format!(r#"{{"type":"Open","payload":{{"owner":"{account}"}}}}"#),
        )
        .await;
    }
    p.account_command(
        &token,
        "src",
        r#"{"type":"Deposit","payload":{"amount":1000}}"#,
    )
    .await;
    let start = |id: String| {
        let p = &p;
        let token = &token;
        async move {
            p.call(
                "POST",
                &format!("/v1/workflows/transfer/{id}"),
                token,
                r#"{"from":"src","to":"dst","amount":1}"#,
            )
            .await
        }
    };
    // Transfers in flight while the concurrency drops.
    for k in 0..16 {
        let (st, body) = start(format!("t-{k}")).await;
        assert_eq!(st, 201, "{body}");
    }
    write("[runner]\neffect_concurrency = \"withdraw=2,deposit=3\"\n");
    let (st, body) = reload().await;
    assert_eq!(st, 200, "{body}");
    let changes = body["changes"].to_string();
    assert!(changes.contains("concurrency 8 -> 2"), "{body}");
    assert!(changes.contains("concurrency 8 -> 3"), "{body}");
    let now = status().await;
    assert_eq!(concurrency(&now, "withdraw"), 2, "{now}");
    assert_eq!(concurrency(&now, "deposit"), 3, "{now}");
    assert_eq!(mailbox_capacity(&runner.grpc, "withdraw").await, 2);
    assert_eq!(mailbox_capacity(&runner.grpc, "deposit").await, 3);
    for k in 16..24 {
        let (st, body) = start(format!("t-{k}")).await;
        assert_eq!(st, 201, "{body}");
    }
    for k in 0..24 {
        let done = p
            .finished_workflow(
                &token,
                "transfer",
                &format!("t-{k}"),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    assert_eq!(
        p.balance("acme", "src").await,
        1000 - 24,
        "nothing dropped, nothing twice"
    );
    assert_eq!(p.balance("acme", "dst").await, 24);

    // Invalid files are refused, naming the setting; the running config stays.
    for (text, named) in [
        (
            "[runner]\neffect_concurrency = \"withdraw=0\"\n",
            "runner.effect_concurrency",
        ),
        (
            "[runner]\neffect_concurrency = \"nosuch=4\"\n",
            "runner.effect_concurrency",
        ),
        (
            "[runner]\nenabled_workflows = \"ghost\"\n",
            "runner.enabled_workflows",
        ),
        (
            "[runner]\neffect_max_attempts = \"deposit=x\"\n",
            "runner.effect_max_attempts",
        ),
        ("[runner\neffect_concurrency = ", "runner.toml"),
    ] {
        write(text);
        let (st, body) = reload().await;
        assert_eq!(st, 400, "{text}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(named), "{text}: {body}");
        let now = status().await;
        assert_eq!(concurrency(&now, "withdraw"), 2, "{text}: {now}");
        assert_eq!(mailbox_capacity(&runner.grpc, "withdraw").await, 2);
    }

    // A disabled workflow takes no new starts; enabled again, it does.
    write("[runner]\neffect_concurrency = \"withdraw=2,deposit=3\"\nenabled_workflows = \"\"\n");
    let (st, body) = reload().await;
    assert_eq!(st, 200, "{body}");
    assert!(
        body["changes"]
            .to_string()
            .contains("workflow `transfer` disabled"),
        "{body}"
    );
    let (st, body) = start("t-off".into()).await;
    assert_eq!(st, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{body}"
    );
    write("[runner]\neffect_concurrency = \"withdraw=2,deposit=3\"\nenabled_workflows = \"*\"\n");
    let (st, body) = reload().await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = start("t-on".into()).await;
    assert_eq!(st, 201, "{body}");
    let done = p
        .finished_workflow(&token, "transfer", "t-on", Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    runner.kill9().await;
}
