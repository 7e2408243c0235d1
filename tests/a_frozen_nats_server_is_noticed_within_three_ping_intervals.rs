//! A node whose NATS server stops answering without closing the connection (frozen here with
//! SIGSTOP, as a silent network cut looks to the client) notices after three unanswered pings
//! of `nats.ping_interval_ms`; from then on a command is refused at once — `UNAVAILABLE`,
//! nothing published — instead of waiting out its reads' deadline or, on a warm entity, the
//! publish deadline as *outcome unknown*; a query is refused at once as not read, and a
//! workflow start as not started. What an operator reads while NATS is gone answers at once:
//! a poison or audit list is refused as not read, and a runner's Status answers with what the
//! node itself knows instead of waiting out a deadline for each consumer's server counts.
//!
//! Before: the interval was the NATS client's default of 60 s, not a setting, so a node went
//! on sending into the dead connection for three minutes, and each command or query waited out
//! a deadline.

mod common;

use std::time::Duration;

use cloudlysis_proto::aggregate::command_service_client::CommandServiceClient;
use cloudlysis_proto::aggregate::{ExecuteRequest, ExecuteResponse};
use cloudlysis_proto::projection::GetRequest;
use cloudlysis_proto::projection::query_service_client::QueryServiceClient;
use cloudlysis_proto::workflows::StartRequest;
use cloudlysis_proto::workflows::workflow_service_client::WorkflowServiceClient;
use cloudlysis_runtime::outcome::ErrorKind;
use cloudlysis_runtime::{RequestContext, TenantId, stream};
use cloudlysis_test_support::{NatsServer, eventually, http_get};
use tonic::transport::Channel;

async fn command(
    client: &mut CommandServiceClient<Channel>,
    command_type: &str,
    payload: &str,
) -> Result<ExecuteResponse, tonic::Status> {
    let mut req = tonic::Request::new(ExecuteRequest {
        aggregate_type: "account".into(),
        aggregate_id: "a-1".into(),
        command_type: command_type.into(),
        payload_json: payload.as_bytes().to_vec(),
        expected_version: None,
    });
    RequestContext::new(TenantId::new("acme").unwrap()).inject(req.metadata_mut());
    common::sign(&mut req, "acme", &["commands:account"]);
    req.set_timeout(Duration::from_secs(5));
    client.execute(req).await.map(|r| r.into_inner())
}

/// A `role` node with a short ping interval, ready: the process and a channel to it.
async fn ready_node(role: &str, server: &NatsServer) -> (tokio::process::Child, Channel) {
    // The aggregate nodes' stream, which a runner reads but does not create.
    let js = server.jetstream().await;
    stream::ensure_stream(&js, &stream::aggregate_events())
        .await
        .unwrap();
    let env = [
        ("CLOUDLYSIS_NATS_PING_INTERVAL_MS", "300"),
        ("CLOUDLYSIS_NATS_REQUEST_TIMEOUT_MS", "1000"),
    ];
    let (child, grpc, http) = common::spawn_node(role, &server.url(), &env).await;
    let ready = eventually(Duration::from_secs(20), || async {
        matches!(http_get(&format!("{http}/ready")).await, Ok((200, _)))
    })
    .await;
    let answer = http_get(&format!("{http}/ready")).await;
    assert!(ready, "the {role} node never became ready: {answer:?}");
    (child, common::node_channel(&grpc).await)
}

