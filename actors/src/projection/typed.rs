//! Typed views: a view over one aggregate type that names the aggregate by its Rust type and
//! folds its decoded events, so the event types are written once.
//!
//! ```
//! use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection};
//! use cloudlysis_actors::projection::typed::{Typed, TypedView};
//! # #[derive(serde::Deserialize)] #[serde(tag = "type", content = "payload")]
//! # pub enum Cmd { Add { n: u64 } }
//! # #[derive(serde::Serialize, serde::Deserialize)] #[serde(tag = "type", content = "payload")]
//! # pub enum Ev { Added { n: u64 }, Reset }
//! # pub struct Counter;
//! # impl Aggregate for Counter {
//! #     const TYPE: &'static str = "counter";
//! #     const SCHEMA_VERSION: u32 = 1;
//! #     type State = (); type Command = Cmd; type Event = Ev;
//! #     fn handle(_: &(), _: Cmd, _: &CommandContext) -> Result<Vec<Ev>, Rejection> { Ok(vec![]) }
//! #     fn apply(_: &mut (), _: &Ev) {}
//! # }
//! pub struct Totals;
//!
//! impl TypedView for Totals {
//!     const NAME: &'static str = "totals";
//!     const SCHEMA_VERSION: u32 = 1;
//!     type Document = u64;
//!     type Follows = Counter;
//!
//!     fn apply(total: &mut u64, e: Typed<'_, Ev>) -> Result<(), String> {
//!         match e.event {
//!             Ev::Added { n } => *total += n,
//!             Ev::Reset => *total = 0,
//!         }
//!         Ok(())
//!     }
//! }
//! // Registered with `App::typed_view::<Totals>()`, or `.register::<TypedViewOf<Totals>>()`
//! // on a projection node.
//! ```
//!
//! The rules: the view receives every event of the aggregate it follows (and nothing else),
//! decoded through the aggregate's upcasters ([`crate::aggregate::decode_event`]), with its
//! envelope (tenant, id, sequence, time) beside it; `apply` matches the event enum, so an event
//! the view does not care about is skipped by an explicit arm, never by accident. An event that
//! does not decode — an unknown event type, a payload of another shape, a schema version newer
//! than the code — is the event's failure, and so a poison record naming it and the decode
//! error. A view over several aggregate types implements [`View`] and calls
//! [`crate::projection::view::decode`] per type.

use std::marker::PhantomData;

use cloudlysis_runtime::envelope::EventEnvelope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::view::View;
use crate::aggregate::{Aggregate, decode_event};

/// An event of the followed aggregate, decoded, with the envelope it came in.
#[derive(Debug)]
pub struct Typed<'a, E> {
    /// The decoded event.
    pub event: E,
    /// Its envelope: tenant, aggregate id, sequence, occurred at, correlation.
    pub meta: &'a EventEnvelope,
}

/// A view over one aggregate type, folding its decoded events.
pub trait TypedView: Send + Sync + 'static {
    /// View name: a subject token.
    const NAME: &'static str;
    /// Schema version of the documents.
    const SCHEMA_VERSION: u32;
    /// The document type.
    type Document: Serialize + DeserializeOwned + Default + Send + Sync + 'static;
    /// The aggregate whose events this view folds.
    type Follows: Aggregate;

    /// The document an event belongs to (default: the aggregate id; `None`: ignored).
    fn key(meta: &EventEnvelope) -> Option<String> {
        Some(meta.aggregate_id.clone())
    }

    /// Folds one decoded event into its document. An error fails the event (then poison).
    fn apply(
        doc: &mut Self::Document,
        event: Typed<'_, <Self::Follows as Aggregate>::Event>,
    ) -> Result<(), String>;
}

/// The [`View`] that runs a [`TypedView`] `V`.
pub struct TypedViewOf<V>(PhantomData<fn() -> V>);

impl<V: TypedView> View for TypedViewOf<V> {
    const NAME: &'static str = V::NAME;
    const SCHEMA_VERSION: u32 = V::SCHEMA_VERSION;
    type Document = V::Document;

    fn aggregate_types() -> &'static [&'static str] {
        const { &[<V::Follows as Aggregate>::TYPE] }
    }

    fn key(event: &EventEnvelope) -> Option<String> {
        V::key(event)
    }

    fn apply(doc: &mut V::Document, event: &EventEnvelope) -> Result<(), String> {
        let decoded = decode_event::<V::Follows>(event)?;
        V::apply(
            doc,
            Typed {
                event: decoded,
                meta: event,
            },
        )
    }
}
