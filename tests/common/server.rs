//! `ImapServer`: what seeding, snapshots and engine endpoints need from any harness server
//! (Dovecot, Courier): where it listens, how it names folders, and how to add an account.

use super::dovecot::Layout;

pub trait ImapServer {
    fn host(&self) -> &str;
    fn port(&self) -> u16;
    fn layout(&self) -> Layout;
    /// Adds (or replaces) a user that can log in with LOGIN at once.
    fn add_user(&self, name: &str, password: &str);

    fn sep(&self) -> char {
        self.layout().sep()
    }

    fn prefix(&self) -> &'static str {
        self.layout().prefix()
    }

    /// Server-side mailbox name of a layout-independent path such as "Projects/2024/Q1".
    fn mailbox_name(&self, path: &str) -> String {
        self.layout().server_name(path)
    }
}
