//! Which accounts a name typed by an operator means (`imapferry status USER`, `retire USER`,
//! `/accounts/{user}`), and how an account's OLD login is written.

use crate::store::AccountSummary;

/// The accounts USER names: by NEW user; if none, by NEW user ignoring case (account names are
/// normalised logins, lower case by default); if none, by OLD user; if none, by OLD `user@host`.
pub(crate) fn find_user<'a>(accounts: &'a [AccountSummary], user: &str) -> Vec<&'a AccountSummary> {
    let by = |f: &dyn Fn(&AccountSummary) -> bool| -> Vec<&'a AccountSummary> {
        accounts.iter().filter(|a| f(a)).collect()
    };
    let found = by(&|a| a.key.new_user == user);
    if !found.is_empty() {
        return found;
    }
    let lower = user.to_lowercase();
    let found = by(&|a| a.key.new_user.to_lowercase() == lower);
    if !found.is_empty() {
        return found;
    }
    let found = by(&|a| a.key.old_user == user);
    if !found.is_empty() {
        return found;
    }
    by(&|a| old_login(a) == user)
}

/// OLD `user@host`, as `imapferry status` shows it.
pub(crate) fn old_login(a: &AccountSummary) -> String {
    format!("{}@{}", a.key.old_user, a.key.old_host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fixtures::summary;

    #[test]
    fn user_matching() {
        let accounts = [
            summary(1, "joe", "joseph", "old1"),
            summary(2, "joseph", "jo", "old1"),
            summary(3, "ann", "ann", "old1"),
            summary(4, "ann", "ann", "old2"),
        ];
        // (USER, expected ids)
        let cases: [(&str, &[i64]); 8] = [
            ("joe", &[1]),
            ("JOE", &[1]), // account names are normalised logins
            ("Joseph", &[2]),
            ("joseph", &[2]), // NEW user first
            ("jo", &[2]),     // then OLD user
            ("ann", &[3, 4]),
            ("ann@old2", &[4]), // then OLD user@host
            ("nobody", &[]),
        ];
        for (user, ids) in cases {
            let got: Vec<i64> = find_user(&accounts, user).iter().map(|a| a.id).collect();
            assert_eq!(got, ids, "{user}");
        }
    }

    #[test]
    fn old_logins() {
        assert_eq!(
            old_login(&summary(1, "joe", "jo", "old.example")),
            "jo@old.example"
        );
    }
}
