//! Whether a COPY or MOVE was alone on NEW: no other write of the account and no read of NEW
//! in flight from before NEW got it until it was journaled, and since then no read of its
//! source folder for the mirror, no pass that changed something, no parked entry, no RENAME.
//! NEW's copies then have the flags OLD's sources have (the mirror kept them in step, entry by
//! entry), and the mirror need not read them on NEW. One process only (SQLite).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::lease::holder;
use crate::lock::recover;

/// The account's writes to NEW and the mirror's and passes' reads of it, as far as whether a
/// write was alone is concerned.
#[derive(Debug, Default)]
pub(crate) struct Alone(Mutex<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Writes and reads begun, ever.
    begun: u64,
    /// Writes and reads begun and not over.
    busy: u64,
    /// The number (`begun`) of the last one that began while none was busy.
    lone: u64,
    /// Events after which OLD's messages of any folder may no longer be as the journal left
    /// them: a pass that changed something, a reconcile, an entry parked, a folder renamed or
    /// deleted (the names the counts below go by).
    unsure: u64,
    /// The mirror's reads of NEW for the messages of each folder (as its entries name it): it
    /// writes on OLD what it read, which may be newer than entries still in the journal.
    reads: HashMap<String, u64>,
}

impl Counts {
    fn reads_of(&self, folder: &str) -> u64 {
        self.reads.get(folder).copied().unwrap_or(0)
    }
}

/// What a COPY or MOVE journaled alone carries: the process, and its counts then of the events
/// that make OLD's messages unsure and of the reads of the source folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub process: String,
    pub unsure: u64,
    pub reads: u64,
}

/// A read of NEW in progress (see [`Alone::reading`] and [`Alone::passing`]).
pub(crate) struct Reading<'a> {
    alone: &'a Alone,
    /// Counted as unsure when it ends.
    unsure: bool,
}

impl Reading<'_> {
    /// The pass changed no flags and linked nothing.
    pub(crate) fn changed_nothing(&mut self) {
        self.unsure = false;
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if self.unsure {
            self.alone.unsure();
        }
        self.alone.over();
    }
}

impl Alone {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        recover(&self.0, "the account's writes and reads")
    }

    /// A write goes to NEW; [`Alone::over`] ends it.
    pub(crate) fn begin(&self) {
        let mut c = self.counts();
        c.begun += 1;
        if c.busy == 0 {
            c.lone = c.begun;
        }
        c.busy += 1;
    }

    /// A write of [`Alone::begin`] is over (journaled, refused or lost).
    pub(crate) fn over(&self) {
        let mut c = self.counts();
        c.busy = c.busy.saturating_sub(1);
    }

    /// The mirror reads NEW for messages of `folder` until the value is dropped.
    pub(crate) fn reading(&self, folder: &str) -> Reading<'_> {
        self.begin();
        *self.counts().reads.entry(folder.to_string()).or_default() += 1;
        Reading {
            alone: self,
            unsure: false,
        }
    }

    /// A pass (or a reconcile) reads NEW until the value is dropped, and makes every folder
    /// unsure then unless it [changed nothing](Reading::changed_nothing).
    pub(crate) fn passing(&self) -> Reading<'_> {
        self.begin();
        Reading {
            alone: self,
            unsure: true,
        }
    }

    /// OLD's messages of any folder may no longer be as the journal left them.
    pub(crate) fn unsure(&self) {
        self.counts().unsure += 1;
    }

    /// For the write being journaled (still in flight), a COPY or MOVE out of `from`: its stamp
    /// when it began with nothing else busy and nothing began since.
    pub(crate) fn stamp(&self, from: &str) -> Option<Stamp> {
        let c = self.counts();
        (c.busy == 1 && c.lone == c.begun).then(|| Stamp {
            process: holder().to_string(),
            unsure: c.unsure,
            reads: c.reads_of(from),
        })
    }

    /// Whether `stamp`, of a COPY or MOVE out of `from`, was given in this process and nothing
    /// happened since that makes OLD's messages of `from` unsure.
    pub(crate) fn still(&self, stamp: &Stamp, from: &str) -> bool {
        let c = self.counts();
        stamp.process == holder() && stamp.unsure == c.unsure && stamp.reads == c.reads_of(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps: `b` a write begins, `o` one is over, `r` a read of the COPY's source folder
    /// begins, `x` one of another folder, `a` a pass begins, `e` the last read or pass ends,
    /// `n` the last pass ends having changed nothing, `p` an entry is parked, `s` the COPY
    /// being journaled asks for its stamp (its answer, then whether it still holds at the end).
    fn run(steps: &str) -> (bool, bool) {
        let alone = Alone::default();
        let mut reads = Vec::new();
        let mut stamp = None;
        for step in steps.chars() {
            match step {
                'b' => alone.begin(),
                'o' => alone.over(),
                'r' => reads.push(alone.reading("A")),
                'x' => reads.push(alone.reading("X")),
                'a' => reads.push(alone.passing()),
                'e' => drop(reads.pop()),
                'n' => reads.pop().iter_mut().for_each(Reading::changed_nothing),
                'p' => alone.unsure(),
                's' => stamp = alone.stamp("A"),
                _ => unreachable!("step {step}"),
            }
        }
        let still = stamp.as_ref().is_some_and(|s| alone.still(s, "A"));
        (stamp.is_some(), still)
    }

    #[test]
    fn a_write_is_alone_when_nothing_else_overlaps_it() {
        let cases = [
            // (steps, stamped, still at the end)
            ("bs", true, true),
            ("bobs", true, true),     // one before it, over first
            ("rebs", true, true),     // a read over before it began
            ("bsbo", true, true),     // a write after it was journaled
            ("bbos", false, false),   // one began before it and was still busy
            ("bobbos", false, false), // it began while another was busy
            ("bbo s", false, false),  // one began after it, over before its answer
            ("rbes", false, false),   // a read in progress when it began
            ("bres", false, false),   // a read began while it was in flight
            ("bsre", true, false),    // a read after it was journaled
            ("bsp", true, false),     // an entry parked since
            ("bsobs", true, true),    // the next write alone too
            ("bsae", true, false),    // a pass that changed something, after it
            ("bsan", true, true),     // a pass that changed nothing, after it
            ("bas", false, false),    // a pass began while it was in flight
            ("anbs", true, true),     // a pass over before it began
            ("bsxe", true, true),     // a read of another folder after it
            ("bxes", false, false),   // a read of another folder while it was in flight
        ];
        for (steps, stamped, still) in cases {
            let steps = steps.replace(' ', "");
            assert_eq!(run(&steps), (stamped, still), "{steps}");
        }
    }

    #[test]
    fn a_stamp_holds_only_in_its_process() {
        let alone = Alone::default();
        alone.begin();
        let mut stamp = alone.stamp("A").expect("alone");
        assert!(alone.still(&stamp, "A"));
        stamp.process.push_str(" restarted");
        assert!(!alone.still(&stamp, "A"));
    }
}
