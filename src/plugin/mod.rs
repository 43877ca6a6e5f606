//! The WebAssembly plugin host: wasmtime with the component model.
//!
//! The one `bindgen!` of the project lives here, and wasmtime's types stay in
//! this module: the rest of the gateway speaks [`crate::mcp::context`] and
//! [`crate::policy::verdict`], the chain's contract, whose
//! [`Evaluate`](crate::policy::verdict::Evaluate) a [`LoadedPlugin`]
//! implements.
//!
//! - [`engine`]: the shared engine (pooling allocator, epoch interruption, an
//!   epoch ticker thread) and compilation with an on-disk artifact cache.
//! - [`cache`]: that cache's directory and files, used only when owned by
//!   this user and writable by no one else (artifacts are native code).
//! - [`host`]: per-instance state, the `host` imports, WASI with nothing in
//!   it, and plugin stdout/stderr to the log.
//! - [`instance`]: a loaded plugin: `InstancePre`, a pool of initialised
//!   instances, the deadline and memory cap per call, fail-closed outcomes.

pub mod cache;
pub mod engine;
pub mod host;
pub mod instance;

pub use engine::PluginEngine;
pub use instance::{LoadedPlugin, PluginLimits};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "plugin",
        exports: { default: async },
        // The context is lowered straight from the gateway's own strings:
        // no copy of each field per plugin call.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use crate::mcp::{Direction, Kind, MessageContext};
use crate::policy::verdict as v;
use bindings::portcullis::policy::types as w;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin '{name}': cannot read {path}: {reason}")]
    Read {
        name: String,
        path: String,
        reason: String,
    },
    #[error("plugin '{name}' is not a valid component: {reason}")]
    Compile { name: String, reason: String },
    #[error("plugin '{name}' cannot be instantiated: {reason}")]
    Instantiate { name: String, reason: String },
    #[error("plugin '{name}' refused its configuration: {reason}")]
    Init { name: String, reason: String },
    #[error("plugin engine: {0}")]
    Engine(String),
}

fn direction_to_wit(d: Direction) -> w::Direction {
    match d {
        Direction::ToServer => w::Direction::ToServer,
        Direction::ToClient => w::Direction::ToClient,
    }
}

fn direction_from_wit(d: w::Direction) -> Direction {
    match d {
        w::Direction::ToServer => Direction::ToServer,
        w::Direction::ToClient => Direction::ToClient,
    }
}

/// The context as the bindings lower it, borrowing the gateway's strings;
/// `groups` is the principal's groups as `&str`s (the bindings take a slice
/// of them), `claims` its claims as JSON object text
/// ([`crate::principal::Principal::claims_json`]).
fn context_to_wit<'a>(
    c: &'a MessageContext,
    groups: &'a [&'a str],
    claims: &'a str,
) -> w::Context<'a> {
    w::Context {
        direction: direction_to_wit(c.direction),
        tunnel: &c.tunnel,
        server: &c.server,
        kind: match c.kind {
            Kind::Request => w::MessageKind::Request,
            Kind::Notification => w::MessageKind::Notification,
            Kind::Response => w::MessageKind::Response,
            Kind::Error => w::MessageKind::Error,
        },
        method: c.method.as_deref(),
        target: c.target.as_deref(),
        request_id: c.request_id.as_deref(),
        session_id: c.session_id.as_deref(),
        protocol_version: c.protocol_version.as_deref(),
        principal: w::Principal {
            subject: &c.principal.subject,
            groups,
            claims,
        },
    }
}

fn verdict_from_wit(vd: w::Verdict) -> v::Verdict {
    v::Verdict {
        decision: match vd.decision {
            w::Decision::Allow => v::Decision::Allow,
            w::Decision::Rewrite(s) => v::Decision::Rewrite(s),
            w::Decision::Deny(d) => v::Decision::Deny(v::Denial {
                code: d.code,
                public_message: d.public_message,
                private_reason: d.private_reason,
            }),
        },
        annotations: vd
            .annotations
            .into_iter()
            .map(|a| v::Annotation {
                key: a.key,
                value: match a.value {
                    w::AnnotationValue::Count(n) => v::AnnotationValue::Count(n),
                    w::AnnotationValue::Label(s) => v::AnnotationValue::Label(s),
                },
            })
            .collect(),
    }
}

fn interests_from_wit(i: w::Interests) -> v::Interests {
    v::Interests {
        methods: i.methods,
        directions: i.directions.into_iter().map(direction_from_wit).collect(),
        to_client_methods: i.to_client_methods,
    }
}

mod builtins {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

pub use builtins::BUILTINS;

/// The bytes of a plugin compiled into the binary (`builtin:NAME`).
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
