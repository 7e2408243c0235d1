//! `ops.admin.v1.OpsAdmin`: poison records (list, inspect, redrive, purge) and the audit trail,
//! served by projection and runner nodes.
//!
//! | verb | what it does | audited as |
//! |---|---|---|
//! | list | the records of the poison bucket in key order, filtered by source, paged (a headers-only scan) | — |
//! | inspect | one record with its original message read back from the stream | — |
//! | redrive | a view's record: the commit is applied again to that view generation (see [`crate::projection::view::ViewStore::redrive`]); a runner consumer's record from `WORKFLOW_COMMANDS` or `WORKFLOW_EVENTS`: the message is published again under a new de-duplication id (its handler's own idempotence — the effect ledger, the instance's pending commands and armed timers — keeps it once); then the record is removed | `poison.redrive` |
//! | purge | the record is removed, the message not applied | `poison.purge` |
//!
//! Both verbs are idempotent: a record already gone answers `already_gone`. A redrive that fails
//! keeps the record and says why; a runner's message that does not decode as its handler reads
//! it (an effect command, an effect's result) is not published again. Events of `AGGREGATE_EVENTS` are never published again (the
//! event store would hold them twice): a workflow's record of an aggregate event can only be
//! purged.

use async_nats::jetstream::{self, kv};
use cloudlysis_proto::ops::ops_admin_server::OpsAdmin;
use cloudlysis_proto::ops::{
    AuditEntry, GetPoisonRequest, Header, ListAuditRequest, ListAuditResponse, ListPoisonRequest,
    ListPoisonResponse, PoisonDetail, PoisonSummary, PoisonVerbRequest, PoisonVerbResponse,
};
use cloudlysis_runtime::audit::{self, AuditRecord};
use cloudlysis_runtime::context::headers;
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_runtime::poison::{self, POISON_BUCKET, PoisonRecord};
use cloudlysis_runtime::{kv as buckets, stream};
use std::time::Duration;
use tonic::{Request, Response, Status};

use crate::kv_scan::{Direction, page_under};
use crate::projection::ProjectionNode;

/// Deadline of each NATS call of an operation.
pub const OPS_TIMEOUT: Duration = Duration::from_secs(5);
/// Page size when a list names none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page.
pub const MAX_LIMIT: u32 = 500;

/// The `OpsAdmin` service of a node. Cheap to clone.
#[derive(Clone)]
pub struct OpsService {
    js: jetstream::Context,
    poison: kv::Store,
    audit: kv::Store,
    views: Option<ProjectionNode>,
}

impl OpsService {
    /// The service on `js`; `views` redrives view records (a projection node), without it only
    /// runner records can be redriven here.
    pub async fn new(
        js: jetstream::Context,
        views: Option<ProjectionNode>,
    ) -> Result<Self, String> {
        let poison = buckets::ensure_bucket(&js, &buckets::poison())
            .await
            .map_err(|e| e.to_string())?;
        let audit = audit::open(&js).await.map_err(|e| e.to_string())?;
        Ok(Self {
            js,
            poison,
            audit,
            views,
        })
    }

    /// `routes` with this service added — or, when the poison bucket or the audit log cannot
    /// be opened, without it (logged: the node serves everything else).
    pub(crate) async fn added_to(
        routes: tonic::service::Routes,
        js: jetstream::Context,
        views: Option<ProjectionNode>,
    ) -> tonic::service::Routes {
        match Self::new(js, views).await {
            Ok(ops) => routes.add_service(ops.server()),
            Err(e) => {
                tracing::error!(error = %e, "OpsAdmin could not start; poison operations are not served");
                routes
            }
        }
    }

    /// The tonic server of this service.
    pub fn server(self) -> cloudlysis_proto::ops::ops_admin_server::OpsAdminServer<Self> {
        cloudlysis_proto::ops::ops_admin_server::OpsAdminServer::new(self)
    }

