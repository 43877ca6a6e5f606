#!/usr/bin/env python3
"""An MCP client on the official Python SDK (mcp 2.x) that authenticates the
way the MCP authorization spec says, for Portcullis' OAuth tests.

It is given only the endpoint URL, the AS's issuer identifier and its
client credentials. The SDK's `ClientCredentialsOAuthProvider` does the
rest: the first request gets a 401 whose `WWW-Authenticate` names the
relay's RFC 9728 metadata; from that it finds the authorization server,
reads its metadata, asks its token endpoint for a token bound to the
endpoint (RFC 8707 `resource`), and retries. Then it calls one tool and
prints one JSON line:

    {"tools": [...], "result": {...}, "saw_401": true}

The AS's TLS is verified against SSL_CERT_FILE (the test's CA).

Usage (run with target/peers/venv/bin/python):
    py_oauth_client.py --url URL --issuer ISSUER --client-id ID --client-secret S \
                       --tool NAME [--args JSON] [--timeout 30]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken


class MemoryStorage:
    """Tokens and client information for one run."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def _flatten(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_flatten(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    auth = ClientCredentialsOAuthProvider(
        server_url=args.url,
        storage=MemoryStorage(),
        client_id=args.client_id,
        client_secret=args.client_secret,
        issuer=args.issuer,
    )
    statuses: list[int] = []

    async def _note(response: Any) -> None:
        statuses.append(response.status_code)

    with anyio.fail_after(args.timeout):
        async with create_mcp_http_client(auth=auth) as http:
            http.event_hooks["response"].append(_note)
            async with streamable_http_client(args.url, http_client=http) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    tools = await session.list_tools()
                    result = await session.call_tool(args.tool, json.loads(args.args))
    return {
        "tools": [t.name for t in tools.tools],
        "result": result.model_dump(mode="json", by_alias=True, exclude_unset=True),
        "saw_401": 401 in statuses,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--tool", required=True)
    p.add_argument("--args", default="{}")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    try:
        out = anyio.run(_run, args)
    except BaseException as exc:  # noqa: BLE001 - report anything readable
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(f"py_oauth_client: error: {_flatten(exc)}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
