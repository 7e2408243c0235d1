use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Records what it handles; optionally waits on a gate, sleeps, fails or panics.
struct Probe;

enum Msg {
    Work { id: u64, delay_us: u64 },
    Gate(Arc<tokio::sync::Notify>),
    Fail,
    Panic,
    Get(RpcReplyPort<usize>),
    Never(RpcReplyPort<()>),
}

struct ProbeState {
    seen: Arc<Mutex<HashSet<u64>>>,
    dupes: Arc<AtomicUsize>,
    max_depth: Arc<AtomicUsize>,
}

impl BoundedActor for Probe {
    type Msg = Msg;
    type State = ProbeState;
    type Arguments = ProbeState;
    const KIND: &'static str = "probe";

    async fn pre_start(
        &self,
        _: BoundedRef<Msg>,
        s: ProbeState,
    ) -> Result<ProbeState, ActorProcessingErr> {
        Ok(s)
    }

    async fn handle(
        &self,
        me: &BoundedRef<Msg>,
        msg: Msg,
        s: &mut ProbeState,
    ) -> Result<(), ActorProcessingErr> {
        s.max_depth.fetch_max(me.depth(), Ordering::SeqCst);
        match msg {
            Msg::Work { id, delay_us } => {
                if delay_us > 0 {
                    tokio::time::sleep(Duration::from_micros(delay_us)).await;
                }
                if !s.seen.lock().unwrap().insert(id) {
                    s.dupes.fetch_add(1, Ordering::SeqCst);
                }
            }
            Msg::Gate(n) => n.notified().await,
            Msg::Fail => return Err("asked to fail".into()),
            Msg::Panic => panic!("asked to panic"),
            Msg::Get(reply) => {
                let _ = reply.send(s.seen.lock().unwrap().len());
            }
            Msg::Never(reply) => drop(reply),
        }
        Ok(())
    }
}

type Seen = Arc<Mutex<HashSet<u64>>>;

fn state() -> (ProbeState, Seen, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let dupes = Arc::new(AtomicUsize::new(0));
    let max_depth = Arc::new(AtomicUsize::new(0));
    (
        ProbeState {
            seen: seen.clone(),
            dupes: dupes.clone(),
            max_depth: max_depth.clone(),
        },
        seen,
        dupes,
        max_depth,
    )
}

async fn probe(
    capacity: usize,
) -> (
    BoundedRef<Msg>,
    ActorRef<Envelope<Msg>>,
    Arc<Mutex<HashSet<u64>>>,
) {
    let (s, seen, _, _) = state();
    let r = BoundedRef::new(Probe::KIND, capacity);
    let (actor, _) = spawn(Probe, s, &r, None).await.unwrap();
    (r, actor, seen)
}

#[tokio::test]
async fn a_slot_is_held_while_the_handler_runs_not_released_at_dequeue() {
    let (r, _a, _) = probe(2).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    r.send(Msg::Gate(gate.clone())).await.unwrap();
    r.send(Msg::Work { id: 1, delay_us: 0 }).await.unwrap();
    // The gate message has been dequeued and is being handled; its slot is still taken.
    assert_eq!(r.depth(), 2);
    let refused = r.try_send(Msg::Work { id: 2, delay_us: 0 }).unwrap_err();
    assert!(refused.is_full());
    assert!(
        matches!(refused.into_inner(), Msg::Work { id: 2, .. }),
        "message handed back"
    );
    gate.notify_one();
    let n = r.ask(Msg::Get, Duration::from_secs(5)).await.unwrap();
    assert_eq!(n, 1, "the refused message was never enqueued");
}

#[tokio::test]
async fn send_waits_for_room_then_delivers() {
    let (r, _a, _) = probe(1).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    r.send(Msg::Gate(gate.clone())).await.unwrap();
    let sender = {
        let r = r.clone();
        tokio::spawn(async move { r.send(Msg::Work { id: 7, delay_us: 0 }).await.is_ok() })
    };
    tokio::task::yield_now().await;
    assert!(
        !sender.is_finished(),
        "send must wait while the mailbox is full"
    );
    gate.notify_one();
    assert!(sender.await.unwrap());
    assert_eq!(r.ask(Msg::Get, Duration::from_secs(5)).await.unwrap(), 1);
}

#[tokio::test]
async fn a_failing_handler_frees_its_slot_and_fails_the_actor() {
    let (r, actor, _) = probe(1).await;
    r.send(Msg::Fail).await.unwrap();
    assert!(wait_until(|| r.depth() == 0).await, "slot freed");
    assert!(wait_until(|| actor.get_status() == ractor::ActorStatus::Stopped).await);
    assert!(matches!(
        r.try_send(Msg::Fail),
        Err(TrySendError::Closed(Msg::Fail))
    ));
}

