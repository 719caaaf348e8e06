//! Message flags: a normalised flag set, the three-way merge of OLD and NEW flags against the stored
//! base, the PERMANENTFLAGS filter for NEW, and the STORE operations that reach a target set.
//! Pure functions (reference §3).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::mapping::{PerlError, PerlSubst};

const SYSTEM_FLAGS: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];

/// imapsync's flagscase: the five RFC system flags in their canonical case; anything else as is.
fn normalize(flag: &str) -> &str {
    SYSTEM_FLAGS
        .iter()
        .find(|s| s.eq_ignore_ascii_case(flag))
        .copied()
        .unwrap_or(flag)
}

/// A set of flags a client can set. On insertion `\Recent` is dropped (no client can alter it) and
/// the system flags are case-normalised, so equal sets mean equal flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagSet(BTreeSet<String>);

impl FlagSet {
    /// Parses a space-separated list, with or without the surrounding parentheses of a FLAGS item.
    pub fn parse(list: &str) -> Self {
        list.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split_ascii_whitespace()
            .collect()
    }

    pub fn insert(&mut self, flag: &str) {
        if !flag.eq_ignore_ascii_case("\\Recent") {
            self.0.insert(normalize(flag).to_string());
        }
    }

    pub fn contains(&self, flag: &str) -> bool {
        self.0.contains(normalize(flag))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Flags in `self` and not in `other`, sorted.
    pub fn difference<'a>(&'a self, other: &'a FlagSet) -> impl Iterator<Item = &'a str> {
        self.0.difference(&other.0).map(String::as_str)
    }

    /// Sorted, single-space separated (the form stored and compared).
    pub fn to_canonical(&self) -> String {
        self.iter().collect::<Vec<_>>().join(" ")
    }
}

impl<S: AsRef<str>> FromIterator<S> for FlagSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut set = FlagSet::default();
        for flag in iter {
            set.insert(flag.as_ref());
        }
        set
    }
}

impl fmt::Display for FlagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_canonical())
    }
}

/// Three-way merge of a linked pair's flags against the base stored at the last reconcile
/// (`base_old`, `base_new`: what each side had then; equal once converged). Per flag:
/// - NEW changed it since its base: NEW's value (this includes a true conflict: NEW wins);
/// - else OLD changed it since its base: OLD's value;
/// - else NEW's value.
///
/// OLD never simply overwrites NEW ("source wins" is imapsync's resyncflags, not ours).
pub fn merge(base_old: &FlagSet, base_new: &FlagSet, old: &FlagSet, new: &FlagSet) -> FlagSet {
    let candidates: BTreeSet<&str> = base_old
        .iter()
        .chain(base_new.iter())
        .chain(old.iter())
        .chain(new.iter())
        .collect();
    candidates
        .into_iter()
        .filter(|f| {
            let new_changed = new.contains(f) != base_new.contains(f);
            let old_changed = old.contains(f) != base_old.contains(f);
            if !new_changed && old_changed {
                old.contains(f)
            } else {
                new.contains(f)
            }
        })
        .collect()
}

/// The bogus backslash "flags" some servers report (reference §3), removed by `--filterbuggyflags`.
/// Longer names come before their prefixes (`\FORWARDED` before `\FORWARD`) so alternation
/// removes the whole name.
const BUGGY_FLAGS: [&str; 13] = [
    "\\RECEIPTCHECKED",
    "\\JUNK",
    "\\Indexed",
    "\\X-EON-HAS-ATTACHMENT",
    "\\UNSEEN",
    "\\ATTACHED",
    "\\X-HAS-ATTACH",
    "\\FORWARDED",
    "\\FORWARD",
    "\\X-FORWARDED",
    "\\$FORWARDED",
    "\\PRIORITY",
    "\\READRCPT",
];

