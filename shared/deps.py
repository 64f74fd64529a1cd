"""Dependencies every service's handlers share.

They are `async def` and do no I/O: everything in a request runs on the event loop, the database through its
async driver (shared.db), so no dependency costs a thread hop.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel

from shared.db import Database


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def client_ip(request: Request) -> str:
    # shared.proxies.ClientAddressMiddleware has already replaced the peer with X-Forwarded-For's client when
    # the peer is one of this process's trusted proxies, so behind the gateway this is the real client.
    return request.client.host if request.client else "unknown"


DbDep = Annotated[Database, Depends(get_db)]
ClientIp = Annotated[str, Depends(client_ip)]


REPLAYED_HEADER = "Idempotent-Replayed"
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)]


def json_response(model: BaseModel, *, status_code: int = 200, replayed: bool | None = None) -> Response:
    """The answer as JSON, serialised once: the route's response_model documents it, and FastAPI does not
    validate a finished Response again. `replayed` adds Idempotent-Replayed (true: the first answer, again)."""
    headers = None if replayed is None else {REPLAYED_HEADER: "true" if replayed else "false"}
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json", headers=headers)
