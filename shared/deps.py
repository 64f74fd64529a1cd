"""Dependencies every service's handlers share.

They are `async def` and do no I/O: everything in a request runs on the event loop, the database through its
async driver (shared.db), so no dependency costs a thread hop.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.db import Database


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def client_ip(request: Request) -> str:
    # shared.proxies.ClientAddressMiddleware has already replaced the peer with X-Forwarded-For's client when
    # the peer is one of this process's trusted proxies, so behind the gateway this is the real client.
    return request.client.host if request.client else "unknown"


DbDep = Annotated[Database, Depends(get_db)]
ClientIp = Annotated[str, Depends(client_ip)]
