//! Client commands or server responses (any bytes, any chunking) through the proxy's streaming
//! framer: output must reassemble to the input and not depend on chunking. The first byte picks
//! the chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&chunk, rest)) = data.split_first() {
        imapferry::imap::framer::fuzz_frame(rest, chunk as usize + 1);
    }
});
