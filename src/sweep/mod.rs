//! Background completion (DESIGN.md §1, issue 6): the sweeper brings accounts nobody opens up to
//! date through the same per-account migration state the proxy uses (one owner per folder), within
//! global rate ceilings and an optional daily window, and re-visits synced accounts.

mod control;
mod sweeper;

pub use control::{Control, SweepStats};
pub use sweeper::{Mode, run};
