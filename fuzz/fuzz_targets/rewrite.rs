//! See `portcullis::fuzzing::rewrite` for the input format and the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = portcullis::fuzzing::rewrite(data) {
        panic!("rewrite: {v}");
    }
});
