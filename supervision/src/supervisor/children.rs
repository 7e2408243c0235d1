//! A supervisor's children in start order, indexed by name and by actor id, so that starting,
//! stopping and finding a child cost O(log n) however many there are (one per entity can mean
//! 100 000): a plain list made every start of a new entity scan all the others.

use std::collections::{BTreeMap, HashMap};

use ractor::ActorId;

use super::Child;

/// Position of a child in start order (never reused).
pub(super) type Seq = u64;

/// The children, in start order, with their indexes.
#[derive(Default)]
pub(super) struct Children {
    next: Seq,
    order: BTreeMap<Seq, Child>,
    by_name: HashMap<String, Seq>,
    by_actor: HashMap<ActorId, Seq>,
}

impl Children {
    /// How many children there are.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// True when a child of this name exists.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Adds a child after the others; indexes its actor if it runs.
    pub(super) fn push(&mut self, child: Child) -> Seq {
        let seq = self.next;
        self.next += 1;
        self.by_name.insert(child.spec.name.clone(), seq);
        if let Some(cell) = &child.cell {
            self.by_actor.insert(cell.get_id(), seq);
        }
        self.order.insert(seq, child);
        seq
    }

    /// The child named `name`.
    pub(super) fn seq_of(&self, name: &str) -> Option<Seq> {
        self.by_name.get(name).copied()
    }

    /// Forgets `actor` (it went down) and says whose it was.
    pub(super) fn actor_down(&mut self, actor: &ActorId) -> Option<Seq> {
        self.by_actor.remove(actor)
    }

    /// Indexes the actor child `seq` runs now (after a start or restart).
    pub(super) fn started(&mut self, seq: Seq) {
        if let Some(cell) = self.order.get(&seq).and_then(|c| c.cell.as_ref()) {
            self.by_actor.insert(cell.get_id(), seq);
        }
    }

    /// Child `seq`, mutably.
    pub(super) fn get_mut(&mut self, seq: Seq) -> Option<&mut Child> {
        self.order.get_mut(&seq)
    }

    /// Removes child `seq` with its index entries.
    pub(super) fn remove(&mut self, seq: Seq) -> Option<Child> {
        let child = self.order.remove(&seq)?;
        self.by_name.remove(&child.spec.name);
        if let Some(cell) = &child.cell {
            self.by_actor.remove(&cell.get_id());
        }
        Some(child)
    }

    /// Every child's position, in start order.
    pub(super) fn seqs(&self) -> Vec<Seq> {
        self.order.keys().copied().collect()
    }

    /// The positions of `seq` and every child started after it, in start order.
    pub(super) fn seqs_from(&self, seq: Seq) -> Vec<Seq> {
        self.order.range(seq..).map(|(s, _)| *s).collect()
    }

    /// The children in start order.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = &Child> {
        self.order.values()
    }

    /// The children in start order, mutably.
    pub(super) fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Child> {
        self.order.values_mut()
    }
}