#[tokio::test]
async fn a_panicking_handler_frees_its_slot_and_does_not_abort() {
    let (r, actor, _) = probe(1).await;
    r.send(Msg::Panic).await.unwrap();
    assert!(
        wait_until(|| r.depth() == 0).await,
        "slot freed after panic"
    );
    assert!(wait_until(|| actor.get_status() == ractor::ActorStatus::Stopped).await);
}

#[tokio::test]
async fn queued_messages_free_their_slots_when_the_actor_stops() {
    let (r, actor, _) = probe(4).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    r.send(Msg::Gate(gate.clone())).await.unwrap();
    for id in 0..3 {
        r.send(Msg::Work { id, delay_us: 0 }).await.unwrap();
    }
    assert_eq!(r.depth(), 4);
    actor.kill();
    assert!(wait_until(|| r.depth() == 0).await, "all four slots freed");
}

#[tokio::test]
async fn sending_to_a_stopped_actor_is_a_typed_error_with_the_message() {
    let (r, actor, _) = probe(2).await;
    actor
        .stop_and_wait(None, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    match r.send(Msg::Work { id: 9, delay_us: 0 }).await {
        Err(SendError::Closed(Msg::Work { id: 9, .. })) => {}
        other => panic!("expected Closed(msg), got {:?}", other.map(|_| ())),
    }
    assert_eq!(r.depth(), 0);
    let err = r.ask(Msg::Get, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err, AskError::Closed { kind: "probe" });
}

#[tokio::test]
async fn a_detached_ref_refuses_messages() {
    let r: BoundedRef<Msg> = BoundedRef::new("detached", 1);
    assert!(matches!(
        r.try_send(Msg::Fail),
        Err(TrySendError::Closed(_))
    ));
    assert_eq!(r.depth(), 0);
}

#[tokio::test(start_paused = true)]
async fn ask_times_out_when_no_reply_comes() {
    let (r, _a, _) = probe(1).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    r.send(Msg::Gate(gate)).await.unwrap();
    let err = r
        .ask(Msg::Get, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, AskError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn ask_reports_a_dropped_reply() {
    let (r, _a, _) = probe(1).await;
    let err = r.ask(Msg::Never, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err, AskError::NoReply { kind: "probe" });
}

#[tokio::test]
async fn a_restarted_actor_can_be_reattached_to_the_same_ref() {
    let (r, actor, _) = probe(2).await;
    actor
        .stop_and_wait(None, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let (s, _, _, _) = state();
    let (_again, _) = spawn(Probe, s, &r, None).await.unwrap();
    r.send(Msg::Work { id: 1, delay_us: 0 }).await.unwrap();
    assert_eq!(r.ask(Msg::Get, Duration::from_secs(5)).await.unwrap(), 1);
}

async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Many concurrent senders, random handler delays: in flight never exceeds the capacity and
    /// every admitted message is handled exactly once.
    #[test]
    fn in_flight_never_exceeds_capacity_and_each_message_is_handled_once(
        capacity in 1usize..8,
        senders in 1usize..12,
        per_sender in 1usize..40,
        delays in proptest::collection::vec(0u64..300, 1..16),
        shed in proptest::bool::ANY,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let (s, seen, dupes, max_depth) = state();
            let r = BoundedRef::new(Probe::KIND, capacity);
            let (_actor, _) = spawn(Probe, s, &r, None).await.unwrap();
            let observed_max = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for sender in 0..senders {
                let (r, delays, observed_max) = (r.clone(), delays.clone(), observed_max.clone());
                tasks.push(tokio::spawn(async move {
                    let mut admitted = Vec::new();
                    for i in 0..per_sender {
                        let id = (sender * 10_000 + i) as u64;
                        let msg = Msg::Work { id, delay_us: delays[i % delays.len()] };
                        // Half the runs shed load with try_send, half apply backpressure.
                        let ok = if shed { r.try_send(msg).is_ok() } else { r.send(msg).await.is_ok() };
                        if ok { admitted.push(id); }
                        observed_max.fetch_max(r.depth(), Ordering::SeqCst);
                    }
                    admitted
                }));
            }
            let mut admitted = HashSet::new();
            for t in tasks {
                admitted.extend(t.await.unwrap());
            }
            // Drain: an ask goes through the same FIFO, after every admitted message.
            let _ = r.ask(Msg::Get, Duration::from_secs(30)).await.unwrap();
            assert!(observed_max.load(Ordering::SeqCst) <= capacity);
            assert!(max_depth.load(Ordering::SeqCst) <= capacity);
            assert_eq!(dupes.load(Ordering::SeqCst), 0);
            assert_eq!(*seen.lock().unwrap(), admitted);
            if !shed {
                assert_eq!(admitted.len(), senders * per_sender, "backpressure admits everything");
            }
            // The ask's own slot frees when its handler returns, just after the reply.
            assert!(wait_until(|| r.depth() == 0).await);
        });
    }

    /// A full mailbox refuses with `Full`, hands the message back and enqueues nothing.
    #[test]
    fn try_send_on_a_full_mailbox_returns_full_and_enqueues_nothing(capacity in 1usize..10, extra in 1usize..10) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (r, _a, seen) = probe(capacity).await;
            let gate = Arc::new(tokio::sync::Notify::new());
            r.send(Msg::Gate(gate.clone())).await.unwrap();
            for id in 1..capacity as u64 {
                r.send(Msg::Work { id, delay_us: 0 }).await.unwrap();
            }
            for k in 0..extra as u64 {
                match r.try_send(Msg::Work { id: 1000 + k, delay_us: 0 }) {
                    Err(TrySendError::Full(Msg::Work { id, .. })) => assert_eq!(id, 1000 + k),
                    _ => panic!("expected Full with the message"),
                }
            }
            gate.notify_one();
            let n = r.ask(Msg::Get, Duration::from_secs(10)).await.unwrap();
            assert_eq!(n, capacity - 1);
            assert!(seen.lock().unwrap().iter().all(|id| *id < 1000));
        });
    }

    /// A handler that panics frees its slot; the next actor on the same ref gets every slot.
    #[test]
    fn a_handler_that_panics_frees_its_slot(capacity in 1usize..6) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (r, _a, _) = probe(capacity).await;
            r.send(Msg::Panic).await.unwrap();
            assert!(wait_until(|| r.depth() == 0).await);
            let (s, _, _, _) = state();
            let (_b, _) = spawn(Probe, s, &r, None).await.unwrap();
            for id in 0..capacity as u64 {
                r.try_send(Msg::Work { id, delay_us: 0 }).map_err(|_| "slot leaked").unwrap();
            }
        });
    }
}