    async fn record(&self, id: &str) -> Result<Option<PoisonRecord>, Status> {
        if poison::parse_key(id).is_none() {
            return Err(Status::invalid_argument(format!(
                "`{id}` is not a poison record id"
            )));
        }
        let entry = tokio::time::timeout(OPS_TIMEOUT, self.poison.get(id))
            .await
            .map_err(|_| Status::unavailable("reading the poison record timed out"))?
            .map_err(|e| Status::unavailable(format!("reading the poison record: {e}")))?;
        match entry {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Status::internal(format!("poison record {id} does not decode: {e}"))),
        }
    }

    /// The original message of a record: `None` once its stream no longer holds it.
    async fn original(
        &self,
        record: &PoisonRecord,
    ) -> Result<Option<jetstream::message::StreamMessage>, Status> {
        let read = async {
            let stream = self
                .js
                .get_stream(&record.stream)
                .await
                .map_err(|e| e.to_string())?;
            match stream.get_raw_message(record.sequence).await {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    Ok(None)
                }
                Err(e) => Err(e.to_string()),
            }
        };
        tokio::time::timeout(OPS_TIMEOUT, read)
            .await
            .map_err(|_| Status::unavailable("reading the original message timed out"))?
            .map_err(|e| Status::unavailable(format!("reading the original message: {e}")))
    }

    async fn remove(&self, id: &str) -> Result<(), Status> {
        tokio::time::timeout(OPS_TIMEOUT, self.poison.purge(id))
            .await
            .map_err(|_| Status::unavailable("removing the poison record timed out"))?
            .map_err(|e| Status::unavailable(format!("removing the poison record: {e}")))
    }

    async fn audit(
        &self,
        actor: &str,
        tenant: &str,
        action: &str,
        target: &str,
        r: &PoisonVerbResponse,
    ) {
        // The verb's own outcome word, as its caller was answered.
        audit::record_outcome(
            &self.audit,
            (actor, tenant),
            action,
            target,
            (&r.outcome, &r.detail),
            OPS_TIMEOUT,
        )
        .await;
    }

    /// Redrives `record`: what happened, for the caller.
    async fn redrive(&self, id: &str, record: &PoisonRecord) -> Result<(String, String), Status> {
        let Some(message) = self.original(record).await? else {
            return Ok((
                "failed".into(),
                format!(
                    "stream {} no longer holds sequence {}; purge the record",
                    record.stream, record.sequence
                ),
            ));
        };
        let (kind, name) = poison::source(&record.consumer, record.view.as_deref());
        if kind == "view" {
            let Some(views) = &self.views else {
                return Ok((
                    "failed".into(),
                    "view records are redriven by a projection node".into(),
                ));
            };
            let commit: Commit = match serde_json::from_slice(&message.payload) {
                Ok(c) => c,
                Err(e) => {
                    return Ok((
                        "failed".into(),
                        format!("the message does not decode as a commit: {e}"),
                    ));
                }
            };
            let generation = record
                .consumer
                .rsplit_once("=g")
                .and_then(|(_, g)| g.parse().ok())
                .unwrap_or(0);
            return match views
                .redrive(&name, generation, commit, record.sequence)
                .await
            {
                Ok(()) => {
                    self.remove(id).await?;
                    Ok((
                        "applied".into(),
                        format!(
                            "sequence {} applied to view `{name}` (generation {generation})",
                            record.sequence
                        ),
                    ))
                }
                Err(e) => Ok(("failed".into(), e)),
            };
        }
        if record.stream == stream::AGGREGATE_EVENTS {
            return Ok((
                "failed".into(),
                "an event of the event store is never published again (it would be stored \
                 twice); purge the record"
                    .into(),
            ));
        }
        // A message its handler cannot decode would only be quarantined again: it is not
        // published (after a deploy whose handler reads it, it is).
        if let Err(e) = decodes(&message.subject, &message.payload) {
            return Ok((
                "failed".into(),
                format!(
                    "the message does not decode as its handler reads it ({e}): publishing it \
                     again would quarantine it again; purge the record, or redrive it once a \
                     node that reads it runs"
                ),
            ));
        }
        // Published again under a new de-duplication id: the handler's own idempotence keeps
        // it once.
        let mut hdrs = async_nats::HeaderMap::new();
        for (k, vs) in message.headers.iter() {
            if k.to_string() == headers::NATS_MSG_ID {
                continue;
            }
            for v in vs {
                hdrs.append(k.to_string().as_str(), v.as_str());
            }
        }
        hdrs.insert(
            headers::NATS_MSG_ID,
            format!(
                "redrive:{}:{}:{}",
                record.stream, record.sequence, record.time
            )
            .as_str(),
        );
        let publish = async {
            self.js
                .publish_with_headers(message.subject.to_string(), hdrs, message.payload.clone())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(OPS_TIMEOUT, publish).await {
            Ok(Ok(ack)) => {
                self.remove(id).await?;
                Ok((
                    "applied".into(),
                    format!(
                        "published again to {} as sequence {} for {kind} `{name}`",
                        message.subject, ack.sequence
                    ),
                ))
            }
            Ok(Err(e)) => Ok(("failed".into(), format!("publishing it again: {e}"))),
            Err(_) => Ok(("failed".into(), "publishing it again timed out".into())),
        }
    }
}

