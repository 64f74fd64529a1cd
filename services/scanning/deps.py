"""Dependency aliases for the scanning service's handlers (all `async def`: no I/O, no thread hop)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from services.scanning.service import ScanningContext
from shared.deps import DbDep  # noqa: F401  (re-exported for the handlers)
from shared.security import CurrentPrincipal, Principal, require_roles


async def get_context(request: Request) -> ScanningContext:
    return request.app.state.scanning


ContextDep = Annotated[ScanningContext, Depends(get_context)]
Scanner = Annotated[Principal, Depends(require_roles("dispatcher", "admin"))]
Deleter = Annotated[Principal, Depends(require_roles("admin", "biller"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
Anyone = CurrentPrincipal
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)]
