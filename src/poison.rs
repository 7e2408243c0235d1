//! `cloudlysis poison list|show|redrive|purge`: the poison operations of the Control UI from a
//! shell, over a projection node's `ops.admin.v1.OpsAdmin` (every verb audited with `--actor`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use cloudlysis_proto::ops::ops_admin_client::OpsAdminClient;
use cloudlysis_proto::ops::{
    GetPoisonRequest, ListPoisonRequest, PoisonSummary, PoisonVerbRequest,
};
use serde_json::json;

use crate::cli::{PoisonAction, PoisonArgs};

/// Deadline of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn summary(s: &PoisonSummary) -> serde_json::Value {
    json!({
        "id": s.id, "source": {"kind": s.source_kind, "name": s.source}, "consumer": s.consumer,
        "stream": s.stream, "sequence": s.sequence, "subject": s.subject, "error": s.error,
        "attempts": s.attempts, "time": s.time,
    })
}

/// Runs one poison verb; exit 1 when a redrive failed.
pub async fn run(
    src: &cloudlysis_runtime::config::ConfigSource,
    args: PoisonArgs,
) -> anyhow::Result<ExitCode> {
    // Each call carries a node credential signed with `node.secret`, naming the actor.
    let keys = cloudlysis_runtime::credential::NodeKeys::load(src, None)?;
    let addr = args
        .node_addr
        .unwrap_or_else(|| "http://127.0.0.1:50052".into());
    let actor = args
        .actor
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into());
    if actor.trim().is_empty() {
        anyhow::bail!("--actor is empty: name who acts (the audit trail records it)");
    }
    let channel = cloudlysis_runtime::tls::ClientTls::load(src)?
        .endpoint(&addr)
        .with_context(|| format!("invalid --node-addr {addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot reach the projection node at {addr} (--node-addr)"))?;
    let rights = ["admin:read".to_string(), "admin:operate".to_string()];
    let credential: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = keys
        .sign(
            &actor,
            cloudlysis_runtime::credential::SYSTEM_TENANT,
            &rights,
        )?
        .parse()
        .context("the node credential is not ASCII")?;
    let mut client = OpsAdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert(
            cloudlysis_runtime::context::headers::NODE_CREDENTIAL,
            credential.clone(),
        );
        Ok(r)
    });
    fn request<T>(actor: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Ok(v) = actor.parse() {
            r.metadata_mut()
                .insert(cloudlysis_runtime::context::headers::ACTOR, v);
        }
        r
    }
    let failed = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    match args.action {
        PoisonAction::List { source, limit } => {
            let mut cursor = String::new();
            let mut left = limit.min(500);
            while left > 0 {
                let page = client
                    .list_poison(request(
                        &actor,
                        ListPoisonRequest {
                            source: source.clone().unwrap_or_default(),
                            cursor: cursor.clone(),
                            limit: left,
                        },
                    ))
                    .await
                    .map_err(failed)?
                    .into_inner();
                for r in &page.records {
                    println!("{}", summary(r));
                }
                left = left.saturating_sub(page.records.len() as u32);
                if page.next_cursor.is_empty() {
                    break;
                }
                cursor = page.next_cursor;
            }
        }
        PoisonAction::Show { id } => {
            let d = client
                .get_poison(request(&actor, GetPoisonRequest { id }))
                .await
                .map_err(failed)?
                .into_inner();
            let mut out = d.summary.as_ref().map(summary).unwrap_or_default();
            out["headers"] = d
                .headers
                .iter()
                .map(|h| (h.name.clone(), json!(h.values)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            out["message"] = json!({
                "available": d.message_available,
                "payload": serde_json::from_slice::<serde_json::Value>(&d.payload)
                    .unwrap_or_else(|_| json!(String::from_utf8_lossy(&d.payload))),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        PoisonAction::Redrive { id } => {
            let r = client
                .redrive_poison(request(&actor, PoisonVerbRequest { id }))
                .await
                .map_err(failed)?
                .into_inner();
            println!(
                "{}",
                json!({"id": r.id, "outcome": r.outcome, "detail": r.detail})
            );
            if r.outcome == "failed" {
                return Ok(ExitCode::FAILURE);
            }
        }
        PoisonAction::Purge { id } => {
            let r = client
                .purge_poison(request(&actor, PoisonVerbRequest { id }))
                .await
                .map_err(failed)?
                .into_inner();
            println!(
                "{}",
                json!({"id": r.id, "outcome": r.outcome, "detail": r.detail})
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
