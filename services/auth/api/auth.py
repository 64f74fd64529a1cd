"""Login, refresh, logout, who-am-I and the public signing keys."""
from __future__ import annotations

from fastapi import APIRouter, Response

from services.auth import service
from services.auth.deps import ClientIp, ContextDep, CurrentUser
from services.auth.schemas import Jwks, LoginIn, RefreshIn, TokenPair, UserPublic
from shared.errors import problem_responses

router = APIRouter(prefix="/auth", tags=["auth"], responses=problem_responses(400, 401, 403, 422, 429, 503))


# Token answers must never sit in a cache (a browser's, a proxy's).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post("/login", response_model=TokenPair)
async def login(body: LoginIn, ctx: ContextDep, ip: ClientIp, response: Response) -> TokenPair:
    response.headers.update(NO_STORE)
    return await service.authenticate(ctx=ctx, username=body.username, password=body.password, client_ip=ip)


@router.post("/refresh", response_model=TokenPair)
async def refresh(body: RefreshIn, ctx: ContextDep, response: Response) -> TokenPair:
    response.headers.update(NO_STORE)
    return await service.rotate_refresh_token(ctx=ctx, raw_token=body.refresh_token)


@router.post("/logout", status_code=204)
async def logout(body: RefreshIn, ctx: ContextDep, principal: CurrentUser) -> Response:
    await service.logout(ctx=ctx, principal=principal, raw_token=body.refresh_token)
    return Response(status_code=204)


@router.get("/me", response_model=UserPublic)
async def me(ctx: ContextDep, principal: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(dict(await service.get_user(ctx=ctx, user_id=principal.user_id)))


@router.get("/jwks", response_model=Jwks)
async def jwks(ctx: ContextDep, response: Response) -> dict:
    # Briefly cacheable: a copy held longer would delay the next key past its activation (Settings.jwks_staleness).
    response.headers["Cache-Control"] = f"public, max-age={ctx.settings.jwks_max_age}"
    return ctx.keys.jwks()