/// Whether a runner's message on `subject` decodes as the handler of its subjects reads it (an
/// effect command, an effect's result); other subjects are not checked.
fn decodes(subject: &str, payload: &[u8]) -> Result<(), String> {
    use cloudlysis_runtime::workflow::{EffectCommand, EffectResult, TIMER_EFFECT, TimerPayload};
    let kind = subject.split('.').nth(2);
    let decoded = match kind {
        // A timer is an effect command whose payload the timer worker reads as well.
        Some("effect") => serde_json::from_slice::<EffectCommand>(payload).and_then(|cmd| {
            if cmd.effect_type == TIMER_EFFECT {
                serde_json::from_value::<TimerPayload>(cmd.payload).map(drop)
            } else {
                Ok(())
            }
        }),
        Some("effect_result") => serde_json::from_slice::<EffectResult>(payload).map(drop),
        _ => Ok(()),
    };
    decoded.map_err(|e| e.to_string())
}

fn summary(id: &str, r: &PoisonRecord) -> PoisonSummary {
    let (kind, name) = poison::source(&r.consumer, r.view.as_deref());
    PoisonSummary {
        id: id.to_string(),
        source_kind: kind.to_string(),
        source: name,
        consumer: r.consumer.clone(),
        stream: r.stream.clone(),
        sequence: r.sequence,
        subject: r.subject.clone(),
        error: r.error.clone(),
        attempts: r.attempts,
        time: r.time.clone(),
    }
}

