"""Dependency aliases for the scanning service's handlers (all `async def`, no I/O)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from services.scanning.writes import ScanningContext
from shared.errors import InvalidInput
from shared.security import CurrentPrincipal, Principal, require_roles


async def get_context(request: Request) -> ScanningContext:
    return request.app.state.scanning


ContextDep = Annotated[ScanningContext, Depends(get_context)]
Scanner = Annotated[Principal, Depends(require_roles("dispatcher", "admin"))]
Deleter = Annotated[Principal, Depends(require_roles("admin", "biller"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
Anyone = CurrentPrincipal
# A QR in a path, as scanned (it may carry a scanner's control characters): normalised by services.scanning.qr.
Qr = Annotated[str, Path(min_length=1, max_length=64)]


def pick_key(body_key: str | None, header_key: str | None) -> str | None:
    """The write's idempotency key, from the body's scan_id or the Idempotency-Key header (not two different)."""
    if body_key and header_key and body_key != header_key:
        raise InvalidInput("scan_id and Idempotency-Key differ; send one of them")
    return body_key or header_key