/// Freezes `server` and calls `attempt` until it is refused as `UNAVAILABLE` naming the lost
/// connection and `nothing` ("nothing was read"); resumes the server either way. The refusal,
/// or a failure naming the last answer.
async fn refused_while_frozen<T, F, Fut>(
    server: &NatsServer,
    nothing: &str,
    attempt: F,
) -> tonic::Status
where
    T: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    server.pause().unwrap();
    let last = std::sync::Mutex::new(None);
    let refused = eventually(Duration::from_secs(20), || async {
        let answer = attempt().await;
        let done = matches!(&answer, Err(s) if s.code() == tonic::Code::Unavailable
            && s.message().contains("NATS is not connected")
            && s.message().contains(nothing));
        *last.lock().unwrap() = Some(answer);
        done
    })
    .await;
    server.resume().unwrap();
    let last = last.into_inner().unwrap();
    match last {
        Some(Err(status)) if refused => status,
        other => panic!("never refused as `{nothing}` with NATS frozen; last answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_after_the_pings_went_unanswered_is_refused_at_once_as_not_published() {
    let server = NatsServer::start().await.unwrap();
    let (_child, channel) = ready_node("aggregate", &server).await;
    let mut client = CommandServiceClient::new(channel);
    // A warm entity: a deposit is decided on cached state and goes straight to its commit.
    let opened = command(&mut client, "Open", r#"{"owner":"o"}"#).await;
    assert_eq!(opened.unwrap().version, 1);

    refused_while_frozen(&server, "nothing was published", || {
        let mut client = client.clone();
        async move { command(&mut client, "Deposit", r#"{"amount":1}"#).await }
    })
    .await;

    // The server answers again: the node reconnects and commits.
    let committed = eventually(Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            command(&mut client, "Deposit", r#"{"amount":1}"#)
                .await
                .is_ok()
        }
    })
    .await;
    assert!(committed, "no command committed after the server came back");
}

async fn get(client: &mut QueryServiceClient<Channel>) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(GetRequest {
        view: "balances".into(),
        key: "nobody".into(),
        min_sequence: None,
    });
    RequestContext::new(TenantId::new("acme").unwrap()).inject(req.metadata_mut());
    common::sign(&mut req, "acme", &["queries:balances"]);
    req.set_timeout(Duration::from_secs(5));
    client.get(req).await.map(drop)
}

fn not_found(answer: &Result<(), tonic::Status>) -> bool {
    matches!(answer, Err(s) if s.code() == tonic::Code::NotFound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_after_the_pings_went_unanswered_is_refused_at_once_as_not_read() {
    let server = NatsServer::start().await.unwrap();
    let (_child, channel) = ready_node("projection", &server).await;
    let mut client = QueryServiceClient::new(channel);
    let first = get(&mut client).await;
    assert!(not_found(&first), "{first:?}");

    refused_while_frozen(&server, "nothing was read", || {
        let mut client = client.clone();
        async move { get(&mut client).await }
    })
    .await;

    let served = eventually(Duration::from_secs(30), || {
        let mut client = client.clone();
        async move { not_found(&get(&mut client).await) }
    })
    .await;
    assert!(served, "no query served after the server came back");
}

async fn start(client: &mut WorkflowServiceClient<Channel>, id: &str) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(StartRequest {
        workflow: "transfer".into(),
        instance: id.into(),
        input_json: br#"{"from":"a","to":"b","amount":1}"#.to_vec(),
    });
    RequestContext::new(TenantId::new("acme").unwrap()).inject(req.metadata_mut());
    common::sign(&mut req, "acme", &["workflows:transfer"]);
    req.set_timeout(Duration::from_secs(5));
    client.start(req).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_start_after_the_pings_went_unanswered_is_refused_at_once_as_not_started() {
    let server = NatsServer::start().await.unwrap();
    let (_child, channel) = ready_node("runner", &server).await;
    let mut client = WorkflowServiceClient::new(channel);
    start(&mut client, "t-0").await.unwrap();

    let tries = std::sync::atomic::AtomicUsize::new(0);
    let next_id = || {
        let n = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("t-{}", n + 1)
    };
    let refused = refused_while_frozen(&server, "nothing was started", || {
        let (mut client, id) = (client.clone(), next_id());
        async move { start(&mut client, &id).await }
    })
    .await;
    assert_eq!(
        ErrorKind::of(&refused),
        Some(ErrorKind::NotCommitted),
        "{refused:?}"
    );

    // (A fresh id per try: a try that timed out may still have started its instance.)
    let started = eventually(Duration::from_secs(30), || {
        let (mut client, id) = (client.clone(), next_id());
        async move { start(&mut client, &id).await.is_ok() }
    })
    .await;
    assert!(started, "no workflow started after the server came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reads_answer_at_once_while_the_connection_is_known_down() {
    use cloudlysis_proto::ops::ListPoisonRequest;
    use cloudlysis_proto::ops::ops_admin_client::OpsAdminClient;
    use cloudlysis_proto::runner::StatusRequest;
    use cloudlysis_proto::runner::runner_admin_client::RunnerAdminClient;

    let server = NatsServer::start().await.unwrap();
    let (_projection, projection) = ready_node("projection", &server).await;
    let (_runner, runner) = ready_node("runner", &server).await;
    let mut ops = OpsAdminClient::with_interceptor(projection, common::operator_credential);
    let admin = RunnerAdminClient::with_interceptor(runner, common::operator_credential);
    let list = || {
        let mut r = tonic::Request::new(ListPoisonRequest::default());
        r.set_timeout(Duration::from_secs(4));
        r
    };
    // A deadline shorter than one NATS request's (`nats.request_timeout_ms` is 1 s here, and
    // the runner asks the server about each of its consumers): only an answer that asks
    // nothing of NATS meets it.
    let status = || {
        let mut r = tonic::Request::new(StatusRequest {});
        r.set_timeout(Duration::from_millis(900));
        r
    };
    ops.list_poison(list()).await.unwrap();

    server.pause().unwrap();
    let last = std::sync::Mutex::new(String::new());
    let answered = eventually(Duration::from_secs(20), || {
        let (mut ops, mut admin, last) = (ops.clone(), admin.clone(), &last);
        async move {
            let poison = ops.list_poison(list()).await;
            let refused = matches!(&poison, Err(s) if s.code() == tonic::Code::Unavailable
                && s.message().contains("NATS is not connected"));
            let status = admin.status(status()).await;
            let served = status
                .as_ref()
                .is_ok_and(|s| s.get_ref().drain_state == "serving");
            *last.lock().unwrap() = format!("poison: {poison:?}\nstatus: {status:?}");
            refused && served
        }
    })
    .await;
    server.resume().unwrap();
    assert!(answered, "{}", last.lock().unwrap());
}
