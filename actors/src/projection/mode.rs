//! How a projection node consumes the event stream: PerView (one durable per view) or Single
//! (one durable feeds every view), the refusal of a mode that would apply events twice, and
//! Single mode's combined handler.

use std::sync::Arc;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use cloudlysis_runtime::consumer::DurableName;
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_runtime::{kv as buckets, stream};

use super::generation::{self as view_generation};
use super::node::*;
use crate::handler::{Delivery, EventHandler, HandlerError};

/// How a projection node consumes the event stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProjectionMode {
    /// One durable consumer per view: views fail, lag and rebuild independently.
    #[default]
    PerView,
    /// One durable consumer (`cloudlysis-projection-all`) feeds every view: one fetch loop and
    /// one server-side consumer, but a failing view holds back all of them, and views cannot
    /// be rebuilt.
    Single,
}

impl std::str::FromStr for ProjectionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "per-view" => Ok(Self::PerView),
            "single" => Ok(Self::Single),
            other => Err(format!(
                "`{other}` is not a mode: expected `per-view` or `single`"
            )),
        }
    }
}

impl std::fmt::Display for ProjectionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PerView => "per-view",
            Self::Single => "single",
        })
    }
}

/// Consumption mode of the projection node.
pub const MODE: cloudlysis_runtime::config::Setting = cloudlysis_runtime::config::Setting {
    key: "projection.mode",
    env: "CLOUDLYSIS_PROJECTION_MODE",
    flag: "--mode",
    doc: "per-view: one durable consumer per view (isolated, rebuildable); single: one consumer \
          feeds every view [default: per-view]",
};

/// Refuses a mode that would apply events a second time: Single mode over views that already
/// ran PerView (their own consumers or a rebuild exist), or PerView over a Single-mode consumer.
pub(crate) async fn check_mode(
    ctx: &Ctx,
    mode: ProjectionMode,
    views: &[Registered],
) -> Result<(), ProjectionError> {
    let events = ctx
        .js
        .get_stream(stream::AGGREGATE_EVENTS)
        .await
        .map_err(|e| ProjectionError::Nats(e.to_string()))?;
    let exists = |name: String| {
        let events = events.clone();
        async move {
            match tokio::time::timeout(NATS_TIMEOUT, events.consumer_info(&name)).await {
                Ok(Ok(_)) => Ok(true),
                Ok(Err(e)) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(false),
                Ok(Err(e)) => Err(ProjectionError::Nats(format!("consumer {name}: {e}"))),
                Err(_) => Err(ProjectionError::Nats(format!("consumer {name}: timed out"))),
            }
        }
    };
    match mode {
        ProjectionMode::PerView => {
            let single = DurableName::projection_single().to_string();
            if exists(single.clone()).await? {
                return Err(ProjectionError::Mode(format!(
                    "consumer {single} exists: these views run in Single mode; set {}=single \
                     (starting PerView would apply every event again)",
                    MODE.env
                )));
            }
        }
        ProjectionMode::Single => {
            for r in views {
                let (gens, _) = view_generation::read(&ctx.generations, r.name)
                    .await
                    .map_err(|e| ProjectionError::Nats(e.to_string()))?;
                let own = view_generation::durable(r.name, gens.active)
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                if gens != view_generation::Generations::default() || exists(own.clone()).await? {
                    return Err(ProjectionError::Mode(format!(
                        "view `{}` runs in PerView mode (consumer {own}, generation {}); \
                         Single mode would apply its events again — keep {}=per-view",
                        r.name, gens.active, MODE.env
                    )));
                }
            }
            // The shared consumer is past every event it delivered: a view it never fed would
            // miss them, and Single mode cannot rebuild. Remember which views it feeds.
            let key = buckets::SINGLE_MODE_VIEWS_KEY;
            let names: std::collections::BTreeSet<String> =
                views.iter().map(|r| r.name.to_string()).collect();
            let nats = |e: &dyn std::fmt::Display| ProjectionError::Nats(format!("{key}: {e}"));
            let recorded = tokio::time::timeout(NATS_TIMEOUT, ctx.generations.get(key))
                .await
                .map_err(|_| nats(&"timed out"))?
                .map_err(|e| nats(&e))?
                .and_then(|b| {
                    serde_json::from_slice::<std::collections::BTreeSet<String>>(&b).ok()
                });
            let single = DurableName::projection_single().to_string();
            let known = match (exists(single.clone()).await?, recorded) {
                (true, Some(recorded)) => {
                    let new: Vec<&str> = names
                        .iter()
                        .filter(|n| !recorded.contains(*n))
                        .map(String::as_str)
                        .collect();
                    if !new.is_empty() {
                        return Err(ProjectionError::Mode(format!(
                            "view `{}` is new to Single mode: consumer {single} is past events \
                             it never applied, and Single mode cannot rebuild; run it on a \
                             PerView node, or start Single mode over (delete {single} and the \
                             views' documents)",
                            new.join("`, `")
                        )));
                    }
                    recorded
                }
                (true, None) | (false, _) => names,
            };
            let value = bytes::Bytes::from(serde_json::to_vec(&known).unwrap_or_default());
            tokio::time::timeout(NATS_TIMEOUT, ctx.generations.put(key, value))
                .await
                .map_err(|_| nats(&"timed out"))?
                .map_err(|e| nats(&e))?;
        }
    }
    Ok(())
}

