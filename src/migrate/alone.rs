//! Whether a COPY or MOVE was alone on NEW: no other write of the account in flight and no read
//! of NEW for the mirror or a pass from before NEW got it until it was journaled, nor any read
//! since. NEW's copies then have the flags OLD's sources have (the mirror kept them in step,
//! entry by entry), and the mirror need not read them on NEW. One process only (SQLite).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::lease::holder;
use crate::lock::recover;

/// The account's writes to NEW and the mirror's and passes' reads of it, as far as whether a
/// write was alone is concerned.
#[derive(Debug, Default)]
pub(crate) struct Alone(Mutex<Counts>);

#[derive(Debug, Default, PartialEq)]
struct Counts {
    /// Writes and reads begun, ever.
    begun: u64,
    /// Writes and reads begun and not over.
    busy: u64,
    /// The number (`begun`) of the last one that began while none was busy.
    lone: u64,
    /// Reads of NEW begun, ever, and other events after which the links' flags may no longer
    /// be the journal's (an entry parked).
    reads: u64,
}

/// What a COPY or MOVE journaled alone carries: the process and its count of reads then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub process: String,
    pub reads: u64,
}

/// A read of NEW in progress (see [`Alone::reading`]).
pub(crate) struct Reading<'a>(&'a Alone);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.over();
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

    /// The mirror or a pass reads NEW until the value is dropped: what it writes to OLD or to
    /// the links may be newer than entries still in the journal.
    pub(crate) fn reading(&self) -> Reading<'_> {
        self.begin();
        self.counts().reads += 1;
        Reading(self)
    }

    /// The links' flags may no longer be the journal's (an entry was parked).
    pub(crate) fn unsure(&self) {
        self.counts().reads += 1;
    }

    /// For the write being journaled (still in flight): its stamp when it began with nothing
    /// else busy and nothing began since.
    pub(crate) fn stamp(&self) -> Option<Stamp> {
        let c = self.counts();
        (c.busy == 1 && c.lone == c.begun).then(|| Stamp {
            process: holder().to_string(),
            reads: c.reads,
        })
    }

    /// Whether `stamp` was given in this process and no read began since.
    pub(crate) fn still(&self, stamp: &Stamp) -> bool {
        stamp.process == holder() && stamp.reads == self.counts().reads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps: `b` a write begins, `o` one is over, `r` a read begins, `e` it ends, `s` the
    /// write being journaled asks for its stamp (its answer, then whether it still holds at the
    /// end).
    fn run(steps: &str) -> (bool, bool) {
        let alone = Alone::default();
        let mut reads = Vec::new();
        let mut stamp = None;
        for step in steps.chars() {
            match step {
                'b' => alone.begin(),
                'o' => alone.over(),
                'r' => reads.push(alone.reading()),
                'e' => drop(reads.pop()),
                'p' => alone.unsure(),
                's' => stamp = alone.stamp(),
                _ => unreachable!("step {step}"),
            }
        }
        let still = stamp.as_ref().is_some_and(|s| alone.still(s));
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
        let mut stamp = alone.stamp().expect("alone");
        assert!(alone.still(&stamp));
        stamp.process.push_str(" restarted");
        assert!(!alone.still(&stamp));
    }
}
