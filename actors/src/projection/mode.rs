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

/// Single mode's handler: applies each commit to every view. A view that fails fails the
/// message; on redelivery the views that already applied it skip it (per-document guard).
pub(crate) struct AllViews(pub(crate) Arc<Vec<(&'static str, ApplyFn)>>);

impl EventHandler for AllViews {
    type Event = Commit;
    type State = ();
    const KIND: &'static str = "views";

    async fn init(&self) -> Result<(), cloudlysis_runtime::mailbox::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<Commit>, _: &mut ()) -> Result<(), HandlerError> {
        for (view, apply) in self.0.iter() {
            apply(d.event.clone(), d.meta.stream_sequence)
                .await
                .map_err(|e| HandlerError::new(format!("view `{view}`: {e}")))?;
        }
        Ok(())
    }
}