/// The flag rewrites applied to OLD's flags before NEW sees them, in imapsync's order: the
/// `--filterbuggyflags` removal first, then each `--regexflag` `s///` on the space-separated
/// list; the result is parsed again (so `\Recent` goes and system flags are case-normalised).
#[derive(Debug, Clone, Default)]
pub struct FlagRewrite {
    buggy: Option<regex::Regex>,
    substs: Vec<PerlSubst>,
}

impl FlagRewrite {
    pub fn new(filter_buggy: bool, regexflag: &[String]) -> Result<FlagRewrite, PerlError> {
        let buggy = if filter_buggy {
            let alternation = BUGGY_FLAGS
                .iter()
                .map(|f| regex::escape(f))
                .collect::<Vec<_>>()
                .join("|");
            let re = regex::Regex::new(&format!("(?i){alternation}")).map_err(|e| {
                PerlError::BadRegex {
                    pattern: alternation.clone(),
                    message: e.to_string(),
                }
            })?;
            Some(re)
        } else {
            None
        };
        let substs = regexflag
            .iter()
            .map(|r| PerlSubst::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FlagRewrite { buggy, substs })
    }

    /// True when there is nothing to rewrite.
    pub fn is_identity(&self) -> bool {
        self.buggy.is_none() && self.substs.is_empty()
    }

    pub fn apply(&self, flags: &FlagSet) -> FlagSet {
        if self.is_identity() {
            return flags.clone();
        }
        let mut list = flags.to_canonical();
        if let Some(re) = &self.buggy {
            list = re.replace_all(&list, "").into_owned();
        }
        for subst in &self.substs {
            list = subst.apply(&list);
        }
        FlagSet::parse(&list)
    }
}

/// The flags a linked pair's NEW copy should have (before the PERMANENTFLAGS filter): OLD's flags
/// and their base go through `rewrite` first, so a flag the rewrite removes never reaches NEW.
/// `host1_wins` is imapsync's `--resyncflags`: NEW becomes OLD's flags; otherwise the three-way
/// [`merge`].
pub fn reconcile_target(
    base_old: &FlagSet,
    base_new: &FlagSet,
    old: &FlagSet,
    new: &FlagSet,
    rewrite: &FlagRewrite,
    host1_wins: bool,
) -> FlagSet {
    let old = rewrite.apply(old);
    if host1_wins {
        return old;
    }
    merge(&rewrite.apply(base_old), base_new, &old, new)
}

/// NEW's PERMANENTFLAGS: the flags it stores permanently, and whether `\*` lets it create keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermanentFlags {
    allows_any_keyword: bool,
    flags: BTreeSet<String>,
}

impl Default for PermanentFlags {
    /// No PERMANENTFLAGS in the SELECT reply: everything is allowed.
    fn default() -> Self {
        Self {
            allows_any_keyword: true,
            flags: BTreeSet::new(),
        }
    }
}

impl PermanentFlags {
    /// Parses the list of a `[PERMANENTFLAGS (...)]` response code, parentheses optional.
    pub fn parse(list: &str) -> Self {
        let mut perm = Self {
            allows_any_keyword: false,
            flags: BTreeSet::new(),
        };
        for flag in list
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split_ascii_whitespace()
        {
            if flag == "\\*" {
                perm.allows_any_keyword = true;
            } else {
                perm.flags.insert(normalize(flag).to_string());
            }
        }
        perm
    }

    /// As imapsync: with `\*` every flag passes; without it only the listed ones (system flags in
    /// any case, keywords exactly).
    pub fn allows(&self, flag: &str) -> bool {
        self.allows_any_keyword || self.flags.contains(normalize(flag))
    }
}

/// Why a flag cannot be given to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unstorable {
    /// A backslash flag outside RFC 3501's five (`\Indexed`, `\ReceiptChecked`): servers answer
    /// BAD and, after a few, close the connection.
    UnknownSystemFlag,
    /// Not an RFC 3501 atom (8-bit bytes, `]`, `%`, `*`, `"`, controls): a syntax error on the wire.
    NotAnAtom,
    /// The folder's PERMANENTFLAGS neither lists it nor allows new keywords (`\*`).
    NotPermanent,
}

