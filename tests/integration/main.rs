//! Integration tests: real TLS, real tunnels, real MCP peers, all on loopback.

pub mod audit;
mod cli;
mod connections;
mod faults;
mod forwarding;
mod fuzz_corpus;
mod otel;
mod otlp;
mod overload;
mod peers;
mod perimeter;
mod plugins;
mod sessions;
mod support;
mod tunnel;
