//! Unit tests, run natively with `cargo test` (no host imports are called).
