use std::time::Duration;

use cloudlysis_runtime::workflow::{EffectOutcome, EffectResult, TIMER_EFFECT};

use super::*;
use crate::runner::workflow::Decision;

fn record() -> InstanceRecord {
    InstanceRecord::new("transfer", "acme", "t-1", 1, None, None, 1_000)
}

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("id{n}")
    }
}

fn result(command_id: &str, effect_type: &str, label: &str) -> EffectResult {
    EffectResult {
        schema_version: 1,
        command_id: command_id.into(),
        tenant_id: "acme".into(),
        effect_type: effect_type.into(),
        workflow: "transfer".into(),
        instance: "t-1".into(),
        label: label.into(),
        completed_at_ms: 2_000,
        attempts: 1,
        outcome: EffectOutcome::Ok {
            output: serde_json::Value::Null,
        },
        correlation_id: None,
        traceparent: None,
    }
}

fn start(r: &mut InstanceRecord, d: Decision<u32>) -> Result<(), WorkflowError> {
    r.step(d, ("started", serde_json::Value::Null), 1_000, ids())
}

#[test]
fn a_step_puts_its_commands_timers_and_events_in_the_outbox() {
    let mut r = record();
    let d = Decision::new(7u32)
        .issue("withdraw", "withdraw", serde_json::json!({"amount": 5}))
        .arm_after("timeout", Duration::from_secs(30));
    start(&mut r, d).unwrap();
    assert_eq!(r.step, 1);
    assert_eq!(r.state, serde_json::json!(7));
    let subjects: Vec<&str> = r.outbox.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "tenant.acme.effect._timer",
            "tenant.acme.effect.withdraw",
            "tenant.acme.workflow.transfer.t-1",
            "tenant.acme.workflow.transfer.t-1",
        ]
    );
    let kinds: Vec<&str> = r.outbox[2..]
        .iter()
        .map(|e| e.payload["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["started", "effect_issued"]);
    // Every entry's msg id is the id inside the message.
    assert_eq!(r.outbox[1].msg_id, r.outbox[1].payload["command_id"]);
    assert_eq!(r.outbox[2].msg_id, r.outbox[2].payload["event_id"]);
    assert_eq!(r.pending.len(), 1);
    let timer = &r.timers["timeout"];
    assert_eq!(timer.fire_at_ms, 31_000);
    assert_eq!(r.outbox[0].payload["payload"]["fire_at_ms"], 31_000);
}

#[test]
fn a_result_is_admitted_once() {
    let mut r = record();
    start(
        &mut r,
        Decision::new(0u32).issue("withdraw", "w", serde_json::Value::Null),
    )
    .unwrap();
    let id = r.pending.keys().next().unwrap().clone();
    let res = result(&id, "withdraw", "w");
    assert_eq!(r.admit_result(&res), Admission::Result);
    r.consume(Some(&res), None);
    assert_eq!(r.admit_result(&res), Admission::Duplicate);
    assert_eq!(
        r.admit_result(&result("unknown", "withdraw", "w")),
        Admission::Duplicate
    );
}

#[test]
fn a_timer_fires_once_and_never_after_it_was_cancelled_or_rearmed() {
    let mut r = record();
    start(
        &mut r,
        Decision::new(0u32).arm_after("t", Duration::from_secs(1)),
    )
    .unwrap();
    let first = r.timers["t"].timer_id.clone();
    let fired = result(&first, TIMER_EFFECT, "t");
    assert_eq!(r.admit_result(&fired), Admission::Timer("t".into()));
    // Re-armed under a new id: the old firing is stale.
    r.step(
        Decision::new(0u32).arm_after("t", Duration::from_secs(5)),
        ("x", serde_json::Value::Null),
        2_000,
        || "new-id".to_string(),
    )
    .unwrap();
    assert_eq!(r.admit_result(&fired), Admission::Stale);
    let second = result("new-id", TIMER_EFFECT, "t");
    assert_eq!(r.admit_result(&second), Admission::Timer("t".into()));
    r.consume(Some(&second), None);
    assert_eq!(r.admit_result(&second), Admission::Stale);
    // Cancelled by a later step: its firing is stale.
    r.step(
        Decision::new(0u32).arm_after("u", Duration::from_secs(5)),
        ("x", serde_json::Value::Null),
        3_000,
        || "u-id".to_string(),
    )
    .unwrap();
    r.step(
        Decision::new(0u32).cancel("u"),
        ("x", serde_json::Value::Null),
        4_000,
        ids(),
    )
    .unwrap();
    assert_eq!(
        r.admit_result(&result("u-id", TIMER_EFFECT, "u")),
        Admission::Stale
    );
    // Within one decision, cancels apply first: arming and cancelling a name re-arms it.
    r.step(
        Decision::new(0u32)
            .cancel("v")
            .arm_after("v", Duration::from_secs(1)),
        ("x", serde_json::Value::Null),
        5_000,
        || "v-id".to_string(),
    )
    .unwrap();
    assert_eq!(r.timers["v"].timer_id, "v-id");
}

#[test]
fn an_ended_instance_takes_no_more_inputs() {
    let mut r = record();
    start(
        &mut r,
        Decision::new(0u32)
            .issue("withdraw", "w", serde_json::Value::Null)
            .arm_after("t", Duration::from_secs(1)),
    )
    .unwrap();
    let pending = r.pending.keys().next().unwrap().clone();
    r.step(
        Decision::new(1u32).fail("gave up"),
        ("x", serde_json::Value::Null),
        2_000,
        ids(),
    )
    .unwrap();
    assert_eq!(r.status, InstanceStatus::Failed);
    assert_eq!(r.failure.as_deref(), Some("gave up"));
    assert!(r.timers.is_empty());
    assert_eq!(
        r.admit_result(&result(&pending, "withdraw", "w")),
        Admission::Stale
    );
    assert_eq!(r.admit_event(9, 0), Admission::Stale);
    let last = r.outbox.last().unwrap();
    assert_eq!(last.payload["event_type"], "failed");
    assert_eq!(last.payload["data"]["reason"], "gave up");
}

#[test]
fn invalid_decisions_are_refused_and_change_nothing_visible() {
    let mut r = record();
    let reserved = start(
        &mut r,
        Decision::new(0u32).issue("_timer", "x", serde_json::Value::Null),
    );
    assert!(reserved.unwrap_err().0.contains("reserved"));
    let mut r = record();
    let bad_type = start(
        &mut r,
        Decision::new(0u32).issue("a.b", "x", serde_json::Value::Null),
    );
    assert!(bad_type.is_err());
    let mut r = record();
    let far = start(
        &mut r,
        Decision::new(0u32).arm_after("t", Duration::from_millis(MAX_TIMER_AHEAD_MS + 1)),
    );
    assert!(far.unwrap_err().0.contains("at most"));
    let mut r = record();
    let mut d = Decision::new(0u32);
    for i in 0..=MAX_ISSUED_PER_STEP {
        d = d.issue("e", &i.to_string(), serde_json::Value::Null);
    }
    assert!(start(&mut r, d).is_err());
}

#[test]
fn applied_event_positions_are_bounded_and_recognised() {
    let mut r = record();
    for seq in 0..(MAX_APPLIED_EVENTS as u64 + 10) {
        r.consume(None, Some((seq, 0)));
    }
    assert_eq!(r.applied_events.len(), MAX_APPLIED_EVENTS);
    assert_eq!(
        r.admit_event(MAX_APPLIED_EVENTS as u64 + 9, 0),
        Admission::Duplicate
    );
    assert_eq!(
        r.admit_event(MAX_APPLIED_EVENTS as u64 + 9, 1),
        Admission::Event
    );
}

#[test]
fn records_round_trip_and_ignore_unknown_fields() {
    let mut r = record();
    start(
        &mut r,
        Decision::new(3u32).issue("e", "", serde_json::Value::Null),
    )
    .unwrap();
    let mut v = serde_json::to_value(&r).unwrap();
    v["from_the_future"] = serde_json::json!(true);
    let back: InstanceRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
    // An empty label defaults to the effect type.
    assert_eq!(r.pending.values().next().unwrap().label, "e");
}
