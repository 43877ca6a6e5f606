"""change-control: tools that change things need a change ticket.

A security team's rule for production MCP servers: an agent may call a
read-only tool freely, but a tool that writes needs an approved change
ticket named in the call (argument `change_ticket`, `CHG-` and six digits
by default). The ticket is recorded in the audit trail and removed from the
arguments before the call reaches the server, whose schema does not know
it. Members of a break-glass group may write without one, and the audit
says so.

Which tools write is read from the upstream's own tool definitions (the
gateway's catalog): a tool is read-only only when its definition says
`annotations.readOnlyHint: true`. A tool the catalog does not know, or one
that does not say, is treated as a write tool: deny by default.

Configuration (all optional):
    ticket_argument = "change_ticket"
    ticket_pattern  = "^CHG-[0-9]{6}$"
    break_glass_groups = ["incident-commander"]
    always_write = ["delete_*"]   # write tools whatever their hints say
"""

import re

import portcullis_policy as pp


class ChangeControl(pp.Plugin):
    name = "change-control"

    def configure(self, config: pp.Config) -> pp.Interests:
        self.argument = config.string("ticket_argument", default="change_ticket")
        pattern = config.string("ticket_pattern", default=r"^CHG-[0-9]{6}$")
        try:
            self.ticket = re.compile(pattern)
        except re.error as e:
            raise pp.ConfigError(f"{self.name}: invalid config: ticket_pattern: {e}")
        self.break_glass = set(config.strings("break_glass_groups", default=[]))
        self.always_write = config.strings("always_write", default=[])
        config.done()
        # Only calls going in: results are none of this plugin's business.
        return pp.Interests.methods(["tools/call"]).directions([pp.TO_SERVER])

    def writes(self, server: str, tool: str) -> bool:
        if any(pp.glob_match(p, tool) for p in self.always_write):
            return True
        definition = pp.tool_definition(server, tool) or {}
        hints = definition.get("annotations")
        return not (isinstance(hints, dict) and hints.get("readOnlyHint") is True)

    def decide(self, ctx: pp.Context, msg: pp.Message) -> pp.Verdict:
        tool = msg.tool_call_name()
        if not ctx.is_tool_call() or tool is None:
            return pp.allow()
        if not self.writes(ctx.server, tool):
            return pp.allow().with_label("access", "read")
        args = msg.tool_call_arguments()
        ticket = args.get(self.argument) if args is not None else None
        if ticket is None:
            if self.break_glass & set(ctx.groups):
                return pp.allow().with_label("access", "write").with_label("change", "break-glass")
            return pp.deny(
                pp.POLICY_DENIED,
                f"{tool} changes things: name an approved change ticket in `{self.argument}`",
                f"write tool {tool} called without a change ticket",
            ).with_label("change", "missing")
        if not isinstance(ticket, str) or not self.ticket.fullmatch(ticket):
            return pp.deny(
                pp.POLICY_DENIED,
                f"`{self.argument}` is not a change ticket",
                f"write tool {tool} called with a malformed change ticket",
            ).with_label("change", "malformed")
        del args[self.argument]
        return msg.rewrite().with_label("access", "write").with_label("change", ticket)


Policy = pp.export(ChangeControl)
