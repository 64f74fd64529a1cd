"""The dashboard's sources, scanning and billing, through the shared resilient clients (app.state.clients, one per
source, built by create_service_app: timeouts, a breaker, X-Request-ID forwarding).

Their /internal routes take no token (the gateway never routes /internal), so nothing of the caller is forwarded.
The stream's poller reads the feeds through the same two calls:

    body = await get_json(source_client(app, "scanning"), "/internal/scans", params={"after_id": 41}, timeout=2)
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from fastapi import FastAPI

from shared.breaker import CLOSED
from shared.errors import ProblemError
from shared.http import ResilientClient

SOURCES = ("scanning", "billing")


class SourceFailed(Exception):
    """The source could not answer: unreachable, hung past the budget, breaker open, a 5xx, or not JSON."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason


class SourceRefused(Exception):
    """The source answered, with a 4xx: for a lookup that is the answer (404: no such bag or bill)."""

    def __init__(self, source: str, status: int, detail: str) -> None:
        super().__init__(f"{source} answered {status}: {detail}")
        self.source, self.status, self.detail = source, status, detail


def source_client(app: FastAPI, name: str) -> ResilientClient:
    """The resilient client to one source ("scanning" or "billing")."""
    return app.state.clients[name]


def is_breaker_open(client: ResilientClient) -> bool:
    """Whether the client's breaker refuses calls now (open, or half-open with its probes out)."""
    return client.breaker.state != CLOSED


async def get_json(client: ResilientClient, path: str, *, params: Mapping[str, Any] | None = None,
                   timeout: float) -> Any:
    """GET a source's JSON body within `timeout` seconds; SourceRefused for a 4xx, SourceFailed otherwise."""
    query = {name: str(value) for name, value in (params or {}).items() if value is not None}
    try:
        response = await client.request("GET", path, params=query or None, timeout=timeout)
    except ProblemError as exc:  # UpstreamUnavailable (refused, breaker open) or UpstreamTimeout (hung)
        raise SourceFailed(client.name, exc.detail) from exc
    if 400 <= response.status < 500:
        raise SourceRefused(client.name, response.status, _detail(response.body))
    if response.status != 200:
        raise SourceFailed(client.name, f"answered {response.status}")
    try:
        return response.json()
    except ValueError as exc:
        raise SourceFailed(client.name, "answered something that is not JSON") from exc


def _detail(body: bytes) -> str:
    """A problem document's detail (every service answers RFC 9457), or a generic phrase."""
    try:
        document = json.loads(body)
    except ValueError:
        return "refused"
    detail = document.get("detail") if isinstance(document, dict) else None
    return detail[:300] if isinstance(detail, str) else "refused"
