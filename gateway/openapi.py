"""One OpenAPI document for every route of the public API (gateway.routes.PUBLIC_API): each upstream's own
document, under /api/v1, merged.

Fetched from the services when asked for (through their breakers) and kept for a minute; a service that
cannot answer is named in the description instead of failing the whole document.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from gateway.routes import API_PREFIX, template_route
from shared.http import ResilientClient

CACHE_SECONDS = 60.0
_SCHEMA_REF = "#/components/schemas/"


class MergedOpenApi:
    def __init__(self) -> None:
        self._document: dict[str, Any] | None = None
        self._built_at = 0.0
        self._lock = asyncio.Lock()

    async def document(self, clients: dict[str, ResilientClient]) -> dict[str, Any]:
        async with self._lock:
            if self._document is None or time.monotonic() - self._built_at > CACHE_SECONDS:
                self._document = await build(clients)
                self._built_at = time.monotonic()
            return self._document


async def build(clients: dict[str, ResilientClient]) -> dict[str, Any]:
    names = list(clients)
    fetched = await asyncio.gather(*(_fetch(clients[name]) for name in names), return_exceptions=True)
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "bagtrack API", "version": "1",
                 "description": "Every public route, through the gateway. Authorize with a bearer access token "
                                "from POST /api/v1/auth/login."},
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                                     "bearerFormat": "JWT"}}},
    }
    missing = []
    for name, document in zip(names, fetched):
        if isinstance(document, BaseException):
            missing.append(name)
            continue
        _add(merged, name, document)
    if missing:
        merged["info"]["description"] += f" Not available right now: {', '.join(missing)}."
    return merged


async def _fetch(client: ResilientClient) -> dict[str, Any]:
    response = await client.request("GET", "/openapi.json")
    if response.status != 200:
        raise RuntimeError(f"{client.name} answered {response.status}")
    return response.json()


def _add(merged: dict[str, Any], upstream: str, document: dict[str, Any]) -> None:
    schemas = merged["components"]["schemas"]
    # A schema name two services use for different shapes gets the service's name in front.
    renames = {n: f"{upstream}_{n}" for n, s in document.get("components", {}).get("schemas", {}).items()
               if n in schemas and schemas[n] != s}
    if renames:
        text = json.dumps(document)
        for old, new in renames.items():
            text = text.replace(f'"{_SCHEMA_REF}{old}"', f'"{_SCHEMA_REF}{new}"')
        document = json.loads(text)
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        schemas[renames.get(name, name)] = schema
    for path, operations in document.get("paths", {}).items():
        owned = {}
        for method, operation in operations.items():
            route = template_route(method.upper(), path)
            if route is None or route.upstream != upstream:
                # Not part of the public API (gateway.routes.PUBLIC_API): a service's own probes, or a
                # service-to-service route such as billing's /bills/parents/{parent_qr}.
                continue
            if not route.public:
                operation = {**operation, "security": [{"bearer": []}]}
            owned[method] = operation
        if owned:
            merged["paths"][API_PREFIX + path] = owned
