//! See `portcullis::fuzzing::jsonrpc` for the input format and the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = portcullis::fuzzing::jsonrpc(data) {
        panic!("jsonrpc: {v}");
    }
});
