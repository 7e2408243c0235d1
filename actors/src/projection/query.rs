//! `projection.gateway.v1.QueryService`: Get and List of one tenant's documents, waiting for
//! `min_sequence` (read-your-writes). The tenant is the verified node credential's (see
//! `cloudlysis_runtime::credential`), and every key is
//! read under `<space>.<tenant>.`, so no query reaches another tenant's documents.

use cloudlysis_runtime::credential::Caller;
use std::time::Duration;

use cloudlysis_proto::projection::query_service_server::QueryService;
use cloudlysis_proto::projection::{Document, GetRequest, GetResponse, ListRequest, ListResponse};
use cloudlysis_runtime::context::RequestContext;
use cloudlysis_runtime::kv as buckets;
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::nats;
use cloudlysis_runtime::subject::validate_token;
use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::node::*;
use super::view::DocumentRecord;

/// Longest one `List` may take (less when the caller's deadline is nearer): the scan of the
/// tenant's keys is bounded by time, its memory by the page size.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most `List`s a node runs at once; more are refused with `RESOURCE_EXHAUSTED` (429 at the
/// Gateway, with `Retry-After`).
pub const MAX_CONCURRENT_LISTS: usize = 4;
/// Values of `outcome` on `cloudlysis_view_lists_total`.
pub const LIST_OUTCOMES: &[&str] = &["ok", "busy", "timeout", "error"];
/// The `outcome` labels of `cloudlysis_view_gets_total`.
pub const GET_OUTCOMES: &[&str] = &["found", "not_found", "error"];
/// Documents of a page read at once.
const PAGE_READS_IN_FLIGHT: usize = 16;
/// Largest page a `List` returns.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

impl ProjectionNode {
    /// Waits until `view`'s checkpoint reaches `min`, or `deadline`; returns the generation
    /// answering queries and its checkpoint.
    async fn caught_up(
        &self,
        view: &str,
        min: Option<u64>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(u32, u64), Status> {
        let entry = self
            .inner
            .views
            .get(view)
            .ok_or_else(|| Status::not_found(format!("unknown view `{view}`")))?;
        let deadline =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(5));
        loop {
            let serving = entry
                .serving()
                .ok_or_else(|| Status::unavailable(format!("view `{view}` is starting")))?;
            let Some(min) = min else {
                return Ok((serving.generation, serving.checkpoint.get()));
            };
            // Bounded slices, so a switch of generations during the wait is noticed.
            let slice = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            let now = serving.checkpoint.wait_for(min, slice).await;
            let still = entry.serving().map(|s| s.generation) == Some(serving.generation);
            if now >= min && still {
                return Ok((serving.generation, now));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "view `{view}` is at sequence {now}, not yet {min}"
                )));
            }
        }
    }
}

/// A read of the view's store (the NATS KV bucket) that failed: retryable, and named as the
/// store's failure, not the node's.
fn store_failed(view: &str, why: impl std::fmt::Display) -> Status {
    Status::unavailable(format!(
        "reading view `{view}` from its store ({}) failed: {why}",
        buckets::VIEWS_BUCKET
    ))
}

/// Why a read was not tried: the NATS client knows its connection is down.
fn not_connected(state: &str) -> String {
    format!("NATS is not connected ({state}); nothing was read")
}

pub(crate) fn query_context<T>(
    request: &Request<T>,
) -> Result<(RequestContext, Option<tokio::time::Instant>), Status> {
    let ctx = RequestContext::extract(request.metadata())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let deadline = crate::grpc::deadline(request.metadata());
    Ok((ctx, deadline))
}

