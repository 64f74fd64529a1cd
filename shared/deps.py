"""Dependencies every service's handlers share.

They are `async def` on purpose: they do no I/O, and a plain `def` dependency would cost a thread hop
per request. Handlers that touch the database are plain `def` (run in the threadpool) and open their
session there — `with db.session() as session:` — so the session's whole life, checkout to release,
happens on one worker thread instead of bouncing between threads for set-up and tear-down.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.cache import Cache
from shared.db import Database


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_cache(request: Request) -> Cache:
    return request.app.state.cache


async def client_ip(request: Request) -> str:
    # uvicorn's proxy-headers support has already replaced the peer with X-Forwarded-For's client when
    # the peer is a trusted proxy (FORWARDED_ALLOW_IPS), so behind the gateway this is the real client.
    return request.client.host if request.client else "unknown"


DbDep = Annotated[Database, Depends(get_db)]
CacheDep = Annotated[Cache, Depends(get_cache)]
ClientIp = Annotated[str, Depends(client_ip)]
