//! `noop`: allows every message and wants to see all of them. The baseline for
//! benchmarking the plugin host's per-message overhead.

use portcullis_plugin_sdk::{Context, Interests, Plugin, Verdict, allow};

struct Noop;

impl Plugin for Noop {
    fn init(_config: String) -> Result<Interests, String> {
        Ok(Interests::all())
    }

    fn handle(_ctx: Context, _message: String) -> Verdict {
        allow()
    }
}

portcullis_plugin_sdk::export_plugin!(Noop);
