"""Login, refresh, logout, who-am-I and the public signing keys."""
from __future__ import annotations

from fastapi import APIRouter, Response

from services.auth import service
from services.auth.deps import ClientIp, ContextDep, CurrentUser, SessionDep
from services.auth.schemas import LoginIn, RefreshIn, TokenPair, UserPublic

router = APIRouter(prefix="/auth", tags=["auth"])


# Plain `def` handlers: argon2 and psycopg2 block, so FastAPI runs these in its threadpool.
@router.post("/login", response_model=TokenPair)
def login(body: LoginIn, session: SessionDep, ctx: ContextDep, ip: ClientIp) -> TokenPair:
    return service.authenticate(session=session, ctx=ctx, username=body.username, password=body.password, client_ip=ip)


@router.post("/refresh", response_model=TokenPair)
def refresh(body: RefreshIn, session: SessionDep, ctx: ContextDep) -> TokenPair:
    return service.rotate_refresh_token(session=session, ctx=ctx, raw_token=body.refresh_token)


@router.post("/logout", status_code=204)
def logout(body: RefreshIn, session: SessionDep, principal: CurrentUser) -> Response:
    service.logout(session=session, principal=principal, raw_token=body.refresh_token)
    return Response(status_code=204)


@router.get("/me", response_model=UserPublic)
def me(session: SessionDep, principal: CurrentUser) -> UserPublic:
    return service.get_user(session=session, user_id=principal.user_id)


@router.get("/jwks")
async def jwks(ctx: ContextDep, response: Response) -> dict:
    response.headers["Cache-Control"] = "public, max-age=300"
    return ctx.keys.jwks()
