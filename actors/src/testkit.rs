//! A test kit for behaviours: pure, no NATS, no actors — the behaviour's own functions driven
//! exactly as the runtime drives them (commands decoded from `{"type", "payload"}`, state folded
//! from events, views fed the envelopes the aggregate node writes).
//!
//! ```
//! use cloudlysis_actors::testkit;
//! # use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection};
//! # #[derive(serde::Deserialize)] #[serde(tag = "type", content = "payload")]
//! # enum Cmd { Add { n: u64 } }
//! # #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! # #[serde(tag = "type", content = "payload")]
//! # enum Ev { Added { n: u64 } }
//! # struct Counter;
//! # impl Aggregate for Counter {
//! #     const TYPE: &'static str = "counter";
//! #     const SCHEMA_VERSION: u32 = 1;
//! #     type State = u64; type Command = Cmd; type Event = Ev;
//! #     fn handle(s: &u64, c: Cmd, _: &CommandContext) -> Result<Vec<Ev>, Rejection> {
//! #         let Cmd::Add { n } = c;
//! #         if *s + n > 10 { return Err(Rejection::new("too many")) }
//! #         Ok(vec![Ev::Added { n }])
//! #     }
//! #     fn apply(s: &mut u64, e: &Ev) { let Ev::Added { n } = e; *s += n; }
//! # }
//! testkit::aggregate::<Counter>()
//!     .given([Ev::Added { n: 4 }])
//!     .when(Cmd::Add { n: 2 })
//!     .then_events([Ev::Added { n: 2 }]);
//! testkit::aggregate::<Counter>()
//!     .given([Ev::Added { n: 9 }])
//!     .when_json("Add", serde_json::json!({ "n": 2 }))
//!     .then_rejected("too many");
//! ```
//!
//! Views: [`view`]`::<V>().given(`[`history`]`::<A>(id, events)).then_document(id, doc)`.
//! Workflows: [`workflow`]`::<W>()` feeds starts, events, effect results, timers and cancels
//! and asserts what each decision issues and how the instance ends.
//!
//! A failed expectation panics with the expected and actual events side by side, as JSON.
//! For integration tests against a real `nats-server`, see the `cloudlysis-test-support` crate
//! (`NatsServer::start`, `eventually`).

use std::fmt::Write as _;
use std::marker::PhantomData;

use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::envelope::EventEnvelope;
use serde::Serialize;

use crate::aggregate::{Aggregate, CommandContext, Rejection};
use crate::projection::View;

mod workflow;

pub use workflow::{INSTANCE, Reacted, START_MS, STEP_MS, WorkflowKit, workflow};

/// The tenant the kit's commands and envelopes carry.
pub const TENANT: &str = "test";
/// The aggregate id the kit's commands and envelopes carry (unless given another).
pub const AGGREGATE_ID: &str = "test-1";
/// The time the kit's envelopes carry.
pub const OCCURRED_AT: &str = "2026-01-01T00:00:00Z";

/// Starts an aggregate test: `given` its history, `when` a command, `then` the outcome.
pub fn aggregate<A: Aggregate>() -> AggregateKit<A> {
    AggregateKit {
        id: AGGREGATE_ID.into(),
        _a: PhantomData,
    }
}

/// An aggregate under test, before its history is given.
pub struct AggregateKit<A: Aggregate> {
    id: String,
    _a: PhantomData<A>,
}

impl<A: Aggregate> AggregateKit<A> {
    /// The aggregate id the command is for (default [`AGGREGATE_ID`]).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The events the entity already has, oldest first (none: a new entity).
    pub fn given(self, events: impl IntoIterator<Item = A::Event>) -> Given<A> {
        let mut state = A::State::default();
        let mut version = 0;
        for event in events {
            A::apply(&mut state, &event);
            version += 1;
        }
        Given {
            id: self.id,
            state,
            version,
        }
    }
}

impl<A: Aggregate> AggregateKit<A> {
    /// The entity's history as stored envelopes — possibly written by older versions of the
    /// aggregate — read as rehydration reads them: through [`Aggregate::upcast`], refusing
    /// events newer than the code. Panics naming the event that cannot be read.
    #[track_caller]
    pub fn given_stored(self, events: impl IntoIterator<Item = EventEnvelope>) -> Given<A> {
        let decoded: Vec<A::Event> = events
            .into_iter()
            .map(|e| match crate::aggregate::decode_event::<A>(&e) {
                Ok(event) => event,
                Err(why) => panic!("aggregate `{}`: {why}", A::TYPE),
            })
            .collect();
        self.given(decoded)
    }
}

