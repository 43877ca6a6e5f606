"""Conformance peer: an MCP server for the official MCP conformance suite.

Portcullis' integration tests run `@modelcontextprotocol/conformance server`
against this server twice - directly, and through the Portcullis tunnel - and
fail when a scenario passes directly but not through the tunnel. So the server
exposes every fixture the suite's server scenarios look for (tools such as
`test_simple_text`, resources such as `test://static-text`, prompts such as
`test_simple_prompt`, ...) with the content those scenarios expect.

Built on the Python MCP SDK (`mcp` 2.x, `MCPServer`): Streamable HTTP at
`/mcp`, bound to 127.0.0.1 only, DNS-rebinding protection allowing loopback
Host/Origin values only. Both protocol eras are served by the SDK: the
2026-07-28 stateless wire (per-request `_meta`, `server/discover`,
`subscriptions/listen`, InputRequiredResult multi-round trips, caching hints,
sealed `requestState`) and the session-era `initialize` handshake with
server-to-client requests on the SSE stream.

The Tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) is not in the
SDK release, so a small in-memory implementation lives here (`TasksExtension`):
task-supporting tools run in the background and are polled with `tasks/get`,
fed client input with `tasks/update` and stopped with `tasks/cancel`.

Usage:
    python conformance_server.py --port 0

Once it accepts connections it prints exactly one line to stderr:
    PEER_LISTENING 127.0.0.1:<port>
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import secrets
import socket
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

import uvicorn
from mcp.server import ServerRequestContext
from mcp.server.caching import CacheHint
from mcp.server.context import CallNext, HandlerResult
from mcp.server.mcpserver import (
    Context,
    Extension,
    MCPServer,
    MethodBinding,
    RequestStateSecurity,
    require_client_extension,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Prompt, UserMessage
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.inbound import decode_header_value
from mcp.types import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    CallToolRequestParams,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    RequestParams,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

log = logging.getLogger("conformance_server")
# The session-era fixtures use logging on purpose; 2026-07-28 deprecates it (SEP-2577).
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

# A 1x1 PNG and a minimal WAV: the suite checks type, MIME type and that data is present.
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV_EMPTY = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="


class MemoryEventStore(EventStore):
    """Keeps every SSE event so a client can resume a stream with Last-Event-ID."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(len(self._events) + 1)
        self._events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((s for s, e, _ in self._events if e == last_event_id), None)
        if stream is None:
            return None
        after = int(last_event_id)
        for s, e, message in self._events:
            if s == stream and int(e) > after and message is not None:
                await send_callback(EventMessage(message, e))
        return stream


# --- input requests (2026-07-28 InputRequiredResult, also used by tasks) ------------------


def form(message: str, **fields: str) -> ElicitRequest:
    """An elicitation/create form request for the given `name=json-type` fields, all required."""
    schema = {"type": "object", "properties": {k: {"type": t} for k, t in fields.items()}, "required": list(fields)}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def ask_model(text: str, max_tokens: int = 100) -> CreateMessageRequest:
    """A sampling/createMessage request with one user message."""
    message = SamplingMessage(role="user", content=TextContent(type="text", text=text))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def answered(responses: Mapping[str, Any] | None, key: str, field: str) -> Any:
    """The `field` of an accepted elicitation answer under `key`, typed or raw JSON; else None."""
    answer = (responses or {}).get(key)
    if isinstance(answer, ElicitResult):
        return (answer.content or {}).get(field)
    if isinstance(answer, Mapping) and isinstance(answer.get("content"), Mapping):
        return answer["content"].get(field)
    return None


# --- Tasks extension (SEP-2663) ------------------------------------------------------------

