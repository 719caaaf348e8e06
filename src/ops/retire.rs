//! When an account may be retired (DESIGN.md §1): the rule of `imapferry retire` and of `POST
//! /accounts/{user}/retire`. Pure: the caller applies the decision to the store.

use super::plural;
use crate::store::{AccountState, AccountSummary};

/// What retiring an account would do (DESIGN.md §1): the rule of `imapferry retire` and of
/// `POST /accounts/{user}/retire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetireDecision {
    /// Nothing to do.
    AlreadyRetired,
    /// Retire it. `reason` (recorded with the state) is set when `force` overrode `problems`.
    Retire {
        reason: Option<String>,
        problems: Vec<String>,
    },
    /// Not without force: why.
    Refused { problems: Vec<String> },
}

/// Retiring needs the account `synced` with an empty journal; `force` retires anyway and the
/// returned reason says from what.
pub fn retire_decision(account: &AccountSummary, force: bool) -> RetireDecision {
    if account.state == AccountState::Retired {
        return RetireDecision::AlreadyRetired;
    }
    let mut problems = Vec::new();
    if account.state != AccountState::Synced {
        problems.push(format!(
            "it is {} (folders synced {}/{}), not synced",
            account.state.as_str(),
            account.folders_synced,
            account.folders
        ));
    }
    if account.pending_journal > 0 {
        problems.push(format!(
            "{} journal {} not mirrored to OLD yet",
            account.pending_journal,
            plural(account.pending_journal, "entry is", "entries are")
        ));
    }
    if account.message_errors > 0 {
        problems.push(format!(
            "{} {} not copied (imapferry status {} lists {})",
            account.message_errors,
            plural(account.message_errors, "message was", "messages were"),
            account.key.new_user,
            plural(account.message_errors, "it", "them")
        ));
    }
    if problems.is_empty() {
        return RetireDecision::Retire {
            reason: None,
            problems,
        };
    }
    if !force {
        return RetireDecision::Refused { problems };
    }
    let mut reason = format!(
        "retired with --force from {} with {} pending journal {}",
        account.state.as_str(),
        account.pending_journal,
        plural(account.pending_journal, "entry", "entries"),
    );
    if account.message_errors > 0 {
        reason += &format!(
            " and {} {} not copied",
            account.message_errors,
            plural(account.message_errors, "message", "messages")
        );
    }
    RetireDecision::Retire {
        reason: Some(reason),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fixtures::summary;
    use AccountState::*;

    fn account(state: AccountState, journal: u64, errors: u64) -> AccountSummary {
        let mut a = summary(1, "joe", "joe", "old");
        (a.state, a.folders, a.folders_synced) = (state, 3, 2);
        (a.pending_journal, a.message_errors) = (journal, errors);
        a
    }

    #[test]
    fn retire_rule() {
        let refused = |problems: &[&str]| RetireDecision::Refused {
            problems: problems.iter().map(|p| p.to_string()).collect(),
        };
        let partial = "it is partial (folders synced 2/3), not synced";
        let failed = "it is failed (folders synced 2/3), not synced";
        // (state, journal entries, messages not copied, force, decision)
        let cases = [
            (Retired, 3, 0, false, RetireDecision::AlreadyRetired),
            (Retired, 0, 0, true, RetireDecision::AlreadyRetired),
            (
                Synced,
                0,
                0,
                false,
                RetireDecision::Retire {
                    reason: None,
                    problems: vec![],
                },
            ),
            (
                Synced,
                0,
                0,
                true,
                RetireDecision::Retire {
                    reason: None,
                    problems: vec![],
                },
            ),
            (
                Synced,
                1,
                0,
                false,
                refused(&["1 journal entry is not mirrored to OLD yet"]),
            ),
            (
                Partial,
                2,
                0,
                false,
                refused(&[partial, "2 journal entries are not mirrored to OLD yet"]),
            ),
            (
                Pending,
                0,
                0,
                false,
                refused(&["it is pending (folders synced 2/3), not synced"]),
            ),
            (Failed, 0, 0, false, refused(&[failed])),
            (
                Diverged,
                0,
                0,
                false,
                refused(&["it is diverged (folders synced 2/3), not synced"]),
            ),
            // A synced account with a message not copied is not done either.
            (
                Synced,
                0,
                2,
                false,
                refused(&["2 messages were not copied (imapferry status joe lists them)"]),
            ),
            (
                Synced,
                0,
                1,
                false,
                refused(&["1 message was not copied (imapferry status joe lists it)"]),
            ),
            (
                Failed,
                1,
                0,
                true,
                RetireDecision::Retire {
                    reason: Some(
                        "retired with --force from failed with 1 pending journal entry".into(),
                    ),
                    problems: vec![
                        failed.into(),
                        "1 journal entry is not mirrored to OLD yet".into(),
                    ],
                },
            ),
            (
                Synced,
                0,
                2,
                true,
                RetireDecision::Retire {
                    reason: Some(
                        "retired with --force from synced with 0 pending journal entries and 2 \
                         messages not copied"
                            .into(),
                    ),
                    problems: vec![
                        "2 messages were not copied (imapferry status joe lists them)".into(),
                    ],
                },
            ),
        ];
        for (state, journal, errors, force, expected) in cases {
            assert_eq!(
                retire_decision(&account(state, journal, errors), force),
                expected,
                "{state:?} journal {journal} errors {errors} force {force}"
            );
        }
    }
}
