//! The engine: for each folder pair, plan what changed, adopt copies already on NEW, copy the rest
//! (pipelined), merge flags three ways against the stored base, and propagate deletions. Used by the
//! sync command (and later the proxy and the sweeper); it never imports them.

pub mod flags;
pub mod identity;
