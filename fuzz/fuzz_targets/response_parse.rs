//! Server responses (any bytes) straight into the IMAP client's response parser, framed without
//! I/O (literals included): it must never panic or overflow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapferry::imap::parse_responses(data);
});
