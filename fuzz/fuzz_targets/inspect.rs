//! Command lines (any bytes) through the proxy's command inspection: it must never panic, and a
//! LOGIN password must never show in `Debug` output.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapferry::proxy::inspect::fuzz_inspect(data);
});
