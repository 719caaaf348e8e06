//! The numbers a client sees in a folder that keeps client caches: for each NEW UID a virtual
//! UID (OLD's UID for a message copied from OLD, a fresh one above every OLD UID for a message
//! that appeared on NEW later), OLD's UIDVALIDITY, and NEW's MODSEQ shifted above OLD's. The map
//! is strictly increasing, so sequence numbers stay NEW's and a UID set maps to ranges. Pure data.

/// A stretch of `len` NEW UIDs from `new` shown as the virtual UIDs from `virt`, one for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub new: u32,
    pub virt: u32,
    pub len: u32,
}

/// What a folder shows its clients, decided once and for good (clients cache whichever it is):
/// OLD's numbers through a map, or NEW's own, when it cannot keep client caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    Old(UidMap),
    New,
}

/// Why a [`UidMap`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("UID 0 or an empty run at NEW UID {0}")]
    Empty(u32),
    #[error("the map does not go up at NEW UID {0} (copies not in OLD's order)")]
    NotAscending(u32),
}

/// Which way a number is translated: what the client sent, towards NEW, or what NEW answered,
/// towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToNew,
    ToVirtual,
}

/// The map of one folder. Every NEW UID from `tail.new` on is in the open-ended last run, so
/// messages NEW receives later are mapped too; below it, NEW UIDs outside the runs have no
/// message (the map is only built when that holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidMap {
    uidvalidity: u32,
    new_uidvalidity: u32,
    modseq_offset: u64,
    /// Ascending in both coordinates; the last one is the tail, reaching `u32::MAX` on the
    /// side that ends first.
    runs: Vec<Run>,
}

impl Run {
    fn from(&self, dir: Dir) -> u32 {
        match dir {
            Dir::ToNew => self.virt,
            Dir::ToVirtual => self.new,
        }
    }

    fn to(&self, dir: Dir) -> u32 {
        match dir {
            Dir::ToNew => self.new,
            Dir::ToVirtual => self.virt,
        }
    }

    /// The last number of the run on the `from` side of `dir`.
    fn end(&self, dir: Dir) -> u32 {
        self.from(dir) + (self.len - 1)
    }
}

impl UidMap {
    /// A map showing `uidvalidity` for NEW's `new_uidvalidity`, NEW's MODSEQ plus
    /// `modseq_offset`, `runs` below NEW UID `tail_new`, and from there NEW UIDs counted on from
    /// virtual UID `tail_virt`.
    pub fn new(
        uidvalidity: u32,
        new_uidvalidity: u32,
        modseq_offset: u64,
        runs: &[Run],
        (tail_new, tail_virt): (u32, u32),
    ) -> Result<UidMap, MapError> {
        if tail_new == 0 || tail_virt == 0 {
            return Err(MapError::Empty(tail_new));
        }
        let tail = Run {
            new: tail_new,
            virt: tail_virt,
            len: u32::MAX - tail_new.max(tail_virt) + 1,
        };
        let mut all = Vec::with_capacity(runs.len() + 1);
        let mut next = (1u32, 1u32);
        for run in runs.iter().chain([&tail]) {
            if run.len == 0 || run.new == 0 || run.virt == 0 {
                return Err(MapError::Empty(run.new));
            }
            let fits = run.new.checked_add(run.len - 1).is_some()
                && run.virt.checked_add(run.len - 1).is_some();
            if run.new < next.0 || run.virt < next.1 || !fits {
                return Err(MapError::NotAscending(run.new));
            }
            // Both ends fit, checked above; the tail may end at u32::MAX.
            next = (
                run.new.saturating_add(run.len),
                run.virt.saturating_add(run.len),
            );
            all.push(*run);
        }
        Ok(UidMap {
            uidvalidity,
            new_uidvalidity,
            modseq_offset,
            runs: all,
        })
    }

