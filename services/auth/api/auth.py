"""Login, refresh, logout, who-am-I, the public signing keys and the reference data forms are built from.

A client that cannot keep a secret from page scripts (the web app) logs in with `refresh_cookie: true`: its refresh
token then travels only as an httpOnly, SameSite=Strict cookie scoped to the auth calls (AUTH_REFRESH_COOKIE_PATH),
never in a body a script could read. Refreshing from that cookie also needs `X-Requested-With: bagtrack`, a header
no cross-site form or image can send (SameSite already keeps the cookie off cross-site requests; this is the second
lock on the same door).
"""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.auth import service
from services.auth.config import Settings
from services.auth.deps import ClientIp, ContextDep, CurrentUser
from services.auth.schemas import MAX_REFRESH_TOKEN, Jwks, LoginIn, Reference, RefreshIn, TokenPair, UserPublic
from shared.errors import Forbidden, InvalidInput, Unauthorized, problem_responses

router = APIRouter(prefix="/auth", tags=["auth"], responses=problem_responses(400, 401, 403, 422, 429, 503))


# Token answers must never sit in a cache (a browser's, a proxy's).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
REFRESH_COOKIE = "bagtrack_refresh"
CSRF_HEADER, CSRF_VALUE = "x-requested-with", "bagtrack"


@router.post("/login", response_model=TokenPair)
async def login(body: LoginIn, ctx: ContextDep, ip: ClientIp, request: Request, response: Response) -> TokenPair:
    response.headers.update(NO_STORE)
    pair = await service.authenticate(ctx=ctx, username=body.username, password=body.password, client_ip=ip)
    return _into_cookie(pair, ctx.settings, request, response) if body.refresh_cookie else pair


@router.post("/refresh", response_model=TokenPair)
async def refresh(ctx: ContextDep, request: Request, response: Response, body: RefreshIn | None = None) -> TokenPair:
    """`{refresh_token}` rotates that token; an empty body rotates the refresh cookie (and answers a new one)."""
    response.headers.update(NO_STORE)
    if body is not None and body.refresh_token is not None:
        return await service.rotate_refresh_token(ctx=ctx, raw_token=body.refresh_token)
    raw = _cookie_token(request)
    if request.headers.get(CSRF_HEADER) != CSRF_VALUE:
        raise Forbidden(f"a refresh from the cookie needs the header X-Requested-With: {CSRF_VALUE}")
    pair = await service.rotate_refresh_token(ctx=ctx, raw_token=raw)
    return _into_cookie(pair, ctx.settings, request, response)


@router.post("/logout", status_code=204)
async def logout(ctx: ContextDep, principal: CurrentUser, request: Request,
                 body: RefreshIn | None = None) -> Response:
    """Revokes the token's family: the one in the body, else the refresh cookie's (which is then cleared)."""
    from_body = body is not None and body.refresh_token is not None
    raw = body.refresh_token if from_body else request.cookies.get(REFRESH_COOKIE)
    if not raw:
        raise InvalidInput("send {refresh_token}, or log out from the session whose refresh cookie this is")
    await service.logout(ctx=ctx, principal=principal, raw_token=raw)
    response = Response(status_code=204)
    if not from_body:
        response.delete_cookie(REFRESH_COOKIE, **_cookie_attributes(ctx.settings, request))
    return response


@router.get("/me", response_model=UserPublic)
async def me(ctx: ContextDep, principal: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(dict(await service.get_user(ctx=ctx, user_id=principal.user_id)))


@router.get("/reference", response_model=Reference)
async def reference(ctx: ContextDep, principal: CurrentUser) -> Reference:
    """Roles, dispatch areas and the password and username rules, so clients build forms from the server's own."""
    return await service.reference(ctx=ctx, principal=principal)


@router.get("/jwks", response_model=Jwks)
async def jwks(ctx: ContextDep, response: Response) -> dict:
    # Briefly cacheable: a copy held longer would delay the next key past its activation (Settings.jwks_staleness).
    response.headers["Cache-Control"] = f"public, max-age={ctx.settings.jwks_max_age}"
    return ctx.keys.jwks()


def _cookie_token(request: Request) -> str:
    raw = request.cookies.get(REFRESH_COOKIE)
    if not raw or len(raw) > MAX_REFRESH_TOKEN:
        raise Unauthorized("no refresh token: send {refresh_token}, or sign in again")
    return raw


def _cookie_attributes(settings: Settings, request: Request) -> dict:
    """The refresh cookie's attributes, the same when it is set and when it is cleared (Secure over HTTPS)."""
    return {"path": settings.refresh_cookie_path, "httponly": True, "samesite": "strict",
            "secure": request.url.scheme == "https"}


def _into_cookie(pair: TokenPair, settings: Settings, request: Request, response: Response) -> TokenPair:
    """Move the refresh token out of the body into the httpOnly cookie."""
    response.set_cookie(REFRESH_COOKIE, pair.refresh_token, max_age=settings.refresh_token_ttl,
                        **_cookie_attributes(settings, request))
    return pair.model_copy(update={"refresh_token": None})
