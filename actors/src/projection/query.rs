//! `projection.gateway.v1.QueryService`: Get and List of one tenant's documents, waiting for
//! `min_sequence` (read-your-writes). The tenant comes from gRPC metadata only and every key is
//! read under `<space>.<tenant>.`, so no query reaches another tenant's documents.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use cloudlysis_proto::projection::query_service_server::QueryService;
use cloudlysis_proto::projection::{Document, GetRequest, GetResponse, ListRequest, ListResponse};
use cloudlysis_runtime::context::RequestContext;
use cloudlysis_runtime::kv as buckets;
use cloudlysis_runtime::subject::validate_token;
use tonic::{Request, Response, Status};

use super::node::*;
use super::view::DocumentRecord;

/// Most documents one `List` reads for a tenant (it filters and pages in memory).
pub const MAX_LIST_SCAN: u64 = 100_000;
/// Deadline of one `List`'s read of the view.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Reads the current documents of one tenant in one view generation (see
/// [`crate::kv_scan::latest_under`]). Refuses more than [`MAX_LIST_SCAN`] documents.
pub(crate) async fn scan_documents(
    js: &jetstream::Context,
    space: &str,
    tenant: &str,
) -> Result<Vec<(String, Bytes)>, Status> {
    crate::kv_scan::latest_under(
        js,
        buckets::VIEWS_BUCKET,
        &format!("{space}.{tenant}."),
        MAX_LIST_SCAN,
    )
    .await
    .map_err(|e| match e {
        crate::kv_scan::ScanError::TooMany { found, max } => Status::failed_precondition(format!(
            "the view holds {found} documents for this tenant; List reads at most {max}"
        )),
        crate::kv_scan::ScanError::Nats(e) => Status::unavailable(e),
    })
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
        let entry = tokio::time::timeout(Duration::from_secs(5), self.inner.kv.get(&key))
            .await
            .map_err(|_| Status::unavailable("reading the view timed out"))?
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| {
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
        let (ctx, deadline) = query_context(&request)?;
        let req = request.into_inner();
        token("view", &req.view)?;
        if !req.prefix.is_empty() {
            token("prefix", &req.prefix)?;
        }
        if !req.cursor.is_empty() {
            token("cursor", &req.cursor)?;
        }
        let (generation, checkpoint) = self
            .caught_up(&req.view, req.min_sequence, deadline)
            .await?;
        let page = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let space = buckets::view_space(&req.view, generation);
        let scan = tokio::time::timeout(
            LIST_TIMEOUT,
            scan_documents(&self.inner.js, &space, ctx.tenant.as_str()),
        )
        .await
        .map_err(|_| Status::unavailable("listing the view timed out"))??;
        let mut found: Vec<(String, Bytes)> = scan
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with(&req.prefix) && (req.cursor.is_empty() || *k > req.cursor)
            })
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let more = found.len() > page;
        found.truncate(page);
        let next = if more {
            found.last().map(|(k, _)| k.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let mut documents = Vec::with_capacity(found.len());
        for (key, bytes) in found {
            let record: DocumentRecord = serde_json::from_slice(&bytes)
                .map_err(|e| Status::internal(format!("document {key} does not decode: {e}")))?;
            documents.push(Document {
                key,
                document_json: serde_json::to_vec(&record.doc).unwrap_or_default(),
            });
        }
        Ok(Response::new(ListResponse {
            next_cursor: next,
            documents,
            checkpoint,
        }))
    }
}