/// The caller named by the Gateway (`x-actor`) and the tenant of its credential.
pub(crate) fn caller<T>(request: &Request<T>) -> (String, String) {
    let get = |k: &str| {
        request
            .metadata()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    (get(headers::ACTOR), get(headers::TENANT_ID))
}

fn limit(n: u32, default: u32) -> usize {
    let n = match n {
        0 => default,
        n => n.min(MAX_LIMIT),
    };
    n as usize
}

impl OpsService {
    /// Refuses an operation at once while this node's NATS client knows its connection is
    /// down: each one reads (and a verb writes) NATS, and would otherwise wait out its deadline.
    fn connected(&self, nothing: &str) -> Result<(), Status> {
        match cloudlysis_runtime::nats::not_connected(&self.js) {
            None => Ok(()),
            Some(state) => Err(Status::unavailable(format!(
                "NATS is not connected ({state}) on this node: {nothing}"
            ))),
        }
    }
}

#[tonic::async_trait]
impl OpsAdmin for OpsService {
    async fn list_poison(
        &self,
        request: Request<ListPoisonRequest>,
    ) -> Result<Response<ListPoisonResponse>, Status> {
        self.connected("nothing was read")?;
        let req = request.into_inner();
        let source = req.source.clone();
        let keep = move |key: &str| {
            source.is_empty()
                || poison::parse_key(key).is_some_and(|(consumer, view, _)| {
                    let (_, name) = poison::source(consumer, view);
                    name == source || consumer == source
                })
        };
        let page = tokio::time::timeout(
            OPS_TIMEOUT * 2,
            page_under(
                &self.js,
                POISON_BUCKET,
                "",
                Direction::After(&req.cursor),
                limit(req.limit, DEFAULT_LIMIT),
                keep,
            ),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("listing poison records timed out"))?
        .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut records = Vec::with_capacity(page.keys.len());
        for key in &page.keys {
            if let Some(r) = self.record(key).await? {
                records.push(summary(key, &r));
            }
        }
        Ok(Response::new(ListPoisonResponse {
            records,
            next_cursor: if page.more {
                page.keys.last().cloned().unwrap_or_default()
            } else {
                String::new()
            },
        }))
    }

    async fn get_poison(
        &self,
        request: Request<GetPoisonRequest>,
    ) -> Result<Response<PoisonDetail>, Status> {
        self.connected("nothing was read")?;
        let id = request.into_inner().id;
        let record = self
            .record(&id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no poison record `{id}`")))?;
        let original = self.original(&record).await?;
        let headers = record
            .headers
            .iter()
            .map(|(name, values)| Header {
                name: name.clone(),
                values: values.clone(),
            })
            .collect();
        Ok(Response::new(PoisonDetail {
            summary: Some(summary(&id, &record)),
            headers,
            message_available: original.is_some(),
            payload: original.map(|m| m.payload.to_vec()).unwrap_or_default(),
        }))
    }

    async fn redrive_poison(
        &self,
        request: Request<PoisonVerbRequest>,
    ) -> Result<Response<PoisonVerbResponse>, Status> {
        self.connected("nothing was done")?;
        let (actor, tenant) = caller(&request);
        let id = request.into_inner().id;
        let response = match self.record(&id).await? {
            None => PoisonVerbResponse {
                id: id.clone(),
                outcome: "already_gone".into(),
                detail: "no such record (redriven or purged before)".into(),
            },
            Some(record) => {
                let (outcome, detail) = self.redrive(&id, &record).await?;
                PoisonVerbResponse {
                    id: id.clone(),
                    outcome,
                    detail,
                }
            }
        };
        self.audit(&actor, &tenant, "poison.redrive", &id, &response)
            .await;
        Ok(Response::new(response))
    }

    async fn purge_poison(
        &self,
        request: Request<PoisonVerbRequest>,
    ) -> Result<Response<PoisonVerbResponse>, Status> {
        self.connected("nothing was done")?;
        let (actor, tenant) = caller(&request);
        let id = request.into_inner().id;
        let response = match self.record(&id).await? {
            None => PoisonVerbResponse {
                id: id.clone(),
                outcome: "already_gone".into(),
                detail: "no such record (redriven or purged before)".into(),
            },
            Some(record) => {
                self.remove(&id).await?;
                PoisonVerbResponse {
                    id: id.clone(),
                    outcome: "purged".into(),
                    detail: format!(
                        "sequence {} of {} will not be applied by {}",
                        record.sequence, record.stream, record.consumer
                    ),
                }
            }
        };
        self.audit(&actor, &tenant, "poison.purge", &id, &response)
            .await;
        Ok(Response::new(response))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditResponse>, Status> {
        self.connected("nothing was read")?;
        let req = request.into_inner();
        let page = tokio::time::timeout(
            OPS_TIMEOUT * 2,
            page_under(
                &self.js,
                audit::AUDIT_BUCKET,
                "",
                Direction::Before(&req.cursor),
                limit(req.limit, 100),
                |_| true,
            ),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("listing the audit trail timed out"))?
        .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut entries = Vec::with_capacity(page.keys.len());
        for key in &page.keys {
            let bytes = tokio::time::timeout(OPS_TIMEOUT, self.audit.get(key))
                .await
                .map_err(|_| Status::unavailable("reading the audit trail timed out"))?
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let Some(bytes) = bytes else { continue };
            let Ok(r) = serde_json::from_slice::<AuditRecord>(&bytes) else {
                continue;
            };
            entries.push(AuditEntry {
                id: key.clone(),
                time: r.time,
                actor: r.actor,
                tenant: r.tenant,
                action: r.action,
                target: r.target,
                outcome: r.outcome,
                detail: r.detail,
            });
        }
        Ok(Response::new(ListAuditResponse {
            entries,
            next_cursor: if page.more {
                page.keys.last().cloned().unwrap_or_default()
            } else {
                String::new()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::decodes;

    fn command(effect_type: &str, payload: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schema_version": 1, "command_id": "c", "tenant_id": "acme",
            "effect_type": effect_type, "workflow": "transfer", "instance": "t-1",
            "issued_at_ms": 1, "payload": payload,
        }))
        .unwrap()
    }

    #[test]
    fn a_runner_message_decodes_as_its_handler_reads_it_timers_included() {
        let subject = "tenant.acme.effect.withdraw";
        assert!(decodes(subject, &command("withdraw", serde_json::json!({}))).is_ok());
        assert!(decodes(subject, br#"{"garbage":1}"#).is_err());
        let timer = "tenant.acme.effect._timer";
        let good = serde_json::json!({"name": "timeout", "fire_at_ms": 5});
        assert!(decodes(timer, &command("_timer", good)).is_ok());
        let bad = serde_json::json!({"name": "timeout"});
        assert!(
            decodes(timer, &command("_timer", bad)).is_err(),
            "the timer worker reads the payload too"
        );
        assert!(decodes("tenant.acme.effect_result.withdraw", b"{}").is_err());
        assert!(decodes("tenant.acme.workflow.transfer.t-1", b"anything").is_ok());
    }
}
