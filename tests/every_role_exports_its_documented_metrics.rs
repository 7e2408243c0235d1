//! Every role, run as its own process, exports exactly the series the operations guide's
//! "Metrics by role" table lists for it — from its first scrape (`start`), and after a little
//! traffic (`use`) — with HELP text and Prometheus-valid output (`promtool check metrics`). On a
//! projection node under load the consumer and actor series move.
//!
//! Before the fix, a projection node exported no `cloudlysis_consumer_*` or `cloudlysis_actor_*`
//! series at all: its actors took their metric handles before the recorder was installed.

mod common;

use common::observe::counter as value;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use cloudlysis_examples::load::Deposits;
use cloudlysis_proto::aggregate::ExecuteRequest;
use cloudlysis_proto::aggregate::command_service_client::CommandServiceClient;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_test_support::{NatsServer, eventually, http_get};
use tokio::io::{AsyncBufReadExt, BufReader};

const ROLES: [&str; 5] = ["aggregate", "projection", "runner", "gateway", "dev"];
const SECRET: &str = "metrics-test-secret-metrics-test-secret";

/// The table: metric → role → `start` | `use` | `—`.
fn table() -> BTreeMap<String, BTreeMap<&'static str, String>> {
    let guide = include_str!("../docs/operations.md");
    let section = guide
        .split("### Metrics by role")
        .nth(1)
        .expect("the guide has a Metrics by role table");
    let mut rows = BTreeMap::new();
    for line in section
        .lines()
        .skip_while(|l| !l.starts_with("| metric |"))
        .skip(2)
    {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].trim_matches('`').to_string();
        let by_role = ROLES
            .iter()
            .zip(&cells[1..])
            .map(|(r, c)| (*r, c.to_string()))
            .collect();
        rows.insert(name, by_role);
    }
    assert!(rows.len() > 30, "the table was read: {}", rows.len());
    rows
}

/// Metric families in a scrape (from its `# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn promtool() -> String {
    std::env::var("PROMTOOL_BIN").unwrap_or_else(|_| "promtool".to_string())
}

/// `promtool check metrics` on a scrape: it must report nothing.
async fn check_with_promtool(role: &str, text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed (Debian package `prometheus`; `./x test` installs it) or \
                 PROMTOOL_BIN: {e}"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{role}: promtool: {said}"
    );
}

/// Scrapes `http` and checks it against the table: every series listed for `role` with one of
/// `required` is there; nothing else is.
async fn check(role: &'static str, http: &str, required: &[&str]) -> String {
    let (status, text) = http_get(&format!("{http}/metrics")).await.unwrap();
    assert_eq!(status, 200, "{role}");
    let exported = families(&text);
    let rows = table();
    for (name, by_role) in &rows {
        let cell = by_role[role].as_str();
        if required.contains(&cell) {
            assert!(
                exported.contains(name),
                "{role}: {name} is documented ({cell}) but missing"
            );
        }
    }
    for name in &exported {
        let cell = rows.get(name).map(|r| r[role].as_str());
        assert!(
            matches!(cell, Some("start" | "use")),
            "{role}: {name} is exported but the table says {cell:?}"
        );
    }
    check_with_promtool(role, &text).await;
    text
}

struct Role {
    child: tokio::process::Child,
    /// Kills what the role started too (dev's nats-server).
    _group: cloudlysis_test_support::KillGroupOnDrop,
    http: String,
    grpc: Option<String>,
}

/// Starts `cloudlysis <args>` and waits for the line naming its HTTP address.
async fn start(args: &[&str], env: &[(&str, &str)]) -> Role {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"));
    cmd.args(args)
        .env_remove("CLOUDLYSIS_CONFIG")
        .env("CLOUDLYSIS_JWT_SECRET", SECRET)
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, killed with the role (see `Role`).
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for reader in [
        Box::new(BufReader::new(child.stderr.take().unwrap()))
            as Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
        Box::new(BufReader::new(child.stdout.take().unwrap())),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = reader.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = rx.recv().await {
            let http = line
                .split("HTTP on ")
                .nth(1)
                .or_else(|| line.strip_prefix("  Gateway    "))
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string);
            if let Some(http) = http {
                let grpc = line
                    .split("gRPC on ")
                    .nth(1)
                    .and_then(|r| r.split([',', ' ']).next())
                    .map(str::to_string);
                return (http, grpc);
            }
        }
        panic!("{args:?} exited before listening");
    })
    .await
    .unwrap_or_else(|_| panic!("{args:?} did not start"));
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Role {
        _group: cloudlysis_test_support::KillGroupOnDrop::of(&child),
        child,
        http: found.0,
        grpc: found.1,
    }
}

