//! Any bytes as an imapsync loop file: never a panic, one result per line, and an account's
//! fields come from its own line (see `loopfile::fuzz_parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapferry::loopfile::fuzz_parse(data);
});