TASKS = "io.modelcontextprotocol/tasks"
TASK_TTL_MS = 10 * 60 * 1000
TASK_POLL_MS = 200
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def _timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _wire(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


class TaskRun:
    """One task: its status and outcome, and the handle its work uses to ask the client for input."""

    def __init__(self) -> None:
        self.task_id = secrets.token_urlsafe(16)
        self.created_at = self.updated_at = _timestamp()
        self.expires_at = time.monotonic() + TASK_TTL_MS / 1000
        self.status = "working"
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.pending: dict[str, dict[str, Any]] = {}  # input requests the client has not answered yet
        self.answers: dict[str, Any] = {}
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def _set(self, status: str) -> None:
        self.status, self.updated_at = status, _timestamp()

    async def ask(self, requests: Mapping[str, InputRequest]) -> dict[str, Any]:
        """Park the task as input_required until every request is answered through tasks/update."""
        self.pending.update({key: _wire(request) for key, request in requests.items()})
        self._set("input_required")
        while not all(key in self.answers for key in requests):
            self._changed.clear()
            await self._changed.wait()
        if not self.pending:
            self._set("working")
        return {key: self.answers.pop(key) for key in requests}

    def answer(self, responses: Mapping[str, Any]) -> None:
        """Deliver tasks/update responses; keys the task never asked for are ignored."""
        for key, response in responses.items():
            if key in self.pending:
                del self.pending[key]
                self.answers[key] = response
        self._changed.set()

    def start(self, work: Awaitable[CallToolResult]) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._drive(work))

    async def _drive(self, work: Awaitable[CallToolResult]) -> None:
        try:
            result = await work
        except asyncio.CancelledError:
            self._set("cancelled")
        except MCPError as e:  # a protocol-level error: the task failed
            self.error = _wire(e.error)
            self._set("failed")
        except Exception as e:
            log.exception("task %s crashed", self.task_id)
            self.error = {"code": INTERNAL_ERROR, "message": f"{type(e).__name__}: {e}"}
            self._set("failed")
        else:  # a tool result, even one with isError: true, completes the task
            self.result = _wire(result)
            self._set("completed")

    def cancel(self) -> None:
        if self.status not in TERMINAL:
            self.pending.clear()
            self._set("cancelled")
            if self._runner is not None:
                self._runner.cancel()

    def envelope(self) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.updated_at,
            "ttlMs": TASK_TTL_MS,
            "pollIntervalMs": TASK_POLL_MS,
        }

    def detailed(self) -> dict[str, Any]:
        """The tasks/get DetailedTask: the envelope plus the outcome or the pending input requests."""
        task = self.envelope()
        if self.status == "completed":
            task["result"] = self.result
        elif self.status == "failed":
            task["error"] = self.error
        elif self.status == "input_required":
            task["inputRequests"] = dict(self.pending)
        return task


TaskWork = Callable[[dict[str, Any], CallToolRequestParams, TaskRun], Awaitable[CallToolResult]]


@dataclass
class TaskTool:
    work: TaskWork
    required: bool
    becomes_task: Callable[[CallToolRequestParams], bool]


class TaskIdParams(RequestParams):
    task_id: str = Field(alias="taskId")


class TaskUpdateParams(TaskIdParams):
    input_responses: dict[str, Any] = Field(alias="inputResponses")


class TasksExtension(Extension):
    """Server-directed tasks: a call to a task-supporting tool from a client that declared the
    extension returns a CreateTaskResult at once and runs the tool's work in the background."""

    identifier = TASKS

    def __init__(self) -> None:
        self._tools: dict[str, TaskTool] = {}
        self._runs: dict[str, TaskRun] = {}

    def task_tool(
        self,
        name: str,
        *,
        required: bool = False,
        becomes_task: Callable[[CallToolRequestParams], bool] = lambda _: True,
    ) -> Callable[[TaskWork], TaskWork]:
        """Register the background work of the tool `name`. A `required` tool refuses clients
        without the extension (-32021); an optional one then runs synchronously as a plain tool."""

        def register(work: TaskWork) -> TaskWork:
            self._tools[name] = TaskTool(work, required, becomes_task)
            return work

        return register

    def methods(self) -> list[MethodBinding]:
        modern = frozenset(MODERN_PROTOCOL_VERSIONS)
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get, protocol_versions=modern),
            MethodBinding("tasks/update", TaskUpdateParams, self._update, protocol_versions=modern),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel, protocol_versions=modern),
        ]

    @staticmethod
    def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
        caps = ctx.session.client_capabilities
        declared = bool(caps and caps.extensions and TASKS in caps.extensions)
        return declared and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        tool = self._tools.get(params.name)
        if tool is None:
            return await call_next(ctx)
        if not self._declared(ctx):
            if tool.required:
                require_client_extension(ctx, TASKS)  # raises -32021 naming the extension
            return await call_next(ctx)
        if not tool.becomes_task(params):
            return await call_next(ctx)
        self._purge()
        run = TaskRun()
        self._runs[run.task_id] = run  # stored before the reply, so an immediate tasks/get resolves
        run.start(tool.work(dict(params.arguments or {}), params, run))
        return {"resultType": "task", **run.envelope()}

    def _purge(self) -> None:
        now = time.monotonic()
        for task_id in [t for t, run in self._runs.items() if run.expires_at < now]:
            self._runs.pop(task_id).cancel()

    def _lookup(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> TaskRun:
        # SEP-2663 routes tasks/* by `Mcp-Name: <taskId>`; a header that disagrees with the body is refused.
        headers = getattr(ctx.request, "headers", None)
        routed = headers.get("mcp-name") if headers is not None else None
        if routed is not None and decode_header_value(routed.strip()) != params.task_id:
            raise MCPError(code=HEADER_MISMATCH, message="Mcp-Name header does not match params.taskId")
        require_client_extension(ctx, TASKS)
        self._purge()
        run = self._runs.get(params.task_id)
        if run is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown task: {params.task_id}")
        return run

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        return self._lookup(ctx, params).detailed()

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: TaskUpdateParams) -> EmptyResult:
        self._lookup(ctx, params).answer(params.input_responses)
        return EmptyResult(result_type="complete")

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> EmptyResult:
        self._lookup(ctx, params).cancel()  # cancelling a finished task is an idempotent no-op
        return EmptyResult(result_type="complete")


