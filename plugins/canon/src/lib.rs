//! The algorithms the gateway and its plugins must agree on, in one place:
//!
//! * [`digest`]: the pin digest of a tool definition, computed by the
//!   gateway's `portcullis policy pin` and checked by `schema-guard`;
//! * [`glob`]: the `*` globs of plugin interests (host), `open_methods` and
//!   rule selectors (SDK, `authz`, `cedar`) and `deny-tools` patterns.
//!
//! It is a member of the plugins workspace (compiled into the components)
//! and a path dependency of the gateway, so neither side can drift from
//! the other. It depends on `serde_json` and `sha2` only: no bindings.

#![warn(missing_docs)]

pub mod digest;
pub mod glob;

pub use glob::{Glob, glob_match};
