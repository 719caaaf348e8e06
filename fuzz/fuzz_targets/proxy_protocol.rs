//! Any bytes through the PROXY protocol v1/v2 parser: no panic, a complete header parses the
//! same from exactly its bytes, and a reader following `bytes_needed` never reads past it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapferry::proxy::proxy_protocol::fuzz_parse(data);
});
