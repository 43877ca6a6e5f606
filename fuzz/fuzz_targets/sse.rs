//! See `portcullis::fuzzing::sse` for the input format and the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = portcullis::fuzzing::sse(data) {
        panic!("sse: {v}");
    }
});