pub(crate) fn token(what: &str, v: &str) -> Result<(), Status> {
    validate_token(v).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

#[tonic::async_trait]
impl QueryService for ProjectionNode {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Caller::of(&request)?.require("queries", &request.get_ref().view)?;
        let (ctx, deadline) = query_context(&request)?;
        let req = request.into_inner();
        token("view", &req.view)?;
        token("key", &req.key)?;
        let (generation, checkpoint) = self
            .caught_up(&req.view, req.min_sequence, deadline)
            .await?;
        let key = buckets::view_document_key(
            &buckets::view_space(&req.view, generation),
            ctx.tenant.as_str(),
            &req.key,
        );
        // A client that knows its connection is down would hold the read until its deadline.
        let read = match nats::not_connected(&self.inner.js) {
            Some(state) => Err(store_failed(&req.view, not_connected(&state))),
            None => tokio::time::timeout(Duration::from_secs(5), self.inner.kv.get(&key))
                .await
                .map_err(|_| store_failed(&req.view, "no answer within 5s"))
                .and_then(|r| r.map_err(|e| store_failed(&req.view, e))),
        };
        let outcome = match &read {
            Ok(Some(_)) => "found",
            Ok(None) => "not_found",
            Err(_) => "error",
        };
        let view = self
            .inner
            .views
            .get_key_value(req.view.as_str())
            .map_or("unknown", |(k, _)| *k);
        metrics::counter!(names::VIEW_GETS, "view" => view, "outcome" => outcome).increment(1);
        let entry = read?.ok_or_else(|| {
            Status::not_found(format!("no document `{}` in view `{}`", req.key, req.view))
        })?;
        let record: DocumentRecord = serde_json::from_slice(&entry)
            .map_err(|e| Status::internal(format!("document does not decode: {e}")))?;
        Ok(Response::new(GetResponse {
            document_json: serde_json::to_vec(&record.doc).unwrap_or_default(),
            checkpoint,
        }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Caller::of(&request)?.require("queries", &request.get_ref().view)?;
        let (ctx, deadline) = query_context(&request)?;
        let req = request.into_inner();
        token("view", &req.view)?;
        if !req.prefix.is_empty() {
            token("prefix", &req.prefix)?;
        }
        if !req.cursor.is_empty() {
            token("cursor", &req.cursor)?;
        }
        let count = |outcome: &'static str| {
            let view = self
                .inner
                .views
                .get_key_value(req.view.as_str())
                .map_or("unknown", |(k, _)| *k);
            metrics::counter!(names::VIEW_LISTS, "view" => view, "outcome" => outcome).increment(1);
        };
        // Admission first: a List never waits for room, it is refused (and retried later).
        let Ok(_permit) = self.inner.lists.clone().try_acquire_owned() else {
            count("busy");
            return Err(Status::resource_exhausted(format!(
                "{MAX_CONCURRENT_LISTS} lists are running on this projection node; retry shortly"
            )));
        };
        let (generation, checkpoint) = self
            .caught_up(&req.view, req.min_sequence, deadline)
            .await?;
        if let Some(state) = nats::not_connected(&self.inner.js) {
            count("error");
            return Err(store_failed(&req.view, not_connected(&state)));
        }
        let page = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let space = buckets::view_space(&req.view, generation);
        let prefix = format!("{space}.{}.", ctx.tenant.as_str());
        let until = deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + LIST_TIMEOUT)
            .min(tokio::time::Instant::now() + LIST_TIMEOUT);
        let read = async {
            let keys = crate::kv_scan::page_under(
                &self.inner.js,
                buckets::VIEWS_BUCKET,
                &prefix,
                crate::kv_scan::Direction::After(&req.cursor),
                page,
                |key| key.starts_with(req.prefix.as_str()),
            )
            .await
            .map_err(|e| store_failed(&req.view, e))?;
            let kv = self.inner.kv.clone();
            let reads = futures::stream::iter(keys.keys.iter().cloned().map(|key| {
                let (kv, full) = (kv.clone(), format!("{prefix}{key}"));
                async move { kv.get(&full).await.map(|v| (key, v)) }
            }))
            .buffered(PAGE_READS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
            let mut documents = Vec::with_capacity(reads.len());
            for read in reads {
                // A document deleted since the scan is left out.
                let (key, Some(bytes)) = read.map_err(|e| store_failed(&req.view, e))? else {
                    continue;
                };
                let record: DocumentRecord = serde_json::from_slice(&bytes).map_err(|e| {
                    Status::internal(format!("document {key} does not decode: {e}"))
                })?;
                documents.push(Document {
                    key,
                    document_json: serde_json::to_vec(&record.doc).unwrap_or_default(),
                });
            }
            let next = if keys.more {
                keys.keys.last().cloned().unwrap_or_default()
            } else {
                String::new()
            };
            Ok::<_, Status>((documents, next))
        };
        // Out of time is DEADLINE_EXCEEDED: retrying it would only add load.
        let (documents, next_cursor) = match tokio::time::timeout_at(until, read).await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                count("error");
                return Err(e);
            }
            Err(_) => {
                count("timeout");
                return Err(Status::deadline_exceeded(format!(
                    "listing view `{}` did not finish in time",
                    req.view
                )));
            }
        };
        count("ok");
        Ok(Response::new(ListResponse {
            next_cursor,
            documents,
            checkpoint,
        }))
    }
}