tasks = TasksExtension()


# --- the server ----------------------------------------------------------------------------

JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"
CONTACT_SCHEMA: dict[str, Any] = {
    "$schema": JSON_SCHEMA_2020_12,
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def json_schema_2020_12_tool(
    name: str | None = None,
    address: dict[str, Any] | None = None,
    contactMethod: str | None = None,
    phone: str | None = None,
    email: str | None = None,
) -> str:
    """Tool with JSON Schema 2020-12 features: its inputSchema keeps $schema, $defs/$anchor,
    allOf/anyOf, if/then/else and additionalProperties as written."""
    via = phone if contactMethod == "phone" else email
    return f"contact {name or '?'} via {contactMethod or 'email'}: {via}"


def test_simple_text() -> str:
    """Returns a fixed text content block."""
    return "This is a simple text response for testing."


def _contact_tool() -> Tool:
    tool = Tool.from_function(json_schema_2020_12_tool)
    tool.parameters = CONTACT_SCHEMA  # advertise the hand-written 2020-12 schema, not the derived one
    return tool


server = MCPServer(
    name="portcullis-conformance-peer",
    version="1.0.0",
    log_level="WARNING",
    # test_simple_text first: suites that call "the first listed tool" with `{}` (SEP-2243's
    # header checks) then call one for which `{}` is valid arguments.
    tools=[Tool.from_function(test_simple_text), _contact_tool()],
    extensions=[tasks],
    # A fixed key so sealed requestState survives a restart; a test fixture, not a secret.
    request_state_security=RequestStateSecurity(keys=[b"portcullis-conformance-peer-request-state-key"]),
    cache_hints={
        method: CacheHint(ttl_ms=0, scope="private")
        for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read")
    },
)


# --- tools: content ------------------------------------------------------------------------


@server.tool()
def test_image_content() -> list[ImageContent]:
    """Returns one PNG image content block."""
    return [ImageContent(type="image", data=PNG_1X1, mime_type="image/png")]


@server.tool()
def test_audio_content() -> list[AudioContent]:
    """Returns one WAV audio content block."""
    return [AudioContent(type="audio", data=WAV_EMPTY, mime_type="audio/wav")]


@server.tool()
def test_embedded_resource() -> list[EmbeddedResource]:
    """Returns one embedded text resource."""
    contents = TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return [EmbeddedResource(type="resource", resource=contents)]


@server.tool()
def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Returns text, image and embedded-resource content together."""
    contents = TextResourceContents(
        uri="test://mixed-content-resource", mime_type="application/json", text='{"test": "data", "value": 123}'
    )
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_1X1, mime_type="image/png"),
        EmbeddedResource(type="resource", resource=contents),
    ]


@server.tool()
def test_error_handling() -> str:
    """Always fails, so the result carries isError: true."""
    raise ToolError("This tool intentionally returns an error for testing")


@server.tool()
async def test_tool_with_progress(ctx: Context) -> str:
    """Sends progress 0, 50 and 100 of 100, then returns the request's progress token."""
    for step in (0, 50, 100):
        await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
        await asyncio.sleep(0.05)
    meta = ctx.request_context.meta
    return str(meta.get("progress_token", 0) if meta else 0)


@server.tool()
def test_x_mcp_header(
    region: Annotated[
        str,
        Field(description="Mirrored into the Mcp-Param-Region header", json_schema_extra={"x-mcp-header": "Region"}),
    ] = "<none>",
) -> str:
    """Echoes `region`, which clients mirror into an Mcp-Param-Region header (SEP-2243)."""
    return f"region={region}"


# --- tools: 2026-07-28 stateless-protocol probes ------------------------------------------


@server.tool()
async def test_missing_capability(ctx: Context) -> str:
    """Needs the client's sampling capability; without it fails with -32021."""
    caps = ctx.client_capabilities
    if caps is None or caps.sampling is None:
        raise MCPError(
            code=MISSING_REQUIRED_CLIENT_CAPABILITY,
            message="This tool requires the client 'sampling' capability",
            data={"requiredCapabilities": {"sampling": {}}},
        )
    return "Client declared the sampling capability."


@server.tool()
async def test_logging_tool(ctx: Context) -> str:
    """Logs once; the SDK drops the log unless the request's _meta opted into a log level."""
    await ctx.log("info", "test_logging_tool ran")  # pyright: ignore[reportDeprecated]
    return "logged"


@server.tool()
async def test_streaming_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Needs user input: asks with an InputRequiredResult, never with a request on the response stream."""
    if "user_name" in (ctx.input_responses or {}):
        return f"Hello, {answered(ctx.input_responses, 'user_name', 'name') or 'stranger'}!"
    return InputRequiredResult(input_requests={"user_name": form("What is your name?", name="string")})


def _scratch() -> str:
    """Added and removed again by the list-change trigger tools."""
    return "scratch"


@server.tool()
async def test_trigger_tool_change(ctx: Context) -> str:
    """Adds and removes a tool, then announces the change to subscriptions/listen streams."""
    server.add_tool(_scratch, name="test_scratch_tool")
    server.remove_tool("test_scratch_tool")
    await ctx.notify_tools_changed()
    return "tool list changed"


@server.tool()
async def test_trigger_prompt_change(ctx: Context) -> str:
    """Adds and removes a prompt, then announces the change to subscriptions/listen streams."""
    server.add_prompt(Prompt.from_function(_scratch, name="test_scratch_prompt", description="scratch"))
    server.remove_prompt("test_scratch_prompt")
    await ctx.notify_prompts_changed()
    return "prompt list changed"


# --- tools: InputRequiredResult multi-round trips (2026-07-28) ----------------------------


@server.tool()
async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Asks for the user's name with one elicitation input request, then greets them."""
    if "user_name" in (ctx.input_responses or {}):
        return f"Hello, {answered(ctx.input_responses, 'user_name', 'name') or 'stranger'}!"
    return InputRequiredResult(input_requests={"user_name": form("What is your name?", name="string")})


@server.tool()
async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Asks the client's model one question through a sampling input request."""
    answer = (ctx.input_responses or {}).get("capital_question")
    if answer is not None:
        text = answer.content.text if isinstance(answer, CreateMessageResult) and answer.content.type == "text" else "?"
        return f"Model said: {text}"
    return InputRequiredResult(input_requests={"capital_question": ask_model("What is the capital of France?")})


@server.tool()
async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Asks for the client's roots through a roots/list input request."""
    answer = (ctx.input_responses or {}).get("client_roots")
    if answer is not None:
        return f"Client exposed {len(answer.roots) if isinstance(answer, ListRootsResult) else 0} root(s)."
    return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})


