//! UID sets: compact formatting of UID lists (`1:5,7`), parsing of sets in response codes
//! (APPENDUID, COPYUID, VANISHED), and splitting long sets so command lines stay short.

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

#[cfg(test)]
mod tests {
    use super::*;

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
