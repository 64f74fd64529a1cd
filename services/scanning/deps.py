"""Dependency aliases for the scanning service's handlers (all `async def`, no I/O)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel

from services.scanning.writes import ScanningContext
from shared.errors import InvalidInput
from shared.security import CurrentPrincipal, Principal, require_roles

REPLAYED_HEADER = "Idempotent-Replayed"


async def get_context(request: Request) -> ScanningContext:
    return request.app.state.scanning


ContextDep = Annotated[ScanningContext, Depends(get_context)]
Scanner = Annotated[Principal, Depends(require_roles("dispatcher", "admin"))]
Deleter = Annotated[Principal, Depends(require_roles("admin", "biller"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
Anyone = CurrentPrincipal
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)]


def pick_key(body_key: str | None, header_key: str | None) -> str | None:
    """The write's idempotency key, from the body's scan_id or the Idempotency-Key header (not two different)."""
    if body_key and header_key and body_key != header_key:
        raise InvalidInput("scan_id and Idempotency-Key differ; send one of them")
    return body_key or header_key


def json_response(model: BaseModel, *, replayed: bool | None = None) -> Response:
    """The answer as JSON, serialised once: the route's response_model documents it, and FastAPI does not
    validate a finished Response again. `replayed` adds Idempotent-Replayed (true: the first answer, again)."""
    headers = None if replayed is None else {REPLAYED_HEADER: "true" if replayed else "false"}
    return Response(model.model_dump_json(), media_type="application/json", headers=headers)