@server.tool()
async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Round-trips requestState: answers only when the state it minted comes back."""
    if "confirm" in (ctx.input_responses or {}) and ctx.request_state == "request-state-nonce":
        return "state-ok: confirmation received"
    return InputRequiredResult(
        input_requests={"confirm": form("Please confirm", ok="boolean")}, request_state="request-state-nonce"
    )


@server.tool()
async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Asks for an elicitation, a sampling and a roots/list answer in one round."""
    if {"user_name", "greeting", "client_roots"} <= (ctx.input_responses or {}).keys():
        return "All inputs received."
    return InputRequiredResult(
        input_requests={
            "user_name": form("What is your name?", name="string"),
            "greeting": ask_model("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        },
        request_state="multiple-inputs",
    )


@server.tool()
async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Three rounds: name, then favourite colour, then the answer; requestState carries the round."""
    state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
    responses = ctx.input_responses or {}
    if state.get("round") == 1 and "step1" in responses:
        return InputRequiredResult(
            input_requests={"step2": form("Step 2: What is your favorite color?", color="string")},
            request_state=json.dumps({"round": 2, "name": answered(responses, "step1", "name")}),
        )
    if state.get("round") == 2 and "step2" in responses:
        return f"{state.get('name')} likes {answered(responses, 'step2', 'color')}."
    # First round, or a missing / out-of-order answer: (re)start at step 1.
    return InputRequiredResult(
        input_requests={"step1": form("Step 1: What is your name?", name="string")},
        request_state=json.dumps({"round": 1}),
    )


@server.tool()
async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """Mints requestState; the SDK's sealed-state boundary rejects a tampered echo before this runs."""
    if ctx.request_state is None:
        confirm = form("Please confirm", ok="boolean")
        return InputRequiredResult(input_requests={"confirm": confirm}, request_state="round-1")
    return f"state-ok: {ctx.request_state}"


@server.tool()
async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
    """Only asks for the input kinds (sampling, elicitation) the client declared."""
    caps = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if caps is None or caps.sampling is not None:
        requests["sample"] = ask_model("Say hello", 50)
    if caps is None or caps.elicitation is not None:
        requests["ask"] = form("What is your name?", name="string")
    return InputRequiredResult(input_requests=requests, request_state="capability-gated")


# --- tools: session era (server-to-client requests and logging on the open stream) --------


@server.tool()
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three log notifications while running."""
    for text in ("Tool execution started", "Tool processing data", "Tool execution completed"):
        await ctx.log("info", text)  # pyright: ignore[reportDeprecated]
        await asyncio.sleep(0.05)
    return "Tool with logging executed successfully"


@server.tool()
async def test_sampling(prompt: str, ctx: Context) -> str:
    """Asks the client's model (sampling/createMessage) and echoes its answer."""
    result = await ctx.session.create_message(  # pyright: ignore[reportDeprecated]
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
        max_tokens=100,
        related_request_id=ctx.request_id,
    )
    text = result.content.text if result.content.type == "text" else "No response"
    return f"LLM response: {text}"


async def elicit(ctx: Context, message: str, schema: dict[str, Any]) -> ElicitResult:
    return await ctx.session.elicit_form(  # pyright: ignore[reportDeprecated]
        message=message, requested_schema=schema, related_request_id=ctx.request_id
    )


@server.tool()
async def test_elicitation(message: str, ctx: Context) -> str:
    """Asks the user (elicitation/create) for a response string."""
    schema = {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"]}
    result = await elicit(ctx, message, schema)
    return f"User response: action={result.action}, content={json.dumps(result.content or {})}"


@server.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
    """Elicits a form whose every primitive field carries a default (SEP-1034)."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
            "verified": {"type": "boolean", "default": True},
        },
    }
    result = await elicit(ctx, "Please provide user information", schema)
    return f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"


@server.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> str:
    """Elicits a form with each enum flavour: plain, titled, legacy enumNames, multi-select (SEP-1330)."""
    options = [("value1", "First Option"), ("value2", "Second Option"), ("value3", "Third Option")]
    schema = {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {"type": "string", "oneOf": [{"const": v, "title": t} for v, t in options]},
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {"type": "array", "items": {"anyOf": [{"const": v, "title": t} for v, t in options]}},
        },
    }
    result = await elicit(ctx, "Please select values using different enum schema types", schema)
    return f"Elicitation completed: action={result.action}, content={json.dumps(result.content or {})}"


@server.tool()
async def test_reconnection(ctx: Context) -> str:
    """Closes its SSE stream mid-call; the answer arrives after the client resumes (SEP-1699)."""
    await ctx.log("info", "Before disconnect")  # pyright: ignore[reportDeprecated]
    await ctx.close_sse_stream()
    await asyncio.sleep(0.2)
    await ctx.log("info", "After reconnect")  # pyright: ignore[reportDeprecated]
    return "Reconnection test completed"


# --- tools: Tasks extension fixtures -------------------------------------------------------
#
# Each task-supporting tool is registered twice: as a plain tool (what tools/list shows, and
# the synchronous path for clients without the extension) and as the task's background work.


def text_result(text: str, *, is_error: bool = False) -> CallToolResult:
    """A task tool's result, shaped like its synchronous twin's: every tool here that returns
    `str` declares the SDK's `{"result": string}` outputSchema, so a complete result carries it
    as structuredContent too (MCP says a tool with an outputSchema MUST)."""
    structured = None if is_error else {"result": text}
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured, is_error=is_error)


@server.tool()
def greet(name: str) -> str:
    """Synchronous only: greets `name`."""
    return f"Hello, {name}!"


@server.tool()
async def slow_compute(seconds: float = 1.0, label: str = "") -> str:
    """Task-supporting: sleeps `seconds` seconds, then reports it."""
    await asyncio.sleep(min(max(seconds, 0.0), 300.0))
    return f"computed {label or 'result'} after {seconds}s"


@tasks.task_tool("slow_compute")
async def _slow_compute_task(args: dict[str, Any], _: CallToolRequestParams, run: TaskRun) -> CallToolResult:
    return text_result(await slow_compute(float(args.get("seconds", 1.0)), str(args.get("label", ""))))


@server.tool()
async def failing_job() -> str:
    """Task required: after about a second, fails with a tool execution error (isError: true)."""
    await asyncio.sleep(1)
    raise ToolError("failing_job failed, as it always does")


@tasks.task_tool("failing_job", required=True)
async def _failing_job_task(args: dict[str, Any], _: CallToolRequestParams, run: TaskRun) -> CallToolResult:
    await asyncio.sleep(1)
    return text_result("failing_job failed, as it always does", is_error=True)


@server.tool()
async def protocol_error_job() -> str:
    """Task-supporting: fails with a JSON-RPC internal error (a protocol error, not a tool error)."""
    raise MCPError(code=INTERNAL_ERROR, message="protocol_error_job hit an internal error")


@tasks.task_tool("protocol_error_job")
async def _protocol_error_task(args: dict[str, Any], _: CallToolRequestParams, run: TaskRun) -> CallToolResult:
    await asyncio.sleep(0.1)
    return text_result(await protocol_error_job())


def confirm_form(filename: str) -> ElicitRequest:
    return form(f"Delete {filename}?", confirm="boolean")


@server.tool()
async def confirm_delete(filename: str, ctx: Context) -> str | InputRequiredResult:
    """Task-supporting: asks the user to confirm, then reports whether `filename` was deleted."""
    if "confirm" not in (ctx.input_responses or {}):
        return InputRequiredResult(input_requests={"confirm": confirm_form(filename)})
    return f"{'deleted' if answered(ctx.input_responses, 'confirm', 'confirm') else 'kept'} {filename}"


@tasks.task_tool("confirm_delete")
async def _confirm_delete_task(args: dict[str, Any], _: CallToolRequestParams, run: TaskRun) -> CallToolResult:
    filename = str(args.get("filename", "?"))
    answers = await run.ask({"confirm": confirm_form(filename)})
    return text_result(f"{'deleted' if answered(answers, 'confirm', 'confirm') else 'kept'} {filename}")


MULTI_INPUT = {"first": "Name the first item", "second": "Name the second item"}


@server.tool()
async def multi_input(ctx: Context) -> str | InputRequiredResult:
    """Task-supporting: asks two questions at once, then reports both answers."""
    if not MULTI_INPUT.keys() <= (ctx.input_responses or {}).keys():
        return InputRequiredResult(input_requests={k: form(m, name="string") for k, m in MULTI_INPUT.items()})
    return ", ".join(f"{k}={answered(ctx.input_responses, k, 'name')}" for k in MULTI_INPUT)


@tasks.task_tool("multi_input")
async def _multi_input_task(args: dict[str, Any], _: CallToolRequestParams, run: TaskRun) -> CallToolResult:
    answers = await run.ask({k: form(m, name="string") for k, m in MULTI_INPUT.items()})
    return text_result(", ".join(f"{k}={answered(answers, k, 'name')}" for k in MULTI_INPUT))


@server.tool()
async def test_tool_with_task(ctx: Context) -> InputRequiredResult:
    """Task required: first asks for the user's name (InputRequiredResult); the call that
    answers becomes a task whose result greets the user."""
    return InputRequiredResult(input_requests={"user_name": form("What is your name?", name="string")})


@tasks.task_tool(
    "test_tool_with_task", required=True, becomes_task=lambda params: "user_name" in (params.input_responses or {})
)
async def _greeting_task(args: dict[str, Any], params: CallToolRequestParams, run: TaskRun) -> CallToolResult:
    await asyncio.sleep(0.1)
    return text_result(f"Hello, {answered(params.input_responses, 'user_name', 'name') or 'stranger'}!")


# --- resources -----------------------------------------------------------------------------


@server.resource("test://static-text", mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@server.resource("test://static-binary", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (a PNG image)."""
    return base64.b64decode(PNG_1X1)


@server.resource("test://template/{id}/data", mime_type="application/json")
def template_data(id: str) -> str:
    """A templated resource; the id is substituted into the JSON body."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@server.resource("test://watched-resource", mime_type="text/plain")
def watched() -> str:
    """A resource clients may subscribe to."""
    return "Watched resource content"


# --- prompts -------------------------------------------------------------------------------


@server.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A prompt without arguments."""
    return [UserMessage(content=TextContent(type="text", text="This is a simple prompt for testing."))]


@server.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
    """A prompt with two required arguments."""
    text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
    return [UserMessage(content=TextContent(type="text", text=text))]


@server.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
    """A prompt whose first message embeds the resource named by resourceUri."""
    text = "Embedded resource content for testing."
    contents = TextResourceContents(uri=resourceUri, mime_type="text/plain", text=text)
    return [
        UserMessage(content=EmbeddedResource(type="resource", resource=contents)),
        UserMessage(content=TextContent(type="text", text="Please process the embedded resource above.")),
    ]


@server.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt whose first message is an image."""
    return [
        UserMessage(content=ImageContent(type="image", data=PNG_1X1, mime_type="image/png")),
        UserMessage(content=TextContent(type="text", text="Please analyze the image above.")),
    ]


@server.prompt()
async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
    """prompts/get that first asks (InputRequiredResult) for the context to use."""
    if "user_context" in (ctx.input_responses or {}):
        text = answered(ctx.input_responses, "user_context", "context") or "?"
        return [UserMessage(content=TextContent(type="text", text=f"Use the following context: {text}"))]
    ask = form("What context should the prompt use?", context="string")
    return InputRequiredResult(input_requests={"user_context": ask})


# --- completion and session-era utility methods -------------------------------------------


@server.completion()
async def complete(
    ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, context: CompletionContext | None
) -> Completion:
    """No suggestions: the suite only checks the result's shape."""
    return Completion(values=[], total=0, has_more=False)


subscribed: set[str] = set()


async def set_logging_level(ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
    return EmptyResult()


async def subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
    subscribed.add(str(params.uri))
    return EmptyResult()


async def unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
    subscribed.discard(str(params.uri))
    return EmptyResult()


# MCPServer has no public hook for these session-era methods (the 2026-07-28 wire removed them;
# the SDK answers them with -32601 there), so they go on the low-level server.
for method, params_type, handler in (
    ("logging/setLevel", SetLevelRequestParams, set_logging_level),
    ("resources/subscribe", SubscribeRequestParams, subscribe),
    ("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe),
):
    server._lowlevel_server.add_request_handler(method, params_type, handler)  # pyright: ignore[reportPrivateUsage]


# --- HTTP ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 picks a free one)")
    args = parser.parse_args()

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        event_store=MemoryEventStore(),
        retry_interval=100,
        host="127.0.0.1",
        # Loopback only. The Portcullis tunnel forwards with Host: 127.0.0.1:<port>.
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        ),
    )

    # Bind before serving so the announced port is the real one, also with --port 0.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    http = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))

    async def serve() -> None:
        async def announce() -> None:
            while not http.started:
                if http.should_exit:
                    return
                await asyncio.sleep(0.01)
            print(f"PEER_LISTENING 127.0.0.1:{port}", file=sys.stderr, flush=True)

        announcer = asyncio.create_task(announce())
        try:
            await http.serve(sockets=[sock])
        finally:
            announcer.cancel()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
