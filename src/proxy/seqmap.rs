//! The selected folder's message sequence numbers as one session sees them, mapped to the UIDs
//! NEW's FETCH responses named, kept in step by EXISTS, EXPUNGE and VANISHED. A STORE (or a
//! FETCH that sets `\Seen`) by sequence number is journaled with the UIDs it touched when every
//! one is known, so the mirror need not read the whole folder to find them; so is an EXPUNGE,
//! with the UIDs NEW reported gone. Pure: lines in, answers out.

use crate::imap::uidset::Ranges;

/// Most messages a session's map follows (4 bytes each); a larger folder is not followed.
const MAX_MESSAGES: usize = 1_000_000;
/// Most expunged UIDs kept for the next EXPUNGE's entry; more are not named.
const MAX_GONE: usize = 65_536;

/// Sequence number `n` is `uids[n - 1]`; 0 where no response named its UID yet.
#[derive(Debug, Default)]
pub struct SeqMap {
    uids: Vec<u32>,
    /// Something the map could not follow happened since the folder was selected (a VANISHED
    /// UID it did not know, a folder too large): it answers nothing until the next selection.
    lost: bool,
    /// The UIDs NEW reported expunged since the last [`SeqMap::take_expunged`]; `None` once one
    /// of them was not known (or too many).
    gone: Option<Vec<u32>>,
}

impl SeqMap {
    /// A folder was selected (or none is): the messages NEW announced stay, their UIDs are
    /// unknown. Called at the SELECT's tagged answer, after its EXISTS set the count.
    pub fn selected(&mut self) {
        self.uids.iter_mut().for_each(|u| *u = 0);
        self.lost = self.uids.len() >= MAX_MESSAGES;
        self.gone = Some(Vec::new());
    }

    /// The UIDs NEW reported expunged since the selection or the last call, if it knew each
    /// one's UID; starts the next count.
    pub fn take_expunged(&mut self) -> Option<Ranges> {
        let gone = self.gone.replace(Vec::new())?;
        (!self.lost).then(|| Ranges::from_uids(gone))
    }

    fn expunged(&mut self, uids: impl IntoIterator<Item = u32>) {
        for uid in uids {
            match &mut self.gone {
                Some(gone) if uid != 0 && gone.len() < MAX_GONE => gone.push(uid),
                _ => self.gone = None,
            }
        }
    }

    /// An untagged response, the text after `* ` (up to a literal, if it has one).
    pub fn untagged(&mut self, text: &str) {
        let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
        if first.eq_ignore_ascii_case("VANISHED") {
            return self.vanished(rest);
        }
        let Ok(n) = first.parse::<usize>() else {
            return;
        };
        let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if name.eq_ignore_ascii_case("EXISTS") {
            if n > MAX_MESSAGES || n < self.uids.len() {
                self.lost = true;
            }
            self.uids.resize(n.min(MAX_MESSAGES), 0);
        } else if name.eq_ignore_ascii_case("EXPUNGE") {
            if (1..=self.uids.len()).contains(&n) {
                let uid = self.uids.remove(n - 1);
                self.expunged([uid]);
            } else {
                self.lost = true;
            }
        } else if name.eq_ignore_ascii_case("FETCH")
            && let Some(uid) = fetch_uid(rest)
            && let Some(slot) = n.checked_sub(1).and_then(|i| self.uids.get_mut(i))
        {
            *slot = uid;
        }
    }

    /// `VANISHED (EARLIER) ...` renumbers nothing; a plain VANISHED removes the UIDs it names,
    /// which must all be known (an unknown one leaves no way to tell which number went).
    fn vanished(&mut self, rest: &str) {
        if rest.starts_with('(') {
            return;
        }
        let Some(gone) = Ranges::parse(rest.trim(), 65_536) else {
            self.lost = true;
            return;
        };
        let before = self.uids.len();
        self.uids.retain(|u| !gone.contains(*u));
        // Every vanished UID must have been one of ours.
        if (before - self.uids.len()) as u64 != gone.len() {
            self.lost = true;
        }
        let uids = gone.ranges().iter().flat_map(|&(lo, hi)| lo..=hi);
        self.expunged(uids.take(MAX_GONE + 1));
    }

    /// The UIDs of sequence set `set` (`1,3:5`, `2:*`), if every number in it is a message the
    /// map knows the UID of.
    pub fn resolve(&self, set: &str) -> Option<Ranges> {
        if self.lost {
            return None;
        }
        let last = self.uids.len();
        let number = |s: &str| {
            match s {
                "*" => Some(last),
                _ => s.parse::<usize>().ok(),
            }
            .filter(|n| (1..=last).contains(n))
        };
        let mut uids = Vec::new();
        for item in set.split(',') {
            let (a, b) = match item.split_once(':') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => (number(item)?, number(item)?),
            };
            for seq in a.min(b)..=a.max(b) {
                match self.uids[seq - 1] {
                    0 => return None,
                    uid => uids.push(uid),
                }
            }
        }
        Some(Ranges::from_uids(uids))
    }
}

