//! The walkthrough of `docs/behaviours.md`, compiled and tested: the code between the markers
//! is exactly the guide's, its line count is the one the guide states, and its kit tests pass.

/// The guide's code, kept as written there (rustfmt would spread it over more lines).
#[rustfmt::skip]
mod walkthrough {
// walkthrough:start
use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection};
use cloudlysis_actors::projection::{Typed, TypedView};
use serde::{Deserialize, Serialize};

pub struct Ticket;

#[derive(Default)]
pub struct TicketState { open: bool, closed: bool }

#[derive(Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum TicketCommand { Open { title: String }, Assign { to: String }, Close }

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum TicketEvent { Opened { title: String }, Assigned { to: String }, Closed }

impl Aggregate for Ticket {
    const TYPE: &'static str = "ticket";
    const SCHEMA_VERSION: u32 = 1;
    type State = TicketState;
    type Command = TicketCommand;
    type Event = TicketEvent;

    fn handle(s: &TicketState, c: TicketCommand, _: &CommandContext) -> Result<Vec<TicketEvent>, Rejection> {
        match c {
            TicketCommand::Open { title } if !s.open && !s.closed => Ok(vec![TicketEvent::Opened { title }]),
            TicketCommand::Open { .. } => Err(Rejection::new("ticket already exists")),
            _ if !s.open => Err(Rejection::new("ticket is not open")),
            TicketCommand::Assign { to } => Ok(vec![TicketEvent::Assigned { to }]),
            TicketCommand::Close => Ok(vec![TicketEvent::Closed]),
        }
    }

    fn apply(s: &mut TicketState, e: &TicketEvent) {
        match e {
            TicketEvent::Opened { .. } => s.open = true,
            TicketEvent::Assigned { .. } => {}
            TicketEvent::Closed => (s.open, s.closed) = (false, true),
        }
    }
}

pub struct Tickets;

#[derive(Default, Serialize, Deserialize)]
pub struct TicketDoc { pub title: String, pub assignee: Option<String>, pub open: bool }

impl TypedView for Tickets {
    const NAME: &'static str = "tickets";
    const SCHEMA_VERSION: u32 = 1;
    type Document = TicketDoc;
    type Follows = Ticket;
    fn apply(d: &mut TicketDoc, e: Typed<'_, TicketEvent>) -> Result<(), String> {
        match e.event {
            TicketEvent::Opened { title } => (d.title, d.open) = (title, true),
            TicketEvent::Assigned { to } => d.assignee = Some(to),
            TicketEvent::Closed => d.open = false,
        }
        Ok(())
    }
}

pub fn app() -> cloudlysis::App {
    cloudlysis::App::new("helpdesk").aggregate::<Ticket>().typed_view::<Tickets>()
}
// walkthrough:end
}
use walkthrough::*;

// tests:start
use cloudlysis_actors::testkit;

#[test]
fn a_ticket_opens_once() {
    testkit::aggregate::<Ticket>()
        .given([])
        .when_json("Open", serde_json::json!({ "title": "printer" }))
        .then_events([TicketEvent::Opened {
            title: "printer".into(),
        }]);
    testkit::aggregate::<Ticket>()
        .given([TicketEvent::Opened {
            title: "printer".into(),
        }])
        .when(TicketCommand::Open {
            title: "again".into(),
        })
        .then_rejected("already exists");
}

#[test]
fn a_closed_ticket_takes_no_assignment() {
    testkit::aggregate::<Ticket>()
        .given([
            TicketEvent::Opened {
                title: "printer".into(),
            },
            TicketEvent::Closed,
        ])
        .when(TicketCommand::Assign { to: "ada".into() })
        .then_rejected("not open");
}

#[test]
fn the_view_shows_title_assignee_and_state() {
    let history = testkit::history::<Ticket>(
        "t-1",
        [
            TicketEvent::Opened {
                title: "printer".into(),
            },
            TicketEvent::Assigned { to: "ada".into() },
        ],
    );
    testkit::typed_view::<Tickets>()
        .given(history)
        .then_document(
            "t-1",
            TicketDoc {
                title: "printer".into(),
                assignee: Some("ada".into()),
                open: true,
            },
        );
}
// tests:end

/// The lines between `start` and `end` markers of `text`, without the markers.
fn block<'a>(text: &'a str, name: &str) -> &'a str {
    let start = format!("// {name}:start\n");
    let end = format!("// {name}:end");
    let from = text
        .find(&start)
        .map(|i| i + start.len())
        .expect("start marker");
    let to = text[from..]
        .find(&end)
        .map(|i| from + i)
        .expect("end marker");
    &text[from..to]
}

#[test]
fn the_guide_shows_exactly_this_code_and_counts_its_lines() {
    let guide = include_str!("../../../docs/behaviours.md");
    let this = include_str!("the_behaviours_guide_walkthrough_compiles_and_passes.rs");
    for name in ["walkthrough", "tests"] {
        let code = block(this, name);
        assert!(
            guide.contains(code),
            "docs/behaviours.md does not hold the `{name}` block of this file verbatim"
        );
    }
    let lines = block(this, "walkthrough")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        lines <= 60,
        "the walkthrough is {lines} lines; the guide promises at most 60"
    );
    assert!(
        guide.contains(&format!("{lines} non-blank lines")),
        "docs/behaviours.md must state the measured count: {lines} non-blank lines"
    );
    assert_eq!(app().validate(), Ok(()));
}
