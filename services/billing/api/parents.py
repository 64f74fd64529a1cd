"""Which bill holds a parent bag: asked by scanning before it deletes a parent."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.billing import repository as repo
from shared.deps import DbDep
from shared.errors import problem_responses
from shared.security import CurrentPrincipal

router = APIRouter(prefix="/bills/parents", tags=["bills"], responses=problem_responses(401, 422))


@router.get("/{parent_qr}")
def parent_bill(parent_qr: Annotated[str, Path(min_length=1, max_length=64)], db: DbDep,
                _: CurrentPrincipal) -> dict:
    """`{"parent_qr", "bill_id"}`; bill_id is null when the parent is on no bill."""
    qr = parent_qr.strip().upper()
    with db.session(read_only=True) as session:
        return {"parent_qr": qr, "bill_id": repo.bill_of_parent(session, qr)}
