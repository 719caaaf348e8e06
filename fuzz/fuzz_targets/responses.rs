//! Server responses (any bytes, any chunking) through the client's streaming reader and parser:
//! they must never panic or hang. The first byte picks the chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&chunk, rest)) = data.split_first() {
        imapferry::imap::parse_stream(rest, chunk as usize + 1);
    }
});
