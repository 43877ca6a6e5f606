//! See `portcullis::fuzzing::handshake` for the input format and the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = portcullis::fuzzing::handshake(data) {
        panic!("handshake: {v}");
    }
});
