"""SQL of the billing service."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.billing.models import Bill, BillParent


def bill_of_parent(session: Session, parent_qr: str) -> str | None:
    """The bill id holding this parent bag, or None."""
    return session.scalar(
        select(Bill.bill_id).join(BillParent, BillParent.bill_pk == Bill.id).where(BillParent.parent_qr == parent_qr)
    )