    /// The UIDVALIDITY the client is shown.
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }

    /// NEW's UIDVALIDITY the map was built for.
    pub fn new_uidvalidity(&self) -> u32 {
        self.new_uidvalidity
    }

    /// The runs below the tail, for storing.
    pub fn runs(&self) -> &[Run] {
        &self.runs[..self.runs.len() - 1]
    }

    /// Where the tail starts, `(NEW UID, virtual UID)`.
    pub fn tail(&self) -> (u32, u32) {
        let tail = self.runs[self.runs.len() - 1];
        (tail.new, tail.virt)
    }

    pub fn modseq_offset(&self) -> u64 {
        self.modseq_offset
    }

    /// The number `x` stands for, if the map holds it exactly.
    pub fn exact(&self, dir: Dir, x: u32) -> Option<u32> {
        let i = self.runs.partition_point(|r| r.end(dir) < x);
        let r = self.runs.get(i)?;
        (x >= r.from(dir)).then(|| r.to(dir) + (x - r.from(dir)))
    }

    /// The image of the least mapped number at or above `x`.
    pub fn ceil(&self, dir: Dir, x: u32) -> Option<u32> {
        let i = self.runs.partition_point(|r| r.end(dir) < x);
        let r = self.runs.get(i)?;
        Some(r.to(dir) + x.saturating_sub(r.from(dir)))
    }

    /// The image of the greatest mapped number at or below `x`.
    pub fn floor(&self, dir: Dir, x: u32) -> Option<u32> {
        let i = self.runs.partition_point(|r| r.from(dir) <= x);
        let r = self.runs.get(i.checked_sub(1)?)?;
        Some(r.to(dir) + (x.min(r.end(dir)) - r.from(dir)))
    }

    /// NEW's UIDNEXT (or any "next UID" value) as the client sees it.
    pub fn next_uid(&self, new_next: u32) -> u32 {
        self.ceil(Dir::ToVirtual, new_next).unwrap_or(u32::MAX)
    }

    /// NEW's UIDVALIDITY as the client sees it: the virtual one when the map is for it.
    pub fn shown_uidvalidity(&self, new: u32) -> Option<u32> {
        (new == self.new_uidvalidity).then_some(self.uidvalidity)
    }

    /// The client's UIDVALIDITY as NEW knows it: NEW's when it is the one shown, otherwise a
    /// value NEW's is not (so NEW tells the client its cache is stale).
    pub fn new_uidvalidity_for(&self, shown: u32) -> u32 {
        if shown == self.uidvalidity {
            self.new_uidvalidity
        } else if self.new_uidvalidity == 1 {
            2
        } else {
            1
        }
    }

    /// NEW's MODSEQ as the client sees it.
    pub fn shown_modseq(&self, new: u64) -> u64 {
        new.saturating_add(self.modseq_offset)
    }

    /// The client's MODSEQ as NEW knows it; 0 for one from before the cutover ("everything").
    pub fn new_modseq(&self, shown: u64) -> u64 {
        shown.saturating_sub(self.modseq_offset)
    }

    /// Translates a sequence set of UIDs (`1:5,7,9:*`); `None` when `set` is not one. Items
    /// keep their order. `exact`: a range becomes exactly the mapped numbers in it (one range per
    /// run it meets), as sets whose members are paired with another set's need (COPYUID,
    /// QRESYNC's sequence match data); otherwise a range becomes the one range from the least to
    /// the greatest mapped number in it, which names the same messages when the other side has
    /// no message between runs (towards NEW). Items naming nothing are left out: the result
    /// may be empty. `*` is kept: the largest UID is the largest on both sides.
    pub fn translate_set(&self, dir: Dir, set: &str, exact: bool) -> Option<String> {
        let mut items: Vec<String> = Vec::new();
        let range = |lo: u32, hi: u32| match lo == hi {
            true => lo.to_string(),
            false => format!("{lo}:{hi}"),
        };
        for item in set.split(',') {
            let (a, b) = item.split_once(':').unwrap_or((item, item));
            match (number(a)?, number(b)?) {
                (None, None) => items.push("*".into()),
                // Above every mapped number, `n:*` is the largest alone.
                (Some(n), None) | (None, Some(n)) => items.push(match self.ceil(dir, n) {
                    Some(lo) => format!("{lo}:*"),
                    None => "*".into(),
                }),
                (Some(a), Some(b)) => {
                    let (lo, hi) = (a.min(b), a.max(b));
                    if exact {
                        let first = self.runs.partition_point(|r| r.end(dir) < lo);
                        for r in self.runs[first..].iter().take_while(|r| r.from(dir) <= hi) {
                            let (from, to) = (lo.max(r.from(dir)), hi.min(r.end(dir)));
                            let shift = |x: u32| r.to(dir) + (x - r.from(dir));
                            items.push(range(shift(from), shift(to)));
                        }
                    } else if let (Some(lo), Some(hi)) = (self.ceil(dir, lo), self.floor(dir, hi))
                        && lo <= hi
                    {
                        items.push(range(lo, hi));
                    }
                }
            }
        }
        Some(items.join(","))
    }
}

