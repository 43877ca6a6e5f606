"""Helpers for Portcullis policy plugins written in Python.

The same ideas as the Rust SDK (`plugins/sdk`): a plugin class with
`configure` (the `init` of `wit/policy.wit`, world `plugin`) and `decide`
(its `handle`), verdict helpers, annotations for the audit, interests, and
the host's imports. `portcullis plugin build` compiles a plugin with
componentize-py against this module and the WIT of the gateway that built it.

    import portcullis_policy as pp

    class NoDeletes(pp.Plugin):
        def configure(self, config: pp.Config) -> pp.Interests:
            self.prefix = config.string("prefix", default="delete_")
            return pp.Interests.methods(["tools/call"])

        def decide(self, ctx: pp.Context, msg: pp.Message) -> pp.Verdict:
            name = msg.tool_call_name() or ""
            if ctx.is_to_server() and name.startswith(self.prefix):
                return pp.deny(pp.INVALID_PARAMS, f"Unknown tool: {name}",
                               "delete tool").with_label("rule", "no-deletes")
            return pp.allow()

    Policy = pp.export(NoDeletes)   # componentize-py looks for `Policy`

(Over 400 lines on purpose: one module, so a plugin needs one import and
the build one extra path.)

Failing closed: an exception in `configure` refuses the policy load with
its message; an exception in `decide` (or a verdict this module cannot
lower) is logged with the plugin's name and then ends the call as a trap,
which the gateway treats like any plugin failure: the message is denied
unless the policy says `on_error = "allow"`.
"""

from __future__ import annotations

import json
import traceback
from typing import Any, Callable, Iterable, List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports import types as wit

SDK_VERSION = "0.1.0"

# JSON-RPC error codes for `deny`.
INVALID_PARAMS = -32602  # blocked tools look like unknown ones with this
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
POLICY_DENIED = -32001  # implementation-defined: "refused by policy"

TO_SERVER = wit.Direction.TO_SERVER
TO_CLIENT = wit.Direction.TO_CLIENT

_U64_MAX = 2**64 - 1
_S32 = range(-(2**31), 2**31)


class ConfigError(Exception):
    """Raised by `configure` (or `Config`) to refuse a configuration."""


# ---------------------------------------------------------------------------
# Verdicts


class Verdict:
    """A decision plus annotations for the audit (counts and labels)."""

    __slots__ = ("decision", "annotations")

    def __init__(self, decision: Any) -> None:
        self.decision = decision
        self.annotations: List[wit.Annotation] = []

    def with_count(self, key: str, n: int) -> "Verdict":
        """Adds a count (0 … 2**64-1), e.g. `hidden` = 3."""
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= _U64_MAX:
            raise ValueError(f"count {key!r} must be an integer in 0..2**64-1")
        self.annotations.append(wit.Annotation(str(key), wit.AnnotationValue_Count(n)))
        return self

    def with_label(self, key: str, value: str) -> "Verdict":
        """Adds a label: short, never a payload value (the audit keeps it)."""
        self.annotations.append(wit.Annotation(str(key), wit.AnnotationValue_Label(str(value))))
        return self

    def is_allow(self) -> bool:
        return isinstance(self.decision, wit.Decision_Allow)

    def denial(self) -> Optional[wit.Denial]:
        return self.decision.value if isinstance(self.decision, wit.Decision_Deny) else None

    def rewritten(self) -> Optional[str]:
        return self.decision.value if isinstance(self.decision, wit.Decision_Rewrite) else None

    def label(self, key: str) -> Optional[str]:
        for a in self.annotations:
            if a.key == key and isinstance(a.value, wit.AnnotationValue_Label):
                return a.value.value
        return None

    def count(self, key: str) -> Optional[int]:
        for a in self.annotations:
            if a.key == key and isinstance(a.value, wit.AnnotationValue_Count):
                return a.value.value
        return None

    def to_wit(self) -> wit.Verdict:
        return wit.Verdict(self.decision, list(self.annotations))


def allow() -> Verdict:
    """Lets the message through unchanged."""
    return Verdict(wit.Decision_Allow())


def rewrite(json_text: str) -> Verdict:
    """Replaces the message with `json_text`, a whole JSON-RPC message."""
    if not isinstance(json_text, str):
        raise TypeError("rewrite takes the JSON text of a whole JSON-RPC message")
    return Verdict(wit.Decision_Rewrite(json_text))


def rewrite_json(message: Any) -> Verdict:
    """Replaces the message with `message` (a dict), serialised to JSON."""
    return rewrite(to_json(message))


def deny(code: int, public_message: str, private_reason: str) -> Verdict:
    """Stops the message: the agent gets JSON-RPC error `code` with
    `public_message`; `private_reason` goes to the audit trail only."""
    if not isinstance(code, int) or code not in _S32:
        raise ValueError("a JSON-RPC error code is a 32-bit signed integer")
    return Verdict(wit.Decision_Deny(wit.Denial(code, str(public_message), str(private_reason))))


def to_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept, NaN and infinities refused."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# ---------------------------------------------------------------------------
# Interests


