//! The user writes the proxy journals (DESIGN.md §2, dual write): what NEW accepted, in NEW's
//! folder names and UIDs, stored as JSON in the journal until the mirror has replayed it on OLD.
//! Pure data.

use serde::{Deserialize, Serialize};

/// One write NEW accepted. Folder names are NEW's raw (modified UTF-7) names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Write {
    /// STORE: `flags` were added, removed or (`replace`) set on these NEW UIDs (`None`: the
    /// command named sequence numbers or `*`, so every message of the folder is looked at).
    Flags {
        folder: String,
        uids: Option<Vec<u32>>,
        flags: Vec<String>,
        replace: bool,
    },
    /// EXPUNGE, UID EXPUNGE or CLOSE: whatever vanished from the NEW folder goes on OLD too.
    Expunge {
        folder: String,
    },
    /// COPY or MOVE, with NEW's COPYUID pairs (source UID, destination UID).
    Copy {
        from: String,
        to: String,
        uids: Vec<(u32, u32)>,
        moved: bool,
    },
    /// APPEND, with NEW's APPENDUID UIDs.
    Append {
        folder: String,
        uids: Vec<u32>,
    },
    Create {
        folder: String,
    },
    Delete {
        folder: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Subscribe {
        folder: String,
        subscribed: bool,
    },
}

impl Write {
    /// The journal's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Write::Flags { .. } => "flags",
            Write::Expunge { .. } => "expunge",
            Write::Copy { moved: false, .. } => "copy",
            Write::Copy { moved: true, .. } => "move",
            Write::Append { .. } => "append",
            Write::Create { .. } => "create",
            Write::Delete { .. } => "delete",
            Write::Rename { .. } => "rename",
            Write::Subscribe { .. } => "subscribe",
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<Write> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let writes = [
            Write::Flags {
                folder: "INBOX".into(),
                uids: Some(vec![1, 2]),
                flags: vec!["\\Seen".into(), "$Work".into()],
                replace: false,
            },
            Write::Copy {
                from: "INBOX".into(),
                to: "Archive/2024".into(),
                uids: vec![(4, 10), (5, 11)],
                moved: true,
            },
            Write::Rename {
                from: "a".into(),
                to: "&AOk-t&AOk-".into(),
            },
        ];
        for w in writes {
            let json = w.to_json();
            assert!(json.contains(&format!("\"kind\":\"{}\"", w.kind())) || w.kind() == "move");
            assert_eq!(Write::from_json(&json), Some(w));
        }
        assert_eq!(Write::from_json("{\"kind\":\"nonsense\"}"), None);
    }
}
