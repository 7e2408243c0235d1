//! A gRPC call straight to a node — past the Gateway — needs a node credential signed with the
//! deployment's node secret; the tenant the node acts for is the credential's. Before this, the
//! nodes believed whatever `x-tenant-id` a caller sent: anyone who could reach a node's port
//! could write or read any tenant's data, or rebuild a view. Refused calls change nothing.

mod common;

use cloudlysis_proto::aggregate::ExecuteRequest;
use cloudlysis_proto::aggregate::command_service_client::CommandServiceClient;
use cloudlysis_proto::projection::GetRequest;
use cloudlysis_proto::projection::query_service_server::QueryService as _;
use cloudlysis_proto::projection_admin::RebuildViewRequest;
use cloudlysis_proto::projection_admin::projection_admin_client::ProjectionAdminClient;
use cloudlysis_runtime::credential::NodeKeys;
use common::Platform;
use tonic::Code;

const CREDENTIAL: &str = "x-cloudlysis-credential";

fn open(id: &str) -> tonic::Request<ExecuteRequest> {
    tonic::Request::new(ExecuteRequest {
        aggregate_type: "account".into(),
        aggregate_id: id.into(),
        command_type: "Open".into(),
        payload_json: br#"{"owner":"o"}"#.to_vec(),
        expected_version: None,
    })
}

fn with(
    mut req: tonic::Request<ExecuteRequest>,
    credential: &str,
) -> tonic::Request<ExecuteRequest> {
    req.metadata_mut()
        .insert(CREDENTIAL, credential.parse().unwrap());
    req
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn forged_missing_expired_and_foreign_credentials_are_refused_and_change_nothing() {
    let p = Platform::start().await;
    let mut node = CommandServiceClient::new(common::node_channel(p.grpc_addr).await);
    let keys = cloudlysis_test_support::node_keys();
    let rights = ["commands:account".to_string()];
    let foreign = NodeKeys::new(b"another-deployment-another-secret!!")
        .unwrap()
        .sign("mallory", "acme", &rights)
        .unwrap();
    let expired = keys
        .sign_at("mallory", "acme", &rights, now() - 120, now() - 60)
        .unwrap();
    let forever = keys
        .sign_at("mallory", "acme", &rights, now(), now() + 30 * 86_400)
        .unwrap();

    // No credential at all, only the tenant header the nodes used to believe.
    let mut bare = open("a-1");
    bare.metadata_mut()
        .insert("x-tenant-id", "acme".parse().unwrap());
    let refused = node.execute(bare).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");

    for (what, credential) in [
        ("signed with another secret", foreign.as_str()),
        ("expired", expired.as_str()),
        ("living longer than the node accepts", forever.as_str()),
        ("not a credential", "Bearer nonsense"),
    ] {
        let refused = node
            .execute(with(open("a-1"), credential))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused}");
    }

    // A good credential for one tenant with a forged tenant header.
    let mut forged = with(open("a-1"), &keys.sign("mallory", "acme", &rights).unwrap());
    forged
        .metadata_mut()
        .insert("x-tenant-id", "globex".parse().unwrap());
    let refused = node.execute(forged).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");

    // A good credential without the right for this aggregate type.
    let reader = keys.sign("mallory", "acme", &["queries:*".into()]).unwrap();
    let refused = node.execute(with(open("a-1"), &reader)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    let other_type = keys
        .sign("mallory", "acme", &["commands:order".into()])
        .unwrap();
    let refused = node
        .execute(with(open("a-1"), &other_type))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");

    assert_eq!(p.message_count().await, 0, "a refused call committed");

    // The credential's tenant is the one the node acts for.
    let ok = node
        .execute(with(
            open("a-1"),
            &keys.sign("ops", "acme", &rights).unwrap(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.version, 1);
    let commits = p.commits().await;
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].2.get("tenant-id").unwrap().as_str(), "acme");
    assert!(commits[0].3.contains(".acme."), "{}", commits[0].3);
}

#[tokio::test]
async fn queries_read_the_credentials_tenant_and_admin_verbs_need_admin_rights() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:*"]);
    let seq = p
        .account_command(&token, "a-1", r#"{"type":"Open","payload":{"owner":"o"}}"#)
        .await;
    let channel = common::node_channel(p.projection_addr).await;
    let mut query = cloudlysis_proto::projection::query_service_client::QueryServiceClient::new(
        channel.clone(),
    );
    let get = |tenant: &str| {
        let mut r = tonic::Request::new(GetRequest {
            view: "balances".into(),
            key: "a-1".into(),
            min_sequence: Some(seq),
        });
        common::sign(&mut r, tenant, &["queries:balances"]);
        r
    };
    let doc = query.get(get("acme")).await.unwrap().into_inner();
    assert!(!doc.document_json.is_empty());
    // globex's credential reads globex's documents, whatever tenant header it sends.
    let mut spoof = get("globex");
    spoof
        .metadata_mut()
        .insert("x-tenant-id", "acme".parse().unwrap());
    let refused = query.get(spoof).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    let missing = query.get(get("globex")).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing}");
    // In-process calls that did not pass a node's credential layer are refused too.
    let bypass = p
        .projection
        .get(tonic::Request::new(GetRequest {
            view: "balances".into(),
            key: "a-1".into(),
            min_sequence: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(bypass.code(), Code::Unauthenticated, "{bypass}");

    // Rebuilding a view is an operator's verb.
    let mut admin = ProjectionAdminClient::new(channel);
    let rebuild = |rights: &[&str]| {
        let mut r = tonic::Request::new(RebuildViewRequest {
            view: "balances".into(),
        });
        if !rights.is_empty() {
            common::sign(&mut r, "acme", rights);
        }
        r
    };
    let refused = admin.rebuild_view(rebuild(&[])).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
    for rights in [&["queries:*", "commands:*"][..], &["admin:read"][..]] {
        let refused = admin.rebuild_view(rebuild(rights)).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::PermissionDenied,
            "{rights:?}: {refused}"
        );
    }
    use cloudlysis_actors::projection::generation;
    let kv = generation::bucket(&p.js).await.unwrap();
    let (gens, _) = generation::read(&kv, "balances").await.unwrap();
    assert_eq!(gens.building, None, "a refused rebuild was requested");
    let started = admin
        .rebuild_view(rebuild(&["admin:operate"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.generation, 1);
}