/// An aggregate with its history folded into state.
pub struct Given<A: Aggregate> {
    id: String,
    state: A::State,
    version: u64,
}

impl<A: Aggregate> Given<A> {
    /// The state folded from the given events.
    pub fn state(&self) -> &A::State {
        &self.state
    }

    /// Handles a typed command.
    pub fn when(self, command: A::Command) -> When<A> {
        let ctx = CommandContext {
            request: RequestContext::new(tenant()),
            aggregate_id: self.id.clone(),
            version: self.version,
        };
        let outcome = A::handle(&self.state, command, &ctx);
        When {
            given: self,
            outcome,
        }
    }

    /// Handles a command as it arrives over the wire: its type and JSON payload, decoded by the
    /// runtime's rule. Panics when the command does not decode (the Gateway's 400).
    #[track_caller]
    pub fn when_json(self, command_type: &str, payload: serde_json::Value) -> When<A> {
        let tagged = serde_json::json!({ "type": command_type, "payload": payload });
        match serde_json::from_value::<A::Command>(tagged) {
            Ok(command) => self.when(command),
            Err(e) => panic!(
                "`{command_type}` does not decode as a command of aggregate `{}`: {e}",
                A::TYPE
            ),
        }
    }
}

/// The outcome of one command.
pub struct When<A: Aggregate> {
    given: Given<A>,
    outcome: Result<Vec<A::Event>, Rejection>,
}

impl<A: Aggregate> When<A> {
    /// The events or the rejection, for assertions the kit does not offer.
    pub fn outcome(&self) -> &Result<Vec<A::Event>, Rejection> {
        &self.outcome
    }

    /// Asserts the command produced exactly `expected`, in order; returns the state after
    /// them, for more assertions.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>) -> A::State {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.outcome {
            Ok(actual) => {
                let (e, a) = (as_json(&expected), as_json(&actual));
                if e != a {
                    panic!(
                        "aggregate `{}`: the events differ\n{}",
                        A::TYPE,
                        side_by_side(&e, &a)
                    );
                }
                let mut state = self.given.state;
                for event in &actual {
                    A::apply(&mut state, event);
                }
                state
            }
            Err(rejection) => panic!(
                "aggregate `{}`: the command was rejected ({}), expected events\n{}",
                A::TYPE,
                rejection.0,
                side_by_side(&as_json(&expected), &[])
            ),
        }
    }

    /// Asserts the command was rejected with a message containing `containing`.
    #[track_caller]
    pub fn then_rejected(self, containing: &str) {
        match self.outcome {
            Ok(actual) => panic!(
                "aggregate `{}`: expected a rejection containing {containing:?}, the command produced events\n{}",
                A::TYPE,
                side_by_side(&[], &as_json(&actual))
            ),
            Err(rejection) if !rejection.0.contains(containing) => panic!(
                "aggregate `{}`: the rejection {:?} does not contain {containing:?}",
                A::TYPE,
                rejection.0
            ),
            Err(_) => {}
        }
    }
}

/// The envelope the aggregate node writes for `event` of aggregate `A` at `sequence` (1-based),
/// for feeding views and workflows in tests.
pub fn envelope<A: Aggregate>(
    aggregate_id: &str,
    sequence: u64,
    event: &A::Event,
) -> EventEnvelope {
    let value = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
    let (event_type, payload) = match value {
        serde_json::Value::Object(mut map) => match map.remove("type") {
            Some(serde_json::Value::String(t)) => {
                (t, map.remove("payload").unwrap_or(serde_json::Value::Null))
            }
            _ => ("event".into(), serde_json::Value::Object(map)),
        },
        other => ("event".into(), other),
    };
    EventEnvelope {
        event_id: format!("{aggregate_id}-{sequence}"),
        tenant_id: TENANT.into(),
        aggregate_type: A::TYPE.into(),
        aggregate_id: aggregate_id.into(),
        sequence,
        event_type,
        schema_version: A::SCHEMA_VERSION,
        occurred_at: OCCURRED_AT.into(),
        payload,
        correlation_id: None,
        traceparent: None,
    }
}

/// Envelopes for one entity's history, numbered from 1.
pub fn history<A: Aggregate>(
    aggregate_id: &str,
    events: impl IntoIterator<Item = A::Event>,
) -> Vec<EventEnvelope> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| envelope::<A>(aggregate_id, i as u64 + 1, &e))
        .collect()
}

