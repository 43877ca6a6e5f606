//! Integration tests: real TLS, real tunnels, real MCP peers, all on loopback.

// A build script and test harnesses fail by panicking: the crate's panic
// lints (Cargo.toml `[lints]`) are for the code that serves traffic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod audit;
mod cli;
mod connections;
mod deploy;
mod detectors;
mod direct;
mod discovery;
mod encodings;
mod faults;
mod forwarding;
mod fuzz_corpus;
mod layers;
mod names;
mod oauth;
mod otel;
mod otlp;
mod overload;
mod peers;
mod perimeter;
mod plugins;
mod python;
mod rego;
mod replay;
mod replicas;
mod rolling;
mod sessions;
mod support;
mod tunnel;