impl fmt::Display for Unstorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unstorable::UnknownSystemFlag => "not a system flag of RFC 3501",
            Unstorable::NotAnAtom => "not a valid IMAP keyword",
            Unstorable::NotPermanent => "not in PERMANENTFLAGS",
        })
    }
}

/// Whether a server can be sent `flag` in APPEND or STORE, before looking at its PERMANENTFLAGS.
pub fn syntax_check(flag: &str) -> Result<(), Unstorable> {
    if let Some(name) = flag.strip_prefix('\\') {
        return if SYSTEM_FLAGS
            .iter()
            .any(|s| s[1..].eq_ignore_ascii_case(name))
        {
            Ok(())
        } else {
            Err(Unstorable::UnknownSystemFlag)
        };
    }
    // RFC 3501 ATOM-CHAR: any CHAR except atom-specials ( ) { SP CTL % * " \ ].
    let atom_char = |b: u8| (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b);
    if !flag.is_empty() && flag.bytes().all(atom_char) {
        Ok(())
    } else {
        Err(Unstorable::NotAnAtom)
    }
}

/// The flags NEW can take, and the ones dropped with the reason (`\Recent` never reaches a
/// `FlagSet`, so it is never sent either).
pub fn filter_for_new(
    flags: &FlagSet,
    perm: &PermanentFlags,
) -> (FlagSet, Vec<(String, Unstorable)>) {
    let mut kept = FlagSet::default();
    let mut dropped = Vec::new();
    for flag in flags.iter() {
        match syntax_check(flag).and_then(|()| {
            if perm.allows(flag) {
                Ok(())
            } else {
                Err(Unstorable::NotPermanent)
            }
        }) {
            Ok(()) => kept.insert(flag),
            Err(why) => dropped.push((flag.to_string(), why)),
        }
    }
    (kept, dropped)
}

/// The `STORE +FLAGS` and `STORE -FLAGS` lists that turn `current` into `target`, sorted.
pub fn store_ops(current: &FlagSet, target: &FlagSet) -> (Vec<String>, Vec<String>) {
    (
        target.difference(current).map(String::from).collect(),
        current.difference(target).map(String::from).collect(),
    )
}

/// The STOREs that bring messages to their target flags, grouped so that messages needing the
/// same change share one command: each group is `(uids, +FLAGS list, -FLAGS list)`. The same
/// changes are also kept as replacements, `(uids, FLAGS list)` grouped by target, for a STORE
/// made conditional on the message being unchanged since it was read (`UNCHANGEDSINCE`): add
/// and remove would be two changes, and the second would find the message changed by the first.
#[derive(Debug, Default)]
pub struct FlagStores {
    diffs: BTreeMap<(Vec<String>, Vec<String>), Vec<u32>>,
    targets: BTreeMap<Vec<String>, Vec<u32>>,
}

