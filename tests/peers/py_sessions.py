#!/usr/bin/env python3
"""MCP sessions under load, on the official Python SDK (mcp 2.x), for the
rolling-restart test.

Runs --sessions workers at once. Each opens a session (initialize), calls
--tool over and over, and when the session ends opens a new one, until
--stop-file exists. Every call has --call-timeout seconds. A session ends
because the server said it is gone (HTTP 404, JSON-RPC -32001 or the SDK's
"Session terminated": "expired"), because a call failed otherwise
("failed"), because a call took too long ("hung"), or because the run
stopped ("stopped"). Prints one JSON line when done:

    {"sessions": [{"worker": 0, "id": "...", "ok": 12, "ended": "expired",
                   "at": 1796209555.3, "error": null}, ...]}

`at` is when the session ended (seconds since the Unix epoch); `id` is the
Mcp-Session-Id the server gave.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

SESSION_NOT_FOUND = -32001


def _flatten(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_flatten(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _expired(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_expired(e) for e in exc.exceptions)
    if isinstance(exc, MCPError):
        err = exc.error
        return err.code == SESSION_NOT_FOUND or "Session terminated" in err.message
    return False


async def _session(args: argparse.Namespace, worker: int, out: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {args.token}"}
    tool_args = json.loads(args.args)
    record: dict[str, Any] = {"worker": worker, "id": None, "ok": 0, "ended": None, "at": None, "error": None}
    out.append(record)

    async def _note_session(response: Any) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid and record["id"] is None:
            record["id"] = sid

    def end(how: str, error: str | None = None) -> None:
        record["ended"] = how
        record["at"] = round(time.time(), 3)
        record["error"] = error

    try:
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
            http.event_hooks["response"].append(_note_session)
            read, write = await stack.enter_async_context(
                streamable_http_client(args.url, http_client=http, terminate_on_close=False)
            )
            session = await stack.enter_async_context(ClientSession(read, write))
            with anyio.fail_after(args.call_timeout):
                await session.initialize()
            while not os.path.exists(args.stop_file):
                with anyio.fail_after(args.call_timeout):
                    result = await session.call_tool(args.tool, tool_args)
                if result.is_error:
                    end("failed", f"tool error: {result.content}")
                    return
                record["ok"] += 1
                await anyio.sleep(args.pause)
            end("stopped")
    except TimeoutError:
        end("hung", f"no answer within {args.call_timeout}s")
    except BaseException as exc:  # noqa: BLE001 - every way a session ends is recorded
        if isinstance(exc, KeyboardInterrupt):
            raise
        if record["ended"] is None:
            end("expired" if _expired(exc) else "failed", _flatten(exc))


async def _worker(args: argparse.Namespace, worker: int, out: list[dict[str, Any]]) -> None:
    while not os.path.exists(args.stop_file):
        await _session(args, worker, out)
        if out[-1]["ended"] != "expired":
            # A failure is reported; opening sessions in a tight loop
            # against a broken server would only bury it.
            if out[-1]["ended"] != "stopped":
                await anyio.sleep(0.5)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        for w in range(args.sessions):
            tg.start_soon(_worker, args, w, out)
    return {"sessions": out}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--tool", required=True)
    p.add_argument("--args", default="{}")
    p.add_argument("--stop-file", required=True)
    p.add_argument("--call-timeout", type=float, default=10.0)
    p.add_argument("--pause", type=float, default=0.05)
    args = p.parse_args()
    out = anyio.run(_run, args)
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