/// One end of a set item: `Some(n)`, or `None` for `*`; the outer `None` when it is neither.
fn number(s: &str) -> Option<Option<u32>> {
    if s == "*" {
        return Some(None);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&n| n > 0).map(Some)
}

/// The runs of `links`, `(NEW UID, OLD UID)` pairs sorted by NEW UID; `Err` when the OLD UIDs
/// do not go up with NEW's.
pub fn runs_of(links: impl IntoIterator<Item = (u32, u32)>) -> Result<Vec<Run>, MapError> {
    let mut runs: Vec<Run> = Vec::new();
    for (new, old) in links {
        match runs.last_mut() {
            Some(r) if new == r.new + r.len && old == r.virt + r.len => r.len += 1,
            Some(r) if new < r.new + r.len || old < r.virt + r.len => {
                return Err(MapError::NotAscending(new));
            }
            _ => runs.push(Run {
                new,
                virt: old,
                len: 1,
            }),
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NEW 1..=3 were OLD 10..=12, NEW 5..=6 were OLD 20..=21 (NEW 4 was expunged), and NEW
    /// UIDs from 8 on are shown from 100 (OLD's UIDNEXT was 100).
    fn map() -> UidMap {
        let runs = runs_of([(1, 10), (2, 11), (3, 12), (5, 20), (6, 21)]).unwrap();
        UidMap::new(777, 5, 1000, &runs, (8, 100)).unwrap()
    }

    #[test]
    fn runs_are_built_from_ascending_links_only() {
        assert_eq!(
            runs_of([(1, 10), (2, 11), (4, 13), (5, 20)]).unwrap(),
            vec![
                Run {
                    new: 1,
                    virt: 10,
                    len: 2
                },
                Run {
                    new: 4,
                    virt: 13,
                    len: 1
                },
                Run {
                    new: 5,
                    virt: 20,
                    len: 1
                },
            ]
        );
        assert_eq!(runs_of([(1, 10), (2, 9)]), Err(MapError::NotAscending(2)));
        assert_eq!(runs_of([(1, 10), (1, 11)]), Err(MapError::NotAscending(1)));
        // The tail must start above the runs on both sides.
        let runs = runs_of([(1, 10)]).unwrap();
        assert!(UidMap::new(1, 1, 0, &runs, (2, 10)).is_err());
        assert!(UidMap::new(1, 1, 0, &runs, (1, 11)).is_err());
        assert!(UidMap::new(1, 1, 0, &runs, (2, 11)).is_ok());
        assert!(UidMap::new(1, 1, 0, &[], (0, 11)).is_err());
        assert!(UidMap::new(1, 1, 0, &[], (0, 0)).is_err());
    }

    #[test]
    fn single_numbers() {
        let m = map();
        let cases = [
            // (dir, x, exact, ceil, floor)
            (Dir::ToVirtual, 1, Some(10), Some(10), Some(10)),
            (Dir::ToVirtual, 3, Some(12), Some(12), Some(12)),
            (Dir::ToVirtual, 4, None, Some(20), Some(12)),
            (Dir::ToVirtual, 7, None, Some(100), Some(21)),
            (Dir::ToVirtual, 8, Some(100), Some(100), Some(100)),
            (Dir::ToVirtual, 50, Some(142), Some(142), Some(142)),
            (Dir::ToNew, 9, None, Some(1), None),
            (Dir::ToNew, 11, Some(2), Some(2), Some(2)),
            (Dir::ToNew, 15, None, Some(5), Some(3)),
            (Dir::ToNew, 99, None, Some(8), Some(6)),
            (Dir::ToNew, 142, Some(50), Some(50), Some(50)),
            (
                Dir::ToNew,
                u32::MAX,
                Some(u32::MAX - 92),
                Some(u32::MAX - 92),
                Some(u32::MAX - 92),
            ),
            // NEW's side of the tail ends first: nothing maps above it.
            (Dir::ToVirtual, u32::MAX, None, None, Some(u32::MAX)),
        ];
        for (dir, x, exact, ceil, floor) in cases {
            assert_eq!(m.exact(dir, x), exact, "exact {dir:?} {x}");
            assert_eq!(m.ceil(dir, x), ceil, "ceil {dir:?} {x}");
            assert_eq!(m.floor(dir, x), floor, "floor {dir:?} {x}");
        }
        assert_eq!(m.next_uid(8), 100);
        assert_eq!(m.next_uid(12), 104);
    }

    #[test]
    fn sets() {
        let m = map();
        let cases = [
            // (dir, set, exact, result)
            (Dir::ToNew, "10:21", false, Some("1:6")),
            (Dir::ToNew, "10:21", true, Some("1:3,5:6")),
            (Dir::ToNew, "21:10", false, Some("1:6")),
            (Dir::ToNew, "1:*", false, Some("1:*")),
            (Dir::ToNew, "15:*", false, Some("5:*")),
            (Dir::ToNew, "*:15", false, Some("5:*")),
            (Dir::ToNew, "*", false, Some("*")),
            (Dir::ToNew, "13:19", false, Some("")),
            (Dir::ToNew, "13:19,11", false, Some("2")),
            (Dir::ToNew, "100,12,101", true, Some("8,3,9")),
            (Dir::ToNew, "$", false, None),
            (Dir::ToNew, "1:x", false, None),
            (Dir::ToNew, "0", false, None),
            (Dir::ToVirtual, "1:9", true, Some("10:12,20:21,100:101")),
            (Dir::ToVirtual, "4", true, Some("")),
            (Dir::ToVirtual, "3,1", true, Some("12,10")),
            (Dir::ToVirtual, "1:9", false, Some("10:101")),
        ];
        for (dir, set, exact, want) in cases {
            assert_eq!(
                m.translate_set(dir, set, exact).as_deref(),
                want,
                "{dir:?} {set} exact={exact}"
            );
        }
    }

    #[test]
    fn uidvalidity_and_modseq() {
        let m = map();
        assert_eq!(m.shown_uidvalidity(5), Some(777));
        assert_eq!(m.shown_uidvalidity(6), None);
        assert_eq!(m.new_uidvalidity_for(777), 5);
        assert_ne!(m.new_uidvalidity_for(5), 5);
        let other = UidMap::new(777, 1, 0, &[], (1, 1)).unwrap();
        assert_ne!(other.new_uidvalidity_for(5), 1);
        assert_eq!(m.shown_modseq(7), 1007);
        assert_eq!(m.new_modseq(1007), 7);
        assert_eq!(m.new_modseq(900), 0);
    }

    #[test]
    fn a_stored_map_is_built_again_the_same() {
        let m = map();
        let again = UidMap::new(777, 5, 1000, m.runs(), m.tail()).unwrap();
        assert_eq!(again, m);
        assert_eq!(m.tail(), (8, 100));
        assert_eq!(m.runs().len(), 2);
    }
}