async fn open_account(grpc: &str, id: &str) {
    let mut client = CommandServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(ExecuteRequest {
        aggregate_type: "account".into(),
        aggregate_id: id.into(),
        command_type: "Open".into(),
        payload_json: br#"{"owner":"o"}"#.to_vec(),
        expected_version: None,
    });
    RequestContext::new(TenantId::new("acme").unwrap()).inject(req.metadata_mut());
    req.metadata_mut().insert(
        "x-cloudlysis-credential",
        cloudlysis_test_support::node_credential("acme", &["commands:account"])
            .parse()
            .unwrap(),
    );
    client.execute(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_node_exports_its_series_from_the_start() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let node = start(
        &[
            "aggregate",
            "--nats-url",
            &url,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    check("aggregate", &node.http, &["start"]).await;
    open_account(node.grpc.as_deref().unwrap(), "a-1").await;
    let text = check("aggregate", &node.http, &["start", "use"]).await;
    assert_eq!(
        value(&text, "cloudlysis_commands_total", &[("outcome", "ok")]),
        1.0
    );
    assert_eq!(value(&text, "cloudlysis_entities", &[]), 1.0);
    drop(node.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_nodes_consumer_and_actor_series_move_under_load() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let url = server.url();
    let node = start(
        &[
            "projection",
            "--nats-url",
            &url,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[
            ("PROJECTION_MAX_DELIVER", "3"),
            ("PROJECTION_MAX_IN_FLIGHT", "32"),
        ],
    )
    .await;
    let before = check("projection", &node.http, &["start"]).await;
    let consumer = [("consumer", "cloudlysis-projection-view-balances")];
    assert_eq!(
        value(&before, "cloudlysis_consumer_messages_total", &consumer),
        0.0
    );
    assert!(
        value(
            &before,
            "cloudlysis_actor_mailbox_capacity",
            &[("kind", "view")]
        ) > 0.0,
        "{before}"
    );

    // Load, and one event the view refuses (it is redelivered, then poison).
    let load = Deposits {
        tenant: TenantId::new("acme").unwrap(),
        prefix: "acc-".into(),
        events: 4000,
        accounts: 50,
        amount: |i| (i % 7 + 1) as i64,
        window: 256,
    };
    let publish = tokio::spawn({
        let js = js.clone();
        async move { load.publish(&js).await.unwrap() }
    });
    let bad = serde_json::json!({"schema_version": 1, "commit_id": "bad-1", "events": [{
        "event_id": "bad-1", "tenant_id": "acme", "aggregate_type": "account",
        "aggregate_id": "broken", "sequence": 1, "event_type": "Deposited",
        "schema_version": 1, "occurred_at": "2026-12-01T00:00:00Z",
        "payload": {"amount": "not a number"}}]});
    cloudlysis_runtime::nats::publish(
        &js,
        "tenant.acme.aggregate.account.broken".into(),
        &RequestContext::new(TenantId::new("acme").unwrap()),
        "bad-1",
        None,
        bytes::Bytes::from(bad.to_string()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    // While the load runs, the in-flight gauge and the handlers' mailbox depth rise.
    let (mut max_in_flight, mut max_depth) = (0f64, 0f64);
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut moved = false;
    while tokio::time::Instant::now() < end {
        let (_, text) = http_get(&format!("{}/metrics", node.http)).await.unwrap();
        max_in_flight = max_in_flight.max(value(&text, "cloudlysis_consumer_in_flight", &consumer));
        max_depth = max_depth.max(value(
            &text,
            "cloudlysis_actor_mailbox_depth",
            &[("kind", "view")],
        ));
        if max_in_flight > 0.0 && max_depth > 0.0 {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        moved,
        "in flight {max_in_flight}, mailbox depth {max_depth}"
    );
    publish.await.unwrap();
    let settled = eventually(Duration::from_secs(60), || {
        let http = node.http.clone();
        async move {
            let (_, text) = http_get(&format!("{http}/metrics")).await.unwrap();
            value(&text, "cloudlysis_consumer_poison_total", &consumer) >= 1.0
                && value(&text, "cloudlysis_view_checkpoint", &[("view", "balances")]) > 0.0
                && value(
                    &text,
                    "cloudlysis_consumer_messages_total",
                    &[("outcome", "ack")],
                ) >= 4000.0
        }
    })
    .await;
    let after = check("projection", &node.http, &["start", "use"]).await;
    assert!(settled, "{after}");
    assert!(value(&after, "cloudlysis_consumer_redeliveries_total", &consumer) >= 1.0);
    assert!(
        value(
            &after,
            "cloudlysis_actor_messages_total",
            &[("kind", "view"), ("outcome", "ok")]
        ) >= 4000.0
    );
    assert!(
        value(
            &after,
            "cloudlysis_view_checkpoint",
            &[("view", "balances")]
        ) > 0.0
    );
    drop(node.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_node_exports_its_series_from_the_start() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let url = server.url();
    let aggregate = start(
        &[
            "aggregate",
            "--nats-url",
            &url,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        &[],
    )
    .await;
    let aggregate_addr = format!("http://{}", aggregate.grpc.clone().unwrap());
    let runner = common::spawn_runner(&url, &aggregate_addr, &[]).await;
    check("runner", &runner.http, &["start"]).await;
    // A transfer from an account that does not exist fails after one refused withdrawal.
    let _ = runner
        .start_workflow(
            "acme",
            "transfer",
            "t-1",
            serde_json::json!({"from": "x", "to": "y", "amount": 1}),
        )
        .await
        .unwrap()
        .unwrap();
    let ended = eventually(Duration::from_secs(30), || async {
        common::instance_record(&js, "transfer", "acme", "t-1")
            .await
            .is_some_and(|r| r["status"] == "failed")
    })
    .await;
    assert!(ended);
    // The runner counts the instance right after its record is written, so the record can be
    // seen first: poll the counter until it moves (and no further), then check every series.
    let finished = || async {
        let text = http_get(&format!("{}/metrics", runner.http))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        value(
            &text,
            "cloudlysis_workflow_instances_finished_total",
            &[("status", "failed")],
        )
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            finished().await >= 1.0
        })
        .await
    );
    let text = check("runner", &runner.http, &["start", "use"]).await;
    assert_eq!(
        value(
            &text,
            "cloudlysis_workflow_instances_finished_total",
            &[("status", "failed")]
        ),
        1.0,
        "one failed instance, counted once"
    );
    assert!(
        value(
            &text,
            "cloudlysis_effect_attempts_total",
            &[("outcome", "permanent")]
        ) >= 1.0
    );
    drop(aggregate.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_exports_its_series_from_the_start() {
    let gateway = start(&["gateway", "--http-addr", "127.0.0.1:0"], &[]).await;
    check("gateway", &gateway.http, &["start"]).await;
    // A refused request is traffic too.
    let (status, _) = http_get(&format!("{}/v1/query/balances/a", gateway.http))
        .await
        .unwrap();
    assert_eq!(status, 401);
    let text = check("gateway", &gateway.http, &["start", "use"]).await;
    assert_eq!(
        value(
            &text,
            "cloudlysis_gateway_requests_total",
            &[("status", "401")]
        ),
        1.0
    );
    drop(gateway.child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_exports_every_roles_series_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start(
        &[
            "dev",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    check("dev", &dev.http, &["start"]).await;
    let (status, _) = http_get(&format!("{}/v1/query/balances/a", dev.http))
        .await
        .unwrap();
    assert_eq!(status, 401);
    check("dev", &dev.http, &["start", "use"]).await;
    drop(dev.child);
}
