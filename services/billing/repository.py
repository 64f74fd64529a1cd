"""SQL of the billing service."""
from __future__ import annotations

from sqlalchemy import select

from services.billing.models import Bill, BillParent
from shared.db import Conn

bills, bill_parents = Bill.__table__, BillParent.__table__


async def bill_of_parent(conn: Conn, parent_qr: str) -> str | None:
    """The bill id holding this parent bag, or None."""
    return await conn.scalar(select(bills.c.bill_id).join(bill_parents, bill_parents.c.bill_pk == bills.c.id)
                             .where(bill_parents.c.parent_qr == parent_qr))