class Interests:
    """What the plugin wants to see; empty lists mean everything."""

    def __init__(self, methods: Iterable[str] = ()) -> None:
        self._methods = [str(m) for m in methods]
        self._directions: List[wit.Direction] = []
        self._to_client: List[str] = []

    @staticmethod
    def all() -> "Interests":
        return Interests()

    @staticmethod
    def methods(methods: Iterable[str]) -> "Interests":
        """Exact methods (`tools/call`) or prefix globs (`tools/*`)."""
        return Interests(methods)

    def directions(self, directions: Iterable[wit.Direction]) -> "Interests":
        self._directions = list(directions)
        return self

    def to_client_methods(self, methods: Iterable[str]) -> "Interests":
        """Replaces `methods` for messages going to the agent."""
        self._to_client = [str(m) for m in methods]
        return self

    def to_wit(self) -> wit.Interests:
        return wit.Interests(list(self._methods), list(self._directions), list(self._to_client))


# ---------------------------------------------------------------------------
# Context and messages


class Context:
    """The host's context record (`ctx.raw`) with helpers."""

    __slots__ = ("raw", "_claims")

    def __init__(self, raw: wit.Context) -> None:
        self.raw = raw
        self._claims: Optional[dict] = None

    def __getattr__(self, name: str) -> Any:
        # direction, tunnel, server, kind, method, target, request_id,
        # session_id, protocol_version, principal
        return getattr(self.raw, name)

    @property
    def subject(self) -> str:
        return self.raw.principal.subject

    @property
    def groups(self) -> List[str]:
        return list(self.raw.principal.groups)

    def is_to_server(self) -> bool:
        return self.raw.direction == TO_SERVER

    def is_to_client(self) -> bool:
        return self.raw.direction == TO_CLIENT

    def method_is(self, method: str) -> bool:
        return self.raw.method == method

    def is_tool_call(self) -> bool:
        return self.is_to_server() and self.raw.kind == wit.MessageKind.REQUEST and self.method_is("tools/call")

    def is_response_to(self, method: str) -> bool:
        return self.is_to_client() and self.raw.kind == wit.MessageKind.RESPONSE and self.method_is(method)

    def claims(self) -> dict:
        """The principal's allow-listed token claims (`{}` for an API key)."""
        if self._claims is None:
            parsed = json.loads(self.raw.principal.claims or "{}")
            self._claims = parsed if isinstance(parsed, dict) else {}
        return self._claims


class Message:
    """One JSON-RPC message, parsed (`msg.value` is the dict)."""

    __slots__ = ("text", "value")

    def __init__(self, text: str) -> None:
        self.text = text
        self.value: Any = json.loads(text)

    def _get(self, key: str) -> Any:
        return self.value.get(key) if isinstance(self.value, dict) else None

    def method(self) -> Optional[str]:
        m = self._get("method")
        return m if isinstance(m, str) else None

    def id(self) -> Any:
        return self._get("id")

    def params(self) -> Optional[dict]:
        p = self._get("params")
        return p if isinstance(p, dict) else None

    def result(self) -> Optional[dict]:
        r = self._get("result")
        return r if isinstance(r, dict) else None

    def error(self) -> Optional[dict]:
        e = self._get("error")
        return e if isinstance(e, dict) else None

    def tool_call_name(self) -> Optional[str]:
        """`params.name` of a `tools/call` request."""
        p = self.params()
        if self.method() != "tools/call" or p is None:
            return None
        n = p.get("name")
        return n if isinstance(n, str) else None

    def tool_call_arguments(self) -> Optional[dict]:
        """`params.arguments` of a `tools/call` (a dict you may edit, then
        `rewrite()`), or None when absent or not an object."""
        p = self.params()
        if self.method() != "tools/call" or p is None:
            return None
        a = p.get("arguments")
        return a if isinstance(a, dict) else None

    def content_texts(self) -> List[str]:
        """The `text` of every text part of a result's `content`."""
        r = self.result() or {}
        parts = r.get("content")
        if not isinstance(parts, list):
            return []
        return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]

    def for_each_content_text(self, f: Callable[[str], str]) -> int:
        """Replaces each text part of a result's `content` with `f(text)`;
        returns how many changed."""
        r = self.result() or {}
        parts = r.get("content")
        changed = 0
        for p in parts if isinstance(parts, list) else []:
            if isinstance(p, dict) and isinstance(p.get("text"), str):
                new = f(p["text"])
                if new != p["text"]:
                    p["text"] = new
                    changed += 1
        return changed

    def structured_content(self) -> Any:
        return (self.result() or {}).get("structuredContent")

    def listed_tools(self) -> Optional[list]:
        t = (self.result() or {}).get("tools")
        return t if isinstance(t, list) else None

    def rewrite(self) -> Verdict:
        """A rewrite to this message as edited."""
        return rewrite_json(self.value)


