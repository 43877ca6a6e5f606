//! `noop`: allows every message and wants to see all of them. The baseline for
//! benchmarking the plugin host's per-message overhead.

use portcullis_plugin_sdk::{ConfiguredPlugin, Context, Interests, Verdict, allow};

/// The plugin; its configuration is ignored.
pub struct Noop;

impl ConfiguredPlugin for Noop {
    const NAME: &'static str = "noop";
    type Config = ();

    fn parse(_config: &str) -> Result<(), String> {
        Ok(())
    }

    fn interests(_: &()) -> Interests {
        Interests::all()
    }

    fn decide(_: &(), _ctx: &Context, _message: &str) -> Verdict {
        allow()
    }
}

portcullis_plugin_sdk::export_plugin!(Noop);
