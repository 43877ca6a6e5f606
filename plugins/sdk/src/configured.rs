//! The shape every standard plugin has: parse the configuration once in
//! `init`, keep it for the instance, decide each message from it.
//!
//! A plugin implements [`ConfiguredPlugin`] and calls
//! [`export_plugin!`](crate::export_plugin) once; the macro writes the rest:
//!
//! * in the component (`wasm32`): the `init`/`handle` exports, with the
//!   parsed configuration in a `OnceLock` ([`init`], [`handle`]);
//! * natively: `pub fn native(config)`, the same decisions as a closure
//!   ([`native`]), for unit tests and the gateway's benchmark, which calls
//!   each plugin's logic next to its component.

use std::sync::OnceLock;

use crate::{Context, Interests, Verdict, codes, deny};

/// A plugin configured once by `init` and deciding every message from that
/// configuration. All associated functions: a plugin has no `self` (see the
/// crate documentation, "State").
pub trait ConfiguredPlugin {
    /// The plugin's name in its errors (`NAME: init called twice`).
    const NAME: &'static str;

    /// The validated configuration.
    type Config: Send + Sync + 'static;

    /// Parses and validates the configuration `init` receives (JSON text
    /// from the policy file). An error fails the policy load with its text.
    fn parse(config: &str) -> Result<Self::Config, String>;

    /// Logs what `init` configured. Called in the component only, after a
    /// successful [`ConfiguredPlugin::parse`]: host imports such as
    /// [`log_info`](crate::log_info) exist only there.
    fn announce(_config: &Self::Config) {}

    /// The messages this configuration needs to see.
    fn interests(config: &Self::Config) -> Interests;

    /// Decides one message. Must not call host imports when the plugin is
    /// used natively (through `native()`).
    fn decide(config: &Self::Config, ctx: &Context, message: &str) -> Verdict;
}

/// The component's `init`: parses, announces, keeps the configuration in
/// `cell` and returns its interests.
pub fn init<P: ConfiguredPlugin>(
    cell: &OnceLock<P::Config>,
    config: &str,
) -> Result<Interests, String> {
    let parsed = P::parse(config)?;
    P::announce(&parsed);
    let interests = P::interests(&parsed);
    cell.set(parsed)
        .map_err(|_| format!("{}: init called twice", P::NAME))?;
    Ok(interests)
}

/// The component's `handle`: decides with the configuration in `cell`, or
/// refuses when `init` has not run (unreachable with a conforming host).
pub fn handle<P: ConfiguredPlugin>(
    cell: &OnceLock<P::Config>,
    ctx: &Context,
    message: &str,
) -> Verdict {
    match cell.get() {
        Some(config) => P::decide(config, ctx, message),
        None => deny(
            codes::POLICY_DENIED,
            "Policy unavailable",
            format!("{}: not initialised", P::NAME),
        ),
    }
}

/// The plugin's decisions as plain Rust, configured from `config` (the same
/// JSON `init` takes).
pub fn native<P: ConfiguredPlugin>(
    config: &str,
) -> Result<impl Fn(&Context, &str) -> Verdict + use<P>, String> {
    let config = P::parse(config)?;
    Ok(move |ctx: &Context, message: &str| P::decide(&config, ctx, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, MessageKind, allow, testing};

    /// Counts its calls in the verdict; refuses configurations but "ok".
    struct Probe;

    impl ConfiguredPlugin for Probe {
        const NAME: &'static str = "probe";
        type Config = String;

        fn parse(config: &str) -> Result<String, String> {
            match config {
                "ok" => Ok(config.to_owned()),
                _ => Err(format!("probe: bad config {config:?}")),
            }
        }

        fn interests(_: &String) -> Interests {
            Interests::methods(["tools/call"])
        }

        fn decide(config: &String, _: &Context, message: &str) -> Verdict {
            allow()
                .with_label("config", config)
                .with_label("message", message)
        }
    }

    fn ctx() -> Context {
        testing::context(Direction::ToServer, MessageKind::Request, None, "u", &[])
    }

    #[test]
    fn init_keeps_the_configuration_once() {
        let cell = OnceLock::new();
        let v = handle::<Probe>(&cell, &ctx(), "m");
        assert_eq!(
            v.denial().map(|d| (d.code, d.private_reason.as_str())),
            Some((codes::POLICY_DENIED, "probe: not initialised"))
        );
        assert_eq!(
            init::<Probe>(&cell, "nope"),
            Err("probe: bad config \"nope\"".into())
        );
        assert!(cell.get().is_none());
        assert_eq!(
            init::<Probe>(&cell, "ok"),
            Ok(Interests::methods(["tools/call"]))
        );
        assert_eq!(
            init::<Probe>(&cell, "ok"),
            Err("probe: init called twice".into())
        );
        let v = handle::<Probe>(&cell, &ctx(), "m");
        assert_eq!(
            (v.label("config"), v.label("message")),
            (Some("ok"), Some("m"))
        );
    }

    #[test]
    fn native_decides_like_the_component() {
        assert!(native::<Probe>("nope").is_err());
        let decide = native::<Probe>("ok").unwrap();
        let v = decide(&ctx(), "m");
        assert_eq!(
            (v.label("config"), v.label("message")),
            (Some("ok"), Some("m"))
        );
    }
}
