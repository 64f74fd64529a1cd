"""User administration (admin) and self-service password change."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from services.auth import repository as repo
from services.auth import service
from services.auth.deps import AdminUser, ContextDep, CurrentUser, DbDep
from services.auth.schemas import PasswordChange, Role, UserCreate, UserPublic, UserUpdate
from shared.errors import Forbidden, problem_responses
from shared.pagination import Page, cursor_position, page_of
from shared.params import Area, Cursor, Limit, Username

router = APIRouter(prefix="/users", tags=["users"], responses=problem_responses(400, 401, 403, 404, 409, 422, 503))

UserId = Annotated[int, Path(ge=1, le=2_147_483_647)]


@router.get("", response_model=Page[UserPublic])
def list_users(
    db: DbDep,
    _: AdminUser,
    limit: Limit = 50,
    cursor: Cursor = None,
    role: Role | None = None,
    dispatch_area: Area = None,
    is_active: bool | None = None,
    q: Username = None,
) -> Page[UserPublic]:
    with db.session(read_only=True) as session:
        users = repo.list_users(session, after_id=cursor_position(cursor), limit=limit + 1, role=role,
                                area=dispatch_area.lower() if dispatch_area else None, is_active=is_active, q=q)
    return page_of(users, limit, item=UserPublic.model_validate, key=lambda user: user.id)


@router.post("", response_model=UserPublic, status_code=201)
def create_user(body: UserCreate, db: DbDep, ctx: ContextDep, _: AdminUser) -> UserPublic:
    with db.session() as session:
        return UserPublic.model_validate(service.create_user(session=session, ctx=ctx, user_in=body))


@router.post("/me/password", status_code=204)
def change_my_password(body: PasswordChange, db: DbDep, ctx: ContextDep, principal: CurrentUser) -> Response:
    with db.session() as session:
        service.change_password(session=session, ctx=ctx, principal=principal,
                                current=body.current_password, new=body.new_password)
    return Response(status_code=204)


@router.get("/{user_id}", response_model=UserPublic)
def get_user(user_id: UserId, db: DbDep, principal: CurrentUser) -> UserPublic:
    if not principal.is_admin and principal.user_id != user_id:
        raise Forbidden("only admins can read other users")
    with db.session() as session:  # the primary: an admin reads a user right after changing it
        return UserPublic.model_validate(service.get_user(session=session, user_id=user_id))


@router.patch("/{user_id}", response_model=UserPublic)
def update_user(user_id: UserId, body: UserUpdate, db: DbDep, ctx: ContextDep, actor: AdminUser) -> UserPublic:
    with db.session() as session:
        user = service.update_user(session=session, ctx=ctx, actor=actor, user_id=user_id, changes=body)
        return UserPublic.model_validate(user)


@router.delete("/{user_id}", status_code=204)
def delete_user(user_id: UserId, db: DbDep, actor: AdminUser) -> Response:
    with db.session() as session:
        service.delete_user(session=session, actor=actor, user_id=user_id)
    return Response(status_code=204)