impl FlagStores {
    /// Records that message `uid` goes from `current` to `target`; returns whether it changes.
    pub fn push(&mut self, uid: u32, current: &FlagSet, target: &FlagSet) -> bool {
        let ops = store_ops(current, target);
        let changes = !ops.0.is_empty() || !ops.1.is_empty();
        if changes {
            self.diffs.entry(ops).or_default().push(uid);
            let list = target.iter().map(String::from).collect();
            self.targets.entry(list).or_default().push(uid);
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.diffs.is_empty()
    }

    /// How many messages change.
    pub fn messages(&self) -> usize {
        self.diffs.values().map(Vec::len).sum()
    }

    pub fn groups(&self) -> impl Iterator<Item = (Vec<u32>, Vec<String>, Vec<String>)> {
        self.diffs
            .iter()
            .map(|((add, remove), uids)| (uids.clone(), add.clone(), remove.clone()))
    }

    /// The same changes as `(uids, FLAGS list)`: each message's whole target.
    pub fn targets(&self) -> impl Iterator<Item = (Vec<u32>, Vec<String>)> {
        self.targets
            .iter()
            .map(|(flags, uids)| (uids.clone(), flags.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(s: &str) -> FlagSet {
        FlagSet::parse(s)
    }

    #[test]
    fn parse_and_canonical() {
        for (input, expected) in [
            ("", ""),
            ("(\\Seen \\Flagged)", "\\Flagged \\Seen"),
            (
                "\\seen \\ANSWERED \\draft \\deleted \\flagged",
                "\\Answered \\Deleted \\Draft \\Flagged \\Seen",
            ),
            ("\\Recent \\Seen \\recent", "\\Seen"),
            (
                "$Forwarded  $MDNSent\t$label1 $Forwarded",
                "$Forwarded $MDNSent $label1",
            ),
            ("$MdnSent $MDNSent", "$MDNSent $MdnSent"),
            ("\\JUNK \\Seen", "\\JUNK \\Seen"),
        ] {
            assert_eq!(fs(input).to_canonical(), expected, "{input}");
        }
        assert!(fs("\\SEEN").contains("\\seen"));
        assert_eq!(fs("\\Seen $A").len(), 2);
        assert!(fs("\\Recent").is_empty());
    }

    #[test]
    fn three_way_merge() {
        // (base_old, base_new, old, new, expected)
        for (base_old, base_new, old, new, expected) in [
            ("", "", "", "", ""),
            // OLD-only change follows OLD: add, remove
            ("", "", "\\Seen", "", "\\Seen"),
            ("\\Seen", "\\Seen", "", "\\Seen", ""),
            // NEW-only change stays: add, remove
            ("", "", "", "\\Seen", "\\Seen"),
            ("\\Seen", "\\Seen", "\\Seen", "", ""),
            // both changed the same way
            ("", "", "\\Flagged", "\\Flagged", "\\Flagged"),
            ("\\Seen", "\\Seen", "", "", ""),
            // true conflict: NEW wins
            (
                "\\Seen",
                "\\Seen \\Flagged",
                "\\Seen \\Flagged",
                "\\Seen",
                "\\Seen",
            ),
            // independent changes on different flags combine
            ("", "", "\\Answered", "\\Seen", "\\Answered \\Seen"),
            // keywords, exact case
            ("$A", "$A", "$A $B", "", "$B"),
            ("", "", "$label", "$Label", "$Label $label"),
            // NEW never had a flag it cannot store: unchanged on both sides keeps NEW's value
            ("$Junk \\Seen", "\\Seen", "$Junk \\Seen", "\\Seen", "\\Seen"),
            // \Recent is ignored everywhere
            ("", "", "\\Recent", "", ""),
            ("\\Recent", "", "", "\\Recent \\Seen", "\\Seen"),
        ] {
            let got = merge(&fs(base_old), &fs(base_new), &fs(old), &fs(new));
            assert_eq!(
                got.to_canonical(),
                expected,
                "{base_old}|{base_new}|{old}|{new}"
            );
        }
    }

    #[test]
    fn permanent_flags() {
        use Unstorable::*;
        let absent = PermanentFlags::default();
        let any = PermanentFlags::parse("(\\Seen \\Deleted \\*)");
        for (perm, flags, kept, dropped) in [
            (
                &absent,
                "\\Seen $Custom \\Recent",
                "$Custom \\Seen",
                &[][..],
            ),
            (
                &any,
                "\\Seen $Custom \\Flagged ~tilde a[b what? #hash a/b a:b;c a'b $ x-y",
                "#hash $ $Custom \\Flagged \\Seen a'b a/b a:b;c a[b what? x-y ~tilde",
                &[][..],
            ),
            (
                &PermanentFlags::parse("(\\seen \\Deleted $MDNSent)"),
                "\\Seen \\Flagged $MDNSent $MdnSent $Custom",
                "$MDNSent \\Seen",
                &[
                    ("$Custom", NotPermanent),
                    ("$MdnSent", NotPermanent),
                    ("\\Flagged", NotPermanent),
                ][..],
            ),
            (
                &PermanentFlags::parse("()"),
                "\\Seen",
                "",
                &[("\\Seen", NotPermanent)][..],
            ),
            // what no server takes, whatever its PERMANENTFLAGS say
            (
                &any,
                "\\Indexed \\ReceiptChecked \\* \\Seen a]b a%b a*b a\"b \u{e9}t\u{e9} \\",
                "\\Seen",
                &[
                    ("\\", UnknownSystemFlag),
                    ("\\*", UnknownSystemFlag),
                    ("\\Indexed", UnknownSystemFlag),
                    ("\\ReceiptChecked", UnknownSystemFlag),
                    ("a\"b", NotAnAtom),
                    ("a%b", NotAnAtom),
                    ("a*b", NotAnAtom),
                    ("a]b", NotAnAtom),
                    ("\u{e9}t\u{e9}", NotAnAtom),
                ][..],
            ),
        ] {
            let (k, d) = filter_for_new(&fs(flags), perm);
            assert_eq!(k.to_canonical(), kept, "{perm:?} {flags}");
            let d: Vec<(&str, Unstorable)> = d.iter().map(|(f, w)| (f.as_str(), *w)).collect();
            assert_eq!(d, dropped, "{perm:?} {flags}");
        }
    }

    #[test]
    fn every_atom_character_is_a_keyword_a_server_can_take() {
        for c in (0x21u8..0x7f).map(char::from) {
            let keyword = format!("k{c}k");
            let special = "(){%*\"\\]".contains(c);
            assert_eq!(syntax_check(&keyword).is_ok(), !special, "{keyword}");
        }
        for system in ["\\Seen", "\\answered", "\\FLAGGED", "\\Deleted", "\\Draft"] {
            assert_eq!(syntax_check(system), Ok(()));
        }
        assert_eq!(syntax_check(""), Err(Unstorable::NotAnAtom));
        assert_eq!(syntax_check("a\tb"), Err(Unstorable::NotAnAtom));
    }

    #[test]
    fn store_operations() {
        for (current, target, add, remove) in [
            ("", "", &[][..], &[][..]),
            ("\\Seen", "\\Seen \\Flagged", &["\\Flagged"][..], &[][..]),
            ("\\Seen $A", "$B", &["$B"][..], &["$A", "\\Seen"][..]),
            ("\\Seen \\Recent", "\\seen", &[][..], &[][..]),
        ] {
            let (a, r) = store_ops(&fs(current), &fs(target));
            assert_eq!(a, add, "{current} -> {target}");
            assert_eq!(r, remove, "{current} -> {target}");
        }
    }

    #[test]
    fn flag_stores_group_equal_changes() {
        let mut stores = FlagStores::default();
        assert!(stores.push(1, &fs("\\Seen"), &fs("\\Seen \\Flagged")));
        assert!(!stores.push(2, &fs("$A"), &fs("$A")));
        assert!(stores.push(3, &fs(""), &fs("\\Flagged")));
        assert!(stores.push(4, &fs("$A"), &fs("")));
        assert_eq!(stores.messages(), 3);
        let groups: Vec<_> = stores.groups().collect();
        assert_eq!(
            groups,
            vec![
                (vec![4], vec![], vec!["$A".to_string()]),
                (vec![1, 3], vec!["\\Flagged".to_string()], vec![]),
            ]
        );
    }

    fn rw(buggy: bool, regexflag: &[&str]) -> FlagRewrite {
        let list: Vec<String> = regexflag.iter().map(|s| s.to_string()).collect();
        match FlagRewrite::new(buggy, &list) {
            Ok(r) => r,
            Err(e) => panic!("{regexflag:?}: {e}"),
        }
    }

    #[test]
    fn flag_rewrites() {
        for (buggy, regexflag, input, expected) in [
            (false, &[][..], "\\Seen $A \\JUNK", "$A \\JUNK \\Seen"),
            // --filterbuggyflags: every listed name, any case, the rest kept
            (
                true,
                &[][..],
                "\\Seen \\RECEIPTCHECKED \\junk \\Indexed \\X-EON-HAS-ATTACHMENT $Label1",
                "$Label1 \\Seen",
            ),
            (
                true,
                &[][..],
                "\\Unseen \\Attached \\X-Has-Attach \\Forwarded \\Forward \\X-Forwarded",
                "",
            ),
            (
                true,
                &[][..],
                "\\$Forwarded \\Priority \\ReadRcpt \\Flagged",
                "\\Flagged",
            ),
            (
                true,
                &[][..],
                "$Forwarded \\Answered",
                "$Forwarded \\Answered",
            ),
            // --regexflag: in order, on the space-separated list
            (
                false,
                &["s/\\$Label1//g"][..],
                "$Label1 $Label2 \\Seen",
                "$Label2 \\Seen",
            ),
            (
                false,
                &["s/\\\\Flagged//g"][..],
                "\\flagged \\Seen",
                "\\Seen",
            ),
            (false, &["s/\\$A/\\$B/", "s/\\$B/\\$C/"][..], "$A", "$C"),
            // keep only the five RFC system flags (the reference's FAQ recipe, as a Perl s///)
            (
                false,
                &["s/(?:^| )(?!\\\\(?:Seen|Answered|Flagged|Deleted|Draft)\\b)\\S+//g"][..],
                "$A \\Seen $B \\Draft",
                "\\Draft \\Seen",
            ),
            // the result is parsed again: case-normalised, \Recent dropped
            (false, &["s/\\$X/\\\\SEEN \\\\Recent/"][..], "$X", "\\Seen"),
            // buggy filter runs before the user's rewrites
            (true, &["s/\\\\JUNK/\\$Junk/"][..], "\\JUNK", ""),
        ] {
            let got = rw(buggy, regexflag).apply(&fs(input));
            assert_eq!(
                got.to_canonical(),
                expected,
                "{buggy} {regexflag:?} {input}"
            );
        }
        assert!(rw(false, &[]).is_identity());
        assert!(FlagRewrite::new(false, &["m/x/".to_string()]).is_err());
        assert!(FlagRewrite::new(false, &["s/(/x/".to_string()]).is_err());
    }

    #[test]
    fn reconcile_targets() {
        let none = rw(false, &[]);
        let drop_label = rw(false, &["s/\\$Label1//g"]);
        // (base_old, base_new, old, new, rewrite, host1_wins, expected)
        for (base_old, base_new, old, new, rewrite, host1_wins, expected) in [
            // default: NEW's own change stays
            ("\\Seen", "\\Seen", "\\Seen", "", &none, false, ""),
            // --resyncflags: OLD wins
            ("\\Seen", "\\Seen", "\\Seen", "", &none, true, "\\Seen"),
            ("", "", "", "\\Flagged $K", &none, true, ""),
            // a flag the rewrite removes never reaches NEW, in either mode
            (
                "$Label1",
                "",
                "$Label1 \\Seen",
                "",
                &drop_label,
                false,
                "\\Seen",
            ),
            ("", "", "$Label1", "", &drop_label, false, ""),
            ("", "", "$Label1 \\Seen", "", &drop_label, true, "\\Seen"),
        ] {
            let got = reconcile_target(
                &fs(base_old),
                &fs(base_new),
                &fs(old),
                &fs(new),
                rewrite,
                host1_wins,
            );
            assert_eq!(
                got.to_canonical(),
                expected,
                "{base_old}|{base_new}|{old}|{new}|{host1_wins}"
            );
        }
    }
}
