//! See `portcullis::fuzzing::event_id` for the input format and the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = portcullis::fuzzing::event_id(data) {
        panic!("event_id: {v}");
    }
});
