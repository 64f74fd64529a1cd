"""User administration (admin) and self-service password change."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from services.auth import service
from services.auth.deps import AdminUser, ContextDep, CurrentUser
from services.auth.schemas import PasswordChange, Role, UserCreate, UserPublic, UserUpdate
from shared.errors import Forbidden, problem_responses
from shared.pagination import Page, cursor_position, page_of
from shared.params import Area, Cursor, Limit, Username

router = APIRouter(prefix="/users", tags=["users"], responses=problem_responses(400, 401, 403, 404, 409, 422, 429, 503))

UserId = Annotated[int, Path(ge=1, le=2_147_483_647)]


@router.get("", response_model=Page[UserPublic])
async def list_users(
    ctx: ContextDep,
    _: AdminUser,
    limit: Limit = 50,
    cursor: Cursor = None,
    role: Role | None = None,
    dispatch_area: Area = None,
    is_active: bool | None = None,
    q: Username = None,
) -> Page[UserPublic]:
    users = await service.list_users(ctx=ctx, after_id=cursor_position(cursor), limit=limit + 1, role=role,
                                     area=dispatch_area.lower() if dispatch_area else None, is_active=is_active, q=q)
    return page_of(users, limit, item=lambda user: UserPublic.model_validate(dict(user)), key=lambda user: user["id"])


@router.post("", response_model=UserPublic, status_code=201)
async def create_user(body: UserCreate, ctx: ContextDep, _: AdminUser) -> UserPublic:
    return UserPublic.model_validate(dict(await service.create_user(ctx=ctx, user_in=body)))


@router.post("/me/password", status_code=204)
async def change_my_password(body: PasswordChange, ctx: ContextDep, principal: CurrentUser) -> Response:
    await service.change_password(ctx=ctx, principal=principal, current=body.current_password, new=body.new_password)
    return Response(status_code=204)


@router.get("/{user_id}", response_model=UserPublic)
async def get_user(user_id: UserId, ctx: ContextDep, principal: CurrentUser) -> UserPublic:
    if not principal.is_admin and principal.user_id != user_id:
        raise Forbidden("only admins can read other users")
    # The primary: an admin reads a user right after changing it.
    return UserPublic.model_validate(dict(await service.get_user(ctx=ctx, user_id=user_id, primary=True)))


@router.patch("/{user_id}", response_model=UserPublic)
async def update_user(user_id: UserId, body: UserUpdate, ctx: ContextDep, actor: AdminUser) -> UserPublic:
    return UserPublic.model_validate(dict(await service.update_user(ctx=ctx, actor=actor, user_id=user_id, changes=body)))


@router.delete("/{user_id}", status_code=204)
async def delete_user(user_id: UserId, ctx: ContextDep, actor: AdminUser) -> Response:
    await service.delete_user(ctx=ctx, actor=actor, user_id=user_id)
    return Response(status_code=204)