def glob_match(pattern: str, name: str) -> bool:
    """`*` matches any run of characters; everything else is literal and
    case-sensitive (as the gateway matches interests and tool names)."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return name == pattern
    first, last = pieces[0], pieces[-1]
    if not name.startswith(first) or len(name) < len(first) + len(last) or not name.endswith(last):
        return False
    at, end = len(first), len(name) - len(last)
    for piece in pieces[1:-1]:
        found = name.find(piece, at, end)
        if found < 0:
            return False
        at = found + len(piece)
    return True


# ---------------------------------------------------------------------------
# Configuration


class Config:
    """The plugin's configuration (a JSON object) read key by key; `done()`
    refuses keys nobody read, like serde's `deny_unknown_fields`."""

    _MISSING = object()

    def __init__(self, plugin: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise ConfigError(f"{plugin}: invalid config: expected an object")
        self.plugin = plugin
        self.value = value
        self._read: set = set()

    def _take(self, key: str, default: Any, kind: str, ok: Callable[[Any], bool]) -> Any:
        self._read.add(key)
        if key not in self.value:
            if default is Config._MISSING:
                raise ConfigError(f"{self.plugin}: invalid config: missing field `{key}`")
            return default
        v = self.value[key]
        if not ok(v):
            raise ConfigError(f"{self.plugin}: invalid config: `{key}` must be {kind}")
        return v

    def string(self, key: str, default: Any = _MISSING) -> str:
        return self._take(key, default, "a string", lambda v: isinstance(v, str))

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        return self._take(key, default, "true or false", lambda v: isinstance(v, bool))

    def integer(self, key: str, default: Any = _MISSING) -> int:
        return self._take(key, default, "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))

    def strings(self, key: str, default: Any = _MISSING) -> List[str]:
        return list(self._take(key, default, "a list of strings",
                               lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)))

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        return self._take(key, default, "present", lambda v: True)

    def done(self) -> None:
        unknown = sorted(set(self.value) - self._read)
        if unknown:
            raise ConfigError(f"{self.plugin}: invalid config: unknown field `{unknown[0]}`")


# ---------------------------------------------------------------------------
# Host imports


def log_debug(message: str) -> None:
    host.log(wit.LogLevel.DEBUG, str(message))


def log_info(message: str) -> None:
    host.log(wit.LogLevel.INFO, str(message))


def log_warn(message: str) -> None:
    host.log(wit.LogLevel.WARN, str(message))


def log_error(message: str) -> None:
    host.log(wit.LogLevel.ERROR, str(message))


def tool_definition_raw(server: str, tool: str) -> Optional[str]:
    """The catalog's `tools/list` entry for the tool, as JSON text."""
    return host.tool_definition(server, tool)


def tool_definition(server: str, tool: str) -> Optional[dict]:
    """The catalog's `tools/list` entry for the tool, parsed."""
    text = host.tool_definition(server, tool)
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def tool_revision(server: str, tool: str) -> Optional[int]:
    """Changes exactly when the tool's definition does."""
    return host.tool_revision(server, tool)


def now_unix_millis() -> int:
    """The gateway's wall clock, milliseconds since the Unix epoch."""
    return host.now_unix_millis()


# ---------------------------------------------------------------------------
# Export


class Plugin:
    """Subclass, implement `configure` and `decide`, then `export` it. One
    object per instance: attributes set in `configure` are the instance's
    state (the gateway runs several instances; none sees every message)."""

    name = "python-plugin"

    def configure(self, config: Config) -> Interests:
        config.done()
        return Interests.all()

    def decide(self, ctx: Context, msg: Message) -> Verdict:
        raise NotImplementedError("decide")


def export(cls: type) -> type:
    """The `Policy` class componentize-py exports, driving one `cls`."""
    state: dict = {}

    def failed(where: str, exc: BaseException) -> None:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        log_error(f"{cls.name}: {where} raised {type(exc).__name__}: {exc}")
        for line in "".join(lines).splitlines():
            log_debug(f"{cls.name}: {line}")

    class Policy(exports.Policy):
        def init(self, config: str) -> wit.Interests:
            try:
                plugin = cls()
                parsed = Config(cls.name, json.loads(config))
                interests = plugin.configure(parsed)
                if not isinstance(interests, Interests):
                    raise ConfigError(f"{cls.name}: configure must return Interests")
                state["plugin"] = plugin
                return interests.to_wit()
            except ConfigError as e:
                raise Err(str(e))
            except Exception as e:  # refuses the load, with the reason
                failed("configure", e)
                raise Err(f"{cls.name}: configure raised {type(e).__name__}: {e}")

        def handle(self, ctx: wit.Context, message: str) -> wit.Verdict:
            plugin = state.get("plugin")
            if plugin is None:
                raise RuntimeError(f"{cls.name}: handle before init")
            try:
                verdict = plugin.decide(Context(ctx), Message(message))
                if not isinstance(verdict, Verdict):
                    raise TypeError(f"decide returned {type(verdict).__name__}, not a Verdict")
                return verdict.to_wit()
            except Exception as e:
                failed("decide", e)
                raise  # a trap: the gateway fails closed

    return Policy
