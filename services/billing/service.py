"""Billing's rules. So far: which bill holds a parent bag (scanning asks before it deletes one)."""
from __future__ import annotations

from services.billing import repository as repo
from shared.codes import normalize_code
from shared.db import Database


async def parent_bill(*, db: Database, raw_qr: str) -> dict:
    """`{"parent_qr", "bill_id"}`; bill_id is None when the parent is on no bill."""
    qr = normalize_code(raw_qr)
    async with db.read() as conn:
        return {"parent_qr": qr, "bill_id": await repo.bill_of_parent(conn, qr)}