/// Single mode's handler: applies each commit to every view, each on its own. A view that
/// fails fails the message (the views that applied it skip it on redelivery: per-document
/// guard); on the last attempt each view that still fails gets its own poison record and the
/// message is acked — one broken view never keeps an event from the others.
pub(crate) struct AllViews {
    pub(crate) views: Arc<Vec<(&'static str, ApplyFn)>>,
    pub(crate) poison: async_nats::jetstream::kv::Store,
    pub(crate) js: async_nats::jetstream::Context,
    pub(crate) max_deliver: u64,
    pub(crate) io_timeout: std::time::Duration,
}

impl EventHandler for AllViews {
    type Event = Commit;
    type State = ();
    const KIND: &'static str = "views";

    async fn init(&self) -> Result<(), cloudlysis_runtime::mailbox::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<Commit>, _: &mut ()) -> Result<(), HandlerError> {
        let mut failed = Vec::new();
        for (view, apply) in self.views.iter() {
            if let Err(e) = apply(d.event.clone(), d.meta.stream_sequence).await {
                failed.push((*view, e));
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        let summary = failed
            .iter()
            .map(|(v, e)| format!("view `{v}`: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        // The consumer poisons a message that failed `max_deliver - 1` times: on that attempt,
        // poison only the failing views and let the others keep what they applied.
        if d.meta.delivered < self.max_deliver.saturating_sub(1) {
            return Err(HandlerError::new(summary));
        }
        for (view, error) in &failed {
            let record = cloudlysis_runtime::poison::PoisonRecord::new(
                &d.meta.stream,
                &d.meta.consumer,
                d.meta.stream_sequence,
                &d.meta.subject,
                d.headers.as_ref(),
                error.clone(),
                d.meta.delivered,
            )
            .for_view(view);
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            let put = self.poison.put(record.key(), bytes.into());
            match tokio::time::timeout(self.io_timeout, put).await {
                Ok(Ok(_)) => {
                    tracing::warn!(view, seq = d.meta.stream_sequence, %error, "event quarantined as poison for one view");
                    crate::consumer::announce_poison(&self.js, &record).await;
                    metrics::counter!(
                        cloudlysis_runtime::metrics::names::CONSUMER_POISON,
                        "stream" => d.meta.stream.clone(),
                        "consumer" => d.meta.consumer.clone()
                    )
                    .increment(1);
                }
                // Without its record the view must not drop the event: fail the whole message,
                // which the consumer then quarantines as a whole.
                _ => return Err(HandlerError::new(summary)),
            }
        }
        Ok(())
    }
}
