"""Which bill holds a parent bag: asked by scanning before it deletes a parent."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.billing import service
from shared.deps import DbDep
from shared.errors import problem_responses
from shared.security import CurrentPrincipal

router = APIRouter(prefix="/bills/parents", tags=["bills"], responses=problem_responses(401, 422))


@router.get("/{parent_qr}")
async def parent_bill(parent_qr: Annotated[str, Path(min_length=1, max_length=64)], db: DbDep,
                      _: CurrentPrincipal) -> dict:
    """`{"parent_qr", "bill_id"}`; bill_id is null when the parent is on no bill."""
    return await service.parent_bill(db=db, raw_qr=parent_qr)