/// The UID item of a FETCH response's list (`(FLAGS (\Seen) UID 7)`), read at the list's top
/// level only: a UID spelled inside an envelope's string or a section is not it. The text may
/// end at a literal (`BODY[] {120}`): what follows it is not seen.
fn fetch_uid(list: &str) -> Option<u32> {
    let mut s = list.trim_start().strip_prefix('(')?;
    loop {
        s = s.trim_start();
        // An item's name runs to a space, with any [section] (which may hold spaces) in it.
        let mut end = 0;
        let mut in_section = false;
        for (i, c) in s.char_indices() {
            match c {
                '[' => in_section = true,
                ']' => in_section = false,
                ' ' | ')' | '(' if !in_section => break,
                _ => {}
            }
            end = i + c.len_utf8();
        }
        let (name, rest) = s.split_at(end);
        if name.is_empty() {
            return None;
        }
        let rest = rest.trim_start();
        if name.eq_ignore_ascii_case("UID") {
            let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
            // Unreadable: the number stays unknown, and a STORE naming it is journaled without
            // UIDs (the mirror reads the folder instead). Nothing is lost.
            return digits.parse().ok();
        }
        s = skip_value(rest)?;
    }
}

/// The text after one value: a parenthesised list, a quoted string or an atom. `None` at a
/// literal or the end.
fn skip_value(s: &str) -> Option<&str> {
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            if !quoted && depth == 0 {
                return Some(&s[i + 1..]);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '{' => return None,
            '(' => depth += 1,
            ')' if depth == 0 => return None,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[i + 1..]);
                }
            }
            ' ' if depth == 0 => return Some(&s[i..]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uid_of_a_fetch_response_is_read_at_its_top_level() {
        for (list, uid) in [
            ("(UID 7 FLAGS (\\Seen))", Some(7)),
            ("(FLAGS (\\Seen) UID 7)", Some(7)),
            ("(FLAGS () MODSEQ (12) UID 9)", Some(9)),
            ("(uid 8)", Some(8)),
            ("(UID 11 RFC822.SIZE 120 BODY[] {120}", Some(11)),
            ("(RFC822.SIZE 120 BODY[] {120}", None),
            ("(FLAGS (\\Seen))", None),
            // Not the item: inside a string, a nested list, a section.
            ("(ENVELOPE (NIL \"UID 5\" NIL) FLAGS ())", None),
            ("(ENVELOPE (NIL \"a \\\" UID 5\" NIL) UID 6)", Some(6)),
            ("(BODY[HEADER.FIELDS (UID X)] \"UID 4\" UID 3)", Some(3)),
            ("(X-THING (UID 5) UID 2)", Some(2)),
            (
                "(BODYSTRUCTURE (\"text\" \"plain\" (\"UID\" \"5\")) UID 12)",
                Some(12),
            ),
            ("", None),
            ("(", None),
            ("(UID)", None),
            ("(UID x)", None),
        ] {
            assert_eq!(fetch_uid(list), uid, "{list}");
        }
    }

    /// Feeds untagged lines (`* ` left off; `SELECTED` for a SELECT's tagged answer) and asks
    /// for sets.
    fn map(lines: &[&str]) -> SeqMap {
        let mut m = SeqMap::default();
        for line in lines {
            match *line {
                "SELECTED" => m.selected(),
                _ => m.untagged(line),
            }
        }
        m
    }

    fn resolved(m: &SeqMap, set: &str) -> Option<String> {
        m.resolve(set).map(|r| r.to_string())
    }

    #[test]
    fn sequence_sets_resolve_to_the_uids_responses_named() {
        let known = [
            "4 EXISTS",
            "SELECTED",
            "1 FETCH (UID 10 FLAGS ())",
            "2 FETCH (FLAGS () UID 11)",
            "3 FETCH (UID 15)",
            "4 FETCH (UID 20 BODY[] {5}",
        ];
        let m = map(&known);
        // (set, UIDs)
        for (set, uids) in [
            ("1", Some("10")),
            ("1:2", Some("10:11")),
            ("2:1", Some("10:11")),
            ("1,3", Some("10,15")),
            ("3:*", Some("15,20")),
            ("*", Some("20")),
            ("1:*", Some("10:11,15,20")),
            ("5", None),
            ("0", None),
            ("1:5", None),
            ("$", None),
            ("", None),
            ("1,x", None),
        ] {
            assert_eq!(resolved(&m, set), uids.map(String::from), "{set}");
        }

        // (lines after the known ones, set, UIDs)
        for (more, set, uids) in [
            // A message not fetched yet is unknown; EXISTS adds unknown ones.
            (vec!["5 EXISTS"], "4", Some("20")),
            (vec!["5 EXISTS"], "4:5", None),
            (vec!["5 EXISTS", "5 FETCH (UID 21)"], "5", Some("21")),
            // EXPUNGE renumbers.
            (vec!["2 EXPUNGE"], "2:3", Some("15,20")),
            (vec!["2 EXPUNGE", "2 EXPUNGE"], "*", Some("20")),
            (vec!["9 EXPUNGE"], "1", None),
            // VANISHED of known UIDs renumbers; of an unknown one, the map is lost.
            (vec!["VANISHED 11,15"], "1:*", Some("10,20")),
            (vec!["VANISHED (EARLIER) 11"], "2", Some("11")),
            (vec!["5 EXISTS", "VANISHED 99"], "1", None),
            // A count going down without an EXPUNGE cannot be followed.
            (vec!["3 EXISTS"], "1", None),
            // A new selection forgets the UIDs, keeps the count its EXISTS said.
            (vec!["2 EXISTS", "SELECTED"], "1", None),
            (
                vec!["SELECTED", "1 FETCH (UID 3)", "2 FETCH (UID 4)"],
                "1:2",
                Some("3:4"),
            ),
            // ... and is followed again after being lost.
            (
                vec!["3 EXISTS", "SELECTED", "1 FETCH (UID 3)"],
                "1",
                Some("3"),
            ),
            // Other untagged responses change nothing.
            (
                vec!["OK [UIDNEXT 30] x", "FLAGS (\\Seen)", "7 RECENT"],
                "2",
                Some("11"),
            ),
        ] {
            let lines: Vec<&str> = known.iter().copied().chain(more.clone()).collect();
            assert_eq!(
                resolved(&map(&lines), set),
                uids.map(String::from),
                "{more:?} {set}"
            );
        }
    }

    /// An EXPUNGE is journaled with the UIDs NEW reported gone since the last one, when the
    /// map knew each; otherwise the mirror compares the whole folder.
    #[test]
    fn expunged_uids_are_counted_until_taken() {
        let known = [
            "4 EXISTS",
            "SELECTED",
            "1 FETCH (UID 10)",
            "2 FETCH (UID 11)",
            "3 FETCH (UID 15)",
        ];
        // (lines after the known ones, what each take answers, in turn)
        for (more, takes) in [
            (vec![], vec![Some("")]),
            (vec!["2 EXPUNGE", "2 EXPUNGE"], vec![Some("11,15")]),
            (vec!["VANISHED 10:11"], vec![Some("10:11")]),
            // Counted from the last take on.
            (
                vec!["1 EXPUNGE", "TAKE", "1 EXPUNGE"],
                vec![Some("10"), Some("11")],
            ),
            // Message 4's UID is not known: nothing is named, and the next count starts.
            (
                vec!["4 EXPUNGE", "TAKE", "1 EXPUNGE"],
                vec![None, Some("10")],
            ),
            (vec!["VANISHED 99"], vec![None]),
            (vec!["9 EXPUNGE"], vec![None]),
            // A new selection starts a new count.
            (vec!["1 EXPUNGE", "SELECTED"], vec![Some("")]),
        ] {
            let mut m = SeqMap::default();
            let mut got = Vec::new();
            for line in known.iter().chain(&more) {
                match *line {
                    "SELECTED" => m.selected(),
                    "TAKE" => got.push(m.take_expunged().map(|r| r.to_string())),
                    _ => m.untagged(line),
                }
            }
            got.push(m.take_expunged().map(|r| r.to_string()));
            let takes: Vec<Option<String>> = takes.iter().map(|t| t.map(String::from)).collect();
            assert_eq!(got, takes, "{more:?}");
        }
    }

    #[test]
    fn an_empty_folder_resolves_nothing() {
        for set in ["*", "1:*", "*:1", "1"] {
            assert_eq!(
                resolved(&map(&["0 EXISTS", "SELECTED"]), set),
                None,
                "{set}"
            );
        }
    }

    #[test]
    fn a_folder_past_the_cap_is_not_followed() {
        let m = map(&[&format!("{} EXISTS", MAX_MESSAGES + 1), "1 FETCH (UID 1)"]);
        assert_eq!(resolved(&m, "1"), None);
        assert!(m.uids.len() <= MAX_MESSAGES);
    }

    proptest::proptest! {
        #[test]
        fn following_never_panics(
            lines in proptest::collection::vec(
                ("[0-9]{1,3}", "(EXISTS|EXPUNGE|FETCH|VANISHED|X)", ".{0,40}"), 0..32),
            sets in proptest::collection::vec("[0-9*:,$]{0,12}", 0..8),
        ) {
            let mut m = SeqMap::default();
            for (n, name, rest) in &lines {
                m.untagged(&format!("{n} {name} {rest}"));
                m.untagged(&format!("{name} {rest}"));
                if rest.starts_with('a') {
                    m.selected();
                }
            }
            for set in &sets {
                if let Some(uids) = m.resolve(set) {
                    proptest::prop_assert!(uids.len() as usize <= m.uids.len());
                }
            }
        }
    }
}