#[tokio::test]
async fn siblings_share_one_capacity_across_their_actors() {
    let (r, _a, seen_a) = probe(2).await;
    let sibling = r.sibling();
    let (s, seen_b, _, _) = state();
    let (_b, _) = spawn(Probe, s, &sibling, None).await.unwrap();
    assert!(r.shares_slots(&sibling));

    let (gate_a, gate_b) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    r.send(Msg::Gate(gate_a.clone())).await.unwrap();
    // A reservation taken on one ref can be spent on its sibling's actor.
    let slot = r.try_reserve().unwrap();
    assert!(slot.send_to(&sibling, Msg::Gate(gate_b.clone())).is_ok());
    assert_eq!((r.depth(), sibling.depth()), (2, 2), "one budget for both");
    assert!(
        r.try_send(Msg::Work { id: 1, delay_us: 0 })
            .unwrap_err()
            .is_full()
    );
    assert!(
        sibling
            .try_send(Msg::Work { id: 2, delay_us: 0 })
            .unwrap_err()
            .is_full()
    );

    gate_a.notify_one();
    gate_b.notify_one();
    r.send(Msg::Work { id: 3, delay_us: 0 }).await.unwrap();
    sibling
        .send(Msg::Work { id: 4, delay_us: 0 })
        .await
        .unwrap();
    assert!(wait_until(|| r.depth() == 0).await);
    assert!(seen_a.lock().unwrap().contains(&3));
    assert!(seen_b.lock().unwrap().contains(&4));
}

#[tokio::test]
async fn a_reservation_cannot_be_spent_on_an_unrelated_mailbox() {
    let (r, _a, _) = probe(1).await;
    let (other, _b, seen) = probe(1).await;
    let slot = r.try_reserve().unwrap();
    match slot.send_to(&other, Msg::Work { id: 9, delay_us: 0 }) {
        Err(SendError::Closed(Msg::Work { id: 9, .. })) => {}
        _ => panic!("expected the message back"),
    }
    assert_eq!(r.depth(), 0, "the slot was released");
    assert!(seen.lock().unwrap().is_empty());
}

/// A slot reserved for a message not sent yet (a consumer's prefetch) takes room but is not a
/// message: the depth — what `/admin/supervision` and `cloudlysis_actor_mailbox_depth` report —
/// counts only messages queued or being processed. (Found by using the platform: an idle
/// node's handlers, whose consumers reserve every free slot before each pull, showed 64/64.)
#[tokio::test]
async fn a_reserved_slot_takes_room_but_is_not_counted_as_a_message() {
    let (r, _a, _) = probe(2).await;
    let first = r.try_reserve().expect("a free slot");
    let second = r.try_reserve().expect("a second free slot");
    assert_eq!(r.depth(), 0, "nothing queued");
    assert_eq!(r.free(), 0, "but no room either");
    assert!(
        r.try_send(Msg::Work { id: 1, delay_us: 0 })
            .unwrap_err()
            .is_full()
    );
    drop(second);
    assert_eq!(
        (r.depth(), r.free()),
        (0, 1),
        "an unused reservation frees its slot"
    );
    let gate = Arc::new(tokio::sync::Notify::new());
    assert!(first.send(Msg::Gate(gate.clone())).is_ok());
    assert_eq!(r.depth(), 1, "a message sent through a reservation counts");
    gate.notify_one();
    assert!(wait_until(|| r.depth() == 0 && r.free() == 2).await);
}
