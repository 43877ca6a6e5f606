"""__NAME__: a Portcullis policy plugin in Python.

Refuses the tools named in its configuration (`deny`, `*` globs) as if they
did not exist, and lets everything else through. Edit `decide` to make it
yours; `portcullis plugin build .` rebuilds it and
`portcullis policy test policy.toml` runs the cases in policy.cases.toml.

The helper module, portcullis_policy, is in .portcullis/sdk/ (written by
`plugin new` and refreshed by every `plugin build`).
"""

import portcullis_policy as pp


class Plugin(pp.Plugin):
    name = "__NAME__"

    def configure(self, config: pp.Config) -> pp.Interests:
        self.deny = config.strings("deny", default=[])
        config.done()  # unknown keys refuse the policy load
        return pp.Interests.methods(["tools/call"]).directions([pp.TO_SERVER])

    def decide(self, ctx: pp.Context, msg: pp.Message) -> pp.Verdict:
        tool = msg.tool_call_name()
        if tool is not None and any(pp.glob_match(p, tool) for p in self.deny):
            return pp.deny(
                pp.INVALID_PARAMS,
                f"Unknown tool: {tool}",  # what the agent sees
                f"{tool} is refused by __NAME__",  # what the audit keeps
            ).with_label("rule", "deny")
        return pp.allow()


Policy = pp.export(Plugin)
