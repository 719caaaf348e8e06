//! Which OLD messages a pass copies: imapsync's `--search`, `--maxage`/`--minage` (SENTSINCE /
//! SENTBEFORE, at day granularity) and `--maxsize`/`--minsize`, turned into IMAP SEARCH criteria.
//! Pure functions with table tests.

use chrono::{DateTime, Duration, Local};

/// Message selection options of a pass. `Default` selects everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageSelection {
    /// Raw SEARCH criteria for OLD; when set, `maxage`/`minage` are ignored (as imapsync does).
    pub search: Option<String>,
    /// Days: only messages sent since then.
    pub maxage: Option<f64>,
    /// Days: only messages sent before then.
    pub minage: Option<f64>,
    /// Skip messages larger than this (bytes).
    pub maxsize: Option<u64>,
    /// Skip messages of this size or smaller (bytes).
    pub minsize: Option<u64>,
}

impl MessageSelection {
    pub fn is_all(&self) -> bool {
        self == &MessageSelection::default()
    }

    /// True when the selected set can change without anything changing on OLD (a message ageing
    /// into a `--minage` window, or criteria that depend on dates): such passes cannot be skipped.
    pub fn depends_on_time(&self) -> bool {
        self.search.is_some() || self.minage.is_some()
    }

    /// The criteria selecting by search or age, or `None` for every message.
    pub fn base(&self, now: DateTime<Local>) -> Option<String> {
        if let Some(s) = &self.search {
            return Some(s.clone());
        }
        let day = |days: f64| imap_date(now - Duration::seconds((days * 86_400.0) as i64));
        match (self.maxage, self.minage) {
            (None, None) => None,
            (Some(max), None) => Some(format!("SENTSINCE {}", day(max))),
            (None, Some(min)) => Some(format!("SENTBEFORE {}", day(min))),
            // imapsync: a window when minage <= maxage, otherwise either side of it.
            (Some(max), Some(min)) if min <= max => {
                Some(format!("SENTSINCE {} SENTBEFORE {}", day(max), day(min)))
            }
            (Some(max), Some(min)) => {
                Some(format!("OR SENTSINCE {} SENTBEFORE {}", day(max), day(min)))
            }
        }
    }

    /// The size criteria alone, or `None` without size limits.
    pub fn size(&self) -> Option<String> {
        let parts: Vec<String> = [
            self.maxsize.map(|m| format!("NOT LARGER {m}")),
            self.minsize.map(|m| format!("LARGER {m}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// `1-Feb-2024`: the RFC 3501 date of SEARCH.
fn imap_date(t: DateTime<Local>) -> String {
    t.format("%-d-%b-%Y").to_string()
}

/// Joins criteria (an implicit AND); `ALL` when there are none.
pub fn and(parts: &[Option<String>]) -> String {
    let present: Vec<&str> = parts.iter().flatten().map(String::as_str).collect();
    if present.is_empty() {
        "ALL".to_string()
    } else {
        present.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn criteria_table() {
        let now = Local.with_ymd_and_hms(2024, 3, 10, 12, 0, 0).unwrap();
        let sel = |search: Option<&str>, maxage, minage| MessageSelection {
            search: search.map(str::to_string),
            maxage,
            minage,
            ..Default::default()
        };
        for (selection, expected) in [
            (sel(None, None, None), None),
            (sel(None, Some(1.0), None), Some("SENTSINCE 9-Mar-2024")),
            (sel(None, None, Some(365.0)), Some("SENTBEFORE 11-Mar-2023")),
            (
                sel(None, Some(30.0), Some(7.0)),
                Some("SENTSINCE 9-Feb-2024 SENTBEFORE 3-Mar-2024"),
            ),
            (
                sel(None, Some(7.0), Some(30.0)),
                Some("OR SENTSINCE 3-Mar-2024 SENTBEFORE 9-Feb-2024"),
            ),
            (sel(Some("FROM joe"), Some(1.0), None), Some("FROM joe")),
        ] {
            assert_eq!(selection.base(now).as_deref(), expected, "{selection:?}");
        }
    }

    #[test]
    fn sizes_and_joining() {
        let s = MessageSelection {
            maxsize: Some(1000),
            minsize: Some(10),
            ..Default::default()
        };
        assert_eq!(s.size().as_deref(), Some("NOT LARGER 1000 LARGER 10"));
        assert_eq!(MessageSelection::default().size(), None);
        assert_eq!(and(&[None, None]), "ALL");
        assert_eq!(
            and(&[Some("SENTSINCE 1-Jan-2024".into()), s.size()]),
            "SENTSINCE 1-Jan-2024 NOT LARGER 1000 LARGER 10"
        );
        assert!(MessageSelection::default().is_all());
        assert!(!s.is_all());
        assert!(
            MessageSelection {
                minage: Some(1.0),
                ..Default::default()
            }
            .depends_on_time()
        );
        assert!(
            !MessageSelection {
                maxage: Some(1.0),
                ..Default::default()
            }
            .depends_on_time()
        );
    }
}