/// Starts a view test: `given` envelopes, `then` the documents.
pub fn view<V: View>() -> ViewKit<V> {
    ViewKit { _v: PhantomData }
}

/// Starts a typed-view test ([`crate::projection::TypedView`]): the same kit as [`view`].
pub fn typed_view<V: crate::projection::TypedView>() -> ViewKit<crate::projection::TypedViewOf<V>> {
    view::<crate::projection::TypedViewOf<V>>()
}

/// A view under test.
pub struct ViewKit<V: View> {
    _v: PhantomData<V>,
}

impl<V: View> ViewKit<V> {
    /// Applies `events` in order, as the projection node does: events of aggregate types the
    /// view does not follow, and events without a key, are skipped.
    pub fn given(self, events: impl IntoIterator<Item = EventEnvelope>) -> ViewGiven<V> {
        let mut documents = std::collections::BTreeMap::new();
        let mut failures = Vec::new();
        for event in events {
            if !V::aggregate_types().contains(&event.aggregate_type.as_str()) {
                continue;
            }
            let Some(key) = V::key(&event) else { continue };
            let doc: &mut V::Document = documents.entry(key).or_default();
            if let Err(e) = V::apply(doc, &event) {
                failures.push(format!(
                    "{} {}#{} ({}): {e}",
                    event.aggregate_type, event.aggregate_id, event.sequence, event.event_type
                ));
            }
        }
        ViewGiven {
            documents,
            failures,
        }
    }
}

/// A view's documents after the given events.
pub struct ViewGiven<V: View> {
    documents: std::collections::BTreeMap<String, V::Document>,
    failures: Vec<String>,
}

impl<V: View> ViewGiven<V> {
    /// The document under `key`, if any event reached it.
    pub fn document(&self, key: &str) -> Option<&V::Document> {
        self.documents.get(key)
    }

    /// Events the view refused (they would become poison records), as `type id#seq (event):
    /// error`.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Asserts the document under `key` equals `expected` (compared as JSON) and that no event
    /// was refused.
    #[track_caller]
    pub fn then_document(&self, key: &str, expected: V::Document) -> &Self {
        if !self.failures.is_empty() {
            panic!(
                "view `{}`: events were refused:\n  {}",
                V::NAME,
                self.failures.join("\n  ")
            );
        }
        let e = as_json(std::slice::from_ref(&expected));
        let a = self
            .documents
            .get(key)
            .map(|d| as_json(std::slice::from_ref(d)))
            .unwrap_or_default();
        if e != a {
            panic!(
                "view `{}`: document `{key}` differs\n{}",
                V::NAME,
                side_by_side(&e, &a)
            );
        }
        self
    }

    /// Asserts applying the events refused one whose description contains `containing`.
    #[track_caller]
    pub fn then_refused(&self, containing: &str) -> &Self {
        if !self.failures.iter().any(|f| f.contains(containing)) {
            panic!(
                "view `{}`: no refused event contains {containing:?}; refused: {:?}",
                V::NAME,
                self.failures
            );
        }
        self
    }
}

fn tenant() -> TenantId {
    TenantId::new(TENANT).unwrap_or_else(|_| unreachable!("`test` is a valid tenant"))
}

fn as_json<T: Serialize>(values: &[T]) -> Vec<String> {
    values
        .iter()
        .map(|v| serde_json::to_string(v).unwrap_or_else(|e| format!("<does not serialise: {e}>")))
        .collect()
}

/// Two columns, `expected | actual`, one line per item; differing lines are marked `≠`.
fn side_by_side(expected: &[String], actual: &[String]) -> String {
    let width = expected
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max("expected".len());
    let mut out = format!("     {:<width$} | actual\n", "expected");
    for i in 0..expected.len().max(actual.len()) {
        let e = expected.get(i).map(String::as_str).unwrap_or("(none)");
        let a = actual.get(i).map(String::as_str).unwrap_or("(none)");
        let mark = if e == a { ' ' } else { '≠' };
        let _ = writeln!(out, "{mark} {i:>2} {e:<width$} | {a}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_marks_the_lines_that_differ() {
        let out = side_by_side(
            &["a".into(), "b".into()],
            &["a".into(), "c".into(), "d".into()],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "     expected | actual");
        assert_eq!(lines[1], "   0 a        | a");
        assert_eq!(lines[2], "≠  1 b        | c");
        assert_eq!(lines[3], "≠  2 (none)   | d");
    }
}
