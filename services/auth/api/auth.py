"""Login, refresh, logout, who-am-I and the public signing keys."""
from __future__ import annotations

from fastapi import APIRouter, Response

from services.auth import service
from services.auth.deps import ClientIp, ContextDep, CurrentUser, DbDep
from services.auth.schemas import LoginIn, RefreshIn, TokenPair, UserPublic
from shared.errors import problem_responses

router = APIRouter(prefix="/auth", tags=["auth"], responses=problem_responses(400, 401, 403, 422, 423, 429, 503))


# Plain `def` handlers: argon2 and psycopg2 block, so FastAPI runs these in its threadpool.
@router.post("/login", response_model=TokenPair)
def login(body: LoginIn, db: DbDep, ctx: ContextDep, ip: ClientIp) -> TokenPair:
    with db.session() as session:
        return service.authenticate(session=session, ctx=ctx, username=body.username, password=body.password,
                                    client_ip=ip)


@router.post("/refresh", response_model=TokenPair)
def refresh(body: RefreshIn, db: DbDep, ctx: ContextDep) -> TokenPair:
    with db.session() as session:
        return service.rotate_refresh_token(session=session, ctx=ctx, raw_token=body.refresh_token)


@router.post("/logout", status_code=204)
def logout(body: RefreshIn, db: DbDep, principal: CurrentUser) -> Response:
    with db.session() as session:
        service.logout(session=session, principal=principal, raw_token=body.refresh_token)
    return Response(status_code=204)


@router.get("/me", response_model=UserPublic)
def me(db: DbDep, principal: CurrentUser) -> UserPublic:
    with db.session(read_only=True) as session:
        return UserPublic.model_validate(service.get_user(session=session, user_id=principal.user_id))


@router.get("/jwks")
async def jwks(ctx: ContextDep, response: Response) -> dict:
    response.headers["Cache-Control"] = "public, max-age=300"
    return ctx.keys.jwks()
