#!/usr/bin/env python3
"""Minimal MCP client built on the official Python SDK (mcp 2.x), for interop tests.

Connects over Streamable HTTP, runs the classic handshake (initialize +
notifications/initialized), lists tools, calls one tool and prints exactly one
JSON line to stdout:

    {"protocol_version": "...", "server_info": {...}, "tools": [...], "result": {...}}

`result` is the CallToolResult dumped close to wire form (model_dump with
mode='json', by_alias=True, exclude_unset=True: camelCase keys, no SDK-added
defaults), e.g. {"content": [{"type": "text", "text": "Echo: hi"}]}. A tool
result with isError=true is still printed and exits 0; transport/protocol
failures print "py_client: error: ..." to stderr and exit 1.

Usage (run with target/peers/venv/bin/python):
    py_client.py --url http://127.0.0.1:PORT/mcp [--token TOKEN] \
                 [--tool echo] [--args '{"message": "hi"}'] [--timeout 30]
Without --tool only initialize + tools/list are done ("result": null).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

import anyio

try:  # mcp 2.x
    from mcp.client.streamable_http import streamable_http_client as _sh_client
    from mcp.shared._httpx_utils import create_mcp_http_client
except ImportError:  # pragma: no cover - mcp 1.x fallback
    _sh_client = None
from mcp.client.session import ClientSession


_HTTP_ERRORS: list[str] = []  # non-2xx responses seen, to make errors readable


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _attr(obj: Any, new: str, old: str) -> Any:
    return getattr(obj, new) if hasattr(obj, new) else getattr(obj, old)


def _flatten(exc: BaseException) -> str:
    """Readable message, unwrapping anyio/asyncio exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_flatten(e) for e in exc.exceptions)
    msg = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {msg}"


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    tool_args = json.loads(args.args) if args.args else {}
    if not isinstance(tool_args, dict):
        raise ValueError("--args must be a JSON object")

    with anyio.fail_after(args.timeout):
        async with contextlib.AsyncExitStack() as stack:
            if _sh_client is not None:
                http = await stack.enter_async_context(create_mcp_http_client(headers=headers))

                async def _note_status(response: Any) -> None:
                    if response.status_code >= 400:
                        _HTTP_ERRORS.append(
                            f"HTTP {response.status_code} on {response.request.method} {response.request.url}"
                        )

                http.event_hooks["response"].append(_note_status)
                streams = await stack.enter_async_context(_sh_client(args.url, http_client=http))
            else:  # mcp 1.x
                from mcp.client.streamable_http import streamablehttp_client

                streams = await stack.enter_async_context(streamablehttp_client(args.url, headers=headers))
            kwargs: dict[str, Any] = {}
            if args.sampling_reply is not None:
                from mcp import types

                async def _sample(context: Any, params: Any) -> Any:
                    # Answers the server's sampling/createMessage request; the
                    # reply travels back up through whatever sits in between.
                    return types.CreateMessageResult(
                        role="assistant",
                        content=types.TextContent(type="text", text=args.sampling_reply),
                        model="py-client-test",
                        stop_reason="endTurn",
                    )

                kwargs["sampling_callback"] = _sample
            session = await stack.enter_async_context(ClientSession(streams[0], streams[1], **kwargs))
            init = await session.initialize()
            tools = await session.list_tools()
            out: dict[str, Any] = {
                "protocol_version": _attr(init, "protocol_version", "protocolVersion"),
                "server_info": _dump(_attr(init, "server_info", "serverInfo")),
                "tools": [t.name for t in tools.tools],
                "result": None,
            }
            if args.tool:
                out["result"] = _dump(await session.call_tool(args.tool, tool_args))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="Streamable HTTP endpoint, e.g. http://127.0.0.1:8080/mcp")
    p.add_argument("--token", help="bearer token, sent as 'Authorization: Bearer TOKEN'")
    p.add_argument("--tool", help="tool to call after tools/list")
    p.add_argument("--args", default="{}", help="tool arguments as a JSON object (default {})")
    p.add_argument(
        "--sampling-reply",
        help="advertise sampling and answer every sampling/createMessage request with this text",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="overall timeout in seconds (default 30)")
    args = p.parse_args()
    try:
        out = anyio.run(_run, args)
    except TimeoutError:
        print(f"py_client: error: timed out after {args.timeout}s talking to {args.url}", file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - report anything readable, incl. groups
        if isinstance(exc, KeyboardInterrupt):
            raise
        extra = f" (last: {_HTTP_ERRORS[-1]})" if _HTTP_ERRORS else ""
        print(f"py_client: error: {_flatten(exc)}{extra}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
