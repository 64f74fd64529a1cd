"""Dependency aliases for the auth service's handlers (all `async def`, no I/O)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.auth.service import AuthContext
from shared.deps import ClientIp  # noqa: F401  (re-exported for the handlers)
from shared.security import CurrentPrincipal, Principal, require_roles


async def get_context(request: Request) -> AuthContext:
    return request.app.state.auth


ContextDep = Annotated[AuthContext, Depends(get_context)]
AdminUser = Annotated[Principal, Depends(require_roles("admin"))]
CurrentUser = CurrentPrincipal
