//! UID sets: compact formatting of UID lists (`1:5,7`), parsing of sets in response codes
//! (APPENDUID, COPYUID, VANISHED), splitting long sets so command lines stay short, and
//! [`Ranges`], a set kept as ranges so `1:99998` costs bytes, not megabytes.

/// Formats ascending (or any) UIDs as a compact set. The input need not be sorted.
pub fn format(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Splits UIDs into sets whose formatted length stays under `max_len` characters.
pub fn chunks(uids: &[u32], max_len: usize) -> Vec<String> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    let mut len = 0;
    for i in 0..sorted.len() {
        // Upper bound of what this UID adds: separator plus digits.
        len += 11;
        if len > max_len && i > start {
            out.push(format(&sorted[start..i]));
            start = i;
            len = 11;
        }
    }
    if start < sorted.len() {
        out.push(format(&sorted[start..]));
    }
    out
}

/// Parses a set of UIDs as servers send them in response codes (`5`, `1:3,7`, `9:7`), in order.
/// Returns `None` for `*`, garbage, or more than `limit` UIDs.
pub fn parse(s: &str, limit: usize) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let (a, b) = match item.split_once(':') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let v = item.parse::<u32>().ok()?;
                (v, v)
            }
        };
        let (lo, hi) = (a.min(b), a.max(b));
        if out.len() + (hi - lo) as usize >= limit {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

/// A set of UIDs as ascending, disjoint, non-adjacent ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    /// Parses a UID set as a client sends it, at most `max_items` comma-separated items. `1:*`
    /// is every UID; any other `*` is refused (`5:*` also names the highest UID when it is below
    /// 5, which only the server knows).
    pub fn parse(s: &str, max_items: usize) -> Option<Ranges> {
        let mut ranges = Vec::new();
        for item in s.split(',') {
            if ranges.len() >= max_items {
                return None;
            }
            if item == "1:*" || item == "*:1" {
                ranges.push((1, u32::MAX));
                continue;
            }
            let (a, b) = match item.split_once(':') {
                Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
                None => {
                    let v = item.parse::<u32>().ok()?;
                    (v, v)
                }
            };
            ranges.push((a.min(b), a.max(b)));
        }
        Some(Ranges::from_ranges(ranges))
    }

    /// The set of `uids` (any order, duplicates allowed).
    pub fn from_uids(uids: impl IntoIterator<Item = u32>) -> Ranges {
        Ranges::from_ranges(uids.into_iter().map(|u| (u, u)).collect())
    }

    /// The UIDs of any of `sets`.
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a Ranges>) -> Ranges {
        Ranges::from_ranges(sets.into_iter().flat_map(|r| r.0.iter().copied()).collect())
    }

    fn from_ranges(mut ranges: Vec<(u32, u32)>) -> Ranges {
        ranges.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Ranges(out)
    }

    pub fn contains(&self, uid: u32) -> bool {
        let i = self.0.partition_point(|(_, hi)| *hi < uid);
        self.0.get(i).is_some_and(|(lo, _)| *lo <= uid)
    }

    /// How many UIDs the set holds.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|(lo, hi)| u64::from(hi - lo) + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The set's ranges, `(lo, hi)` inclusive, ascending.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.0
    }

    /// The lowest and the highest UID of the set; `(1, 0)`, a span holding no UID, when empty.
    pub fn span(&self) -> (u32, u32) {
        match (self.0.first(), self.0.last()) {
            (Some(first), Some(last)) => (first.0, last.1),
            _ => (1, 0),
        }
    }
}

impl std::fmt::Display for Ranges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}:{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_compact() {
        let r = Ranges::parse("1:99998", 10).unwrap();
        assert_eq!((r.len(), r.to_string()), (99_998, "1:99998".to_string()));
        let r = Ranges::parse("9,1:3,4,7:5,20", 10).unwrap();
        assert_eq!(r.to_string(), "1:7,9,20");
        for (uid, inside) in [
            (0, false),
            (1, true),
            (7, true),
            (8, false),
            (9, true),
            (20, true),
            (21, false),
        ] {
            assert_eq!(r.contains(uid), inside, "{uid}");
        }
        assert_eq!(Ranges::from_uids([5, 3, 4, 9, 3]).to_string(), "3:5,9");
        let union = Ranges::union([&Ranges::from_uids([9, 1]), &Ranges::from_uids([2, 20])]);
        assert_eq!(union.ranges(), [(1, 2), (9, 9), (20, 20)]);
        assert_eq!(Ranges::parse("1:*", 10).unwrap().len(), u64::from(u32::MAX));
        assert!(Ranges::parse("2,1:*", 10).unwrap().contains(7));
        assert_eq!(Ranges::parse("5:*", 10), None);
        assert_eq!(Ranges::parse("*", 10), None);
        assert_eq!(Ranges::parse("1,2,3", 2), None);
        assert!(Ranges::default().is_empty());
        assert_eq!(Ranges::parse(&u32::MAX.to_string(), 1).unwrap().len(), 1);
    }

    #[test]
    fn formats_compactly() {
        for (uids, expected) in [
            (&[][..], ""),
            (&[5], "5"),
            (&[1, 2, 3, 5, 7, 8], "1:3,5,7:8"),
            (&[8, 7, 1, 3, 2, 2], "1:3,7:8"),
        ] {
            assert_eq!(format(uids), expected);
        }
    }

    #[test]
    fn a_span_runs_from_the_lowest_to_the_highest_uid() {
        for (uids, span) in [
            (&[][..], (1, 0)),
            (&[7][..], (7, 7)),
            (&[9, 3, 4][..], (3, 9)),
        ] {
            assert_eq!(
                Ranges::from_uids(uids.iter().copied()).span(),
                span,
                "{uids:?}"
            );
        }
    }

    #[test]
    fn parses_sets() {
        assert_eq!(parse("1:3,7", 100), Some(vec![1, 2, 3, 7]));
        assert_eq!(parse("9:7", 100), Some(vec![7, 8, 9]));
        assert_eq!(parse("*", 100), None);
        assert_eq!(parse("1:1000", 10), None);
    }

    #[test]
    fn chunks_keep_every_uid_once() {
        let uids: Vec<u32> = (1..5000).step_by(2).collect();
        let sets = chunks(&uids, 1000);
        assert!(sets.len() > 1);
        assert!(sets.iter().all(|s| s.len() <= 1000));
        let back: Vec<u32> = sets
            .iter()
            .flat_map(|s| parse(s, 1 << 20).unwrap())
            .collect();
        assert_eq!(back, uids);
    }
}
