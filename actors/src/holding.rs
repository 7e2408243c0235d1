//! How long a message has been held through an outage of its store.
//!
//! A handler or a view lane whose store does not answer keeps its deliveries and tries again
//! for as long as it takes ([`run_one`](crate::handler::run_one), the views'
//! [`outage`](crate::projection::outage)): nothing is failed for an outage, so nothing ends the
//! wait either. What an operator needs to see is how long it has lasted. A [`Held`] registers
//! one held message under its gauge series (`cloudlysis_handler_oldest_held_seconds{handler}`,
//! `cloudlysis_view_store_oldest_held_seconds{view}`); the gauge is the age of the series'
//! oldest held message, set at every try (tries are at most 5 s apart plus the store's own
//! timeout) and when a message is let go, and 0 when nothing is held. (`NodeAdmin` computes the
//! age when asked.) A message is one hold however many of its steps wait: [`run_one`] handles
//! each message inside [`one_message`], and a step inside it that holds ([`tried`]) — an
//! effect's ledger read, then, after the effect ran, its outcome write — extends the message's
//! hold rather than starting a second one. The registry holds only what is held now: at most
//! what the handlers' mailboxes and the lanes bound.
//!
//! [`run_one`]: crate::handler::run_one

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Instant;

/// A gauge series: its name, and its one label's name and value.
pub(crate) type Series = (&'static str, &'static str, &'static str);

/// The messages of one series held now: each one's id and when its hold began.
type Holds = Vec<(u64, Instant)>;

tokio::task_local! {
    /// The hold of the message being handled in this task (see [`one_message`]).
    static MESSAGE: RefCell<Option<Held>>;
}

/// Runs `handling` as the handling of one message: every step inside it that is held through an
/// outage ([`tried`]) counts towards one hold, kept until [`let_go`] or the end of `handling`.
pub(crate) async fn one_message<F: Future>(handling: F) -> F::Output {
    MESSAGE.scope(RefCell::new(None), handling).await
}

/// Marks one more failed try under `series`: of the message being handled, inside
/// [`one_message`] (its one hold); otherwise of the hold in `own` (see [`Held::tried`]).
pub(crate) fn tried(own: &mut Option<Held>, series: Series) {
    let shared = MESSAGE.try_with(|message| Held::tried(&mut message.borrow_mut(), series));
    if shared.is_err() {
        Held::tried(own, series);
    }
}

/// Ends the hold of the message being handled (inside [`one_message`]): it is let go.
pub(crate) fn let_go() {
    let released = MESSAGE.try_with(|message| message.borrow_mut().take());
    drop(released);
}

/// The messages held now, by series.
static HELD: LazyLock<Mutex<HashMap<Series, Holds>>> = LazyLock::new(Default::default);

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One message held through an outage (see the module docs): created at the first failed try,
/// [`tick`](Self::tick)ed at every further one, dropped when the message is let go.
pub(crate) struct Held {
    series: Series,
    id: u64,
}

impl Held {
    /// Starts holding a message under `series` (gauge name, label name, label value).
    pub(crate) fn start(series: Series) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        held.entry(series).or_default().push((id, Instant::now()));
        publish(series, held.get(&series));
        Self { series, id }
    }

    /// Marks one more failed try of a message: starts its hold in `slot` (under `series`) at
    /// the first, and sets the gauge at every one.
    pub(crate) fn tried(slot: &mut Option<Held>, series: Series) {
        slot.get_or_insert_with(|| Self::start(series)).tick();
    }

    /// Sets the series' gauge to the age of its oldest held message.
    pub(crate) fn tick(&self) {
        let held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        publish(self.series, held.get(&self.series));
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = held.get_mut(&self.series) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                held.remove(&self.series);
            }
        }
        publish(self.series, held.get(&self.series));
    }
}

/// What is held now under series labelled `label` (`"view"`, `"handler"`), by label value:
/// how many messages, and the oldest one's age in seconds. Sorted by label value.
pub(crate) fn held_now(label: &str) -> Vec<(&'static str, usize, f64)> {
    let held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    let mut now: Vec<(&'static str, usize, f64)> = held
        .iter()
        .filter(|((_, key, _), list)| *key == label && !list.is_empty())
        .map(|((_, _, value), list)| {
            let oldest = list.iter().map(|(_, since)| *since).min();
            (
                *value,
                list.len(),
                oldest.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            )
        })
        .collect();
    now.sort_by(|a, b| a.0.cmp(b.0));
    now
}

/// Writes the gauge of `series` from what it holds (`None`: nothing, 0).
fn publish(series: Series, list: Option<&Holds>) {
    let (name, label, value) = series;
    let oldest = list
        .and_then(|l| l.iter().map(|(_, since)| *since).min())
        .map_or(0.0, |since| since.elapsed().as_secs_f64());
    metrics::gauge!(name, label => value).set(oldest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(name: &str) -> usize {
        held_now("handler")
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or(0, |(_, messages, _)| *messages)
    }

    #[tokio::test]
    async fn a_message_held_at_two_steps_is_one_hold_until_it_is_let_go() {
        let series = ("test_oldest_held_seconds", "handler", "holding-one-message");
        one_message(async {
            let mut outer = None;
            tried(&mut outer, series);
            // A later step of the same message is held too (its own slot, as a handler's
            // inner loop has).
            let mut inner = None;
            tried(&mut inner, series);
            tried(&mut inner, series);
            assert!(
                outer.is_none() && inner.is_none(),
                "the message's hold is used"
            );
            assert_eq!(count("holding-one-message"), 1, "one message, one hold");
            let_go();
            assert_eq!(count("holding-one-message"), 0, "let go");
        })
        .await;
        // Outside a message's handling, each slot is its own hold.
        let mut own = None;
        tried(&mut own, series);
        assert_eq!(count("holding-one-message"), 1);
        drop(own);
        assert_eq!(count("holding-one-message"), 0);
    }

    fn oldest(series: Series) -> Option<Instant> {
        HELD.lock()
            .unwrap()
            .get(&series)
            .and_then(|l| l.iter().map(|(_, s)| *s).min())
    }

    #[test]
    fn the_oldest_hold_is_what_remains_after_younger_ones_end_and_nothing_after_all() {
        let series = ("test_oldest_held_seconds", "handler", "holding-unit-test");
        let first = Held::start(series);
        let since = oldest(series).expect("one held");
        let second = Held::start(series);
        assert_eq!(oldest(series), Some(since), "the first is the oldest");
        drop(second);
        assert_eq!(oldest(series), Some(since));
        first.tick();
        let now = held_now("handler");
        let mine: Vec<_> = now
            .iter()
            .filter(|(name, _, _)| *name == "holding-unit-test")
            .collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].1, 1, "one message held");
        drop(first);
        assert_eq!(oldest(series), None, "nothing held, no entry kept");
        assert!(
            !held_now("handler")
                .iter()
                .any(|(name, _, _)| *name == "holding-unit-test")
        );
    }
}
