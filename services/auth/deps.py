"""Dependency aliases for the auth service's handlers."""
from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.auth.service import AuthContext
from shared.security import CurrentPrincipal, Principal, require_roles


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.db.session() as session:
        yield session


def get_context(request: Request) -> AuthContext:
    return request.app.state.auth


def client_ip(request: Request) -> str:
    # uvicorn's proxy-headers support has already replaced the peer with X-Forwarded-For's client
    # when the peer is a trusted proxy (FORWARDED_ALLOW_IPS), so this is the real client behind the gateway.
    return request.client.host if request.client else "unknown"


SessionDep = Annotated[Session, Depends(get_session)]
ContextDep = Annotated[AuthContext, Depends(get_context)]
ClientIp = Annotated[str, Depends(client_ip)]
AdminUser = Annotated[Principal, Depends(require_roles("admin"))]
CurrentUser = CurrentPrincipal
