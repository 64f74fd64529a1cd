"""Races on one bill (each has exactly one outcome per rule), and the reconciler repairing half-done adds."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from services.billing import marks
from services.billing.models import Bill, BillParent
from services.scanning.models import Bag
from shared.timeutil import utcnow
from tests.billing.conftest import token_headers
from tests.support import db_session, wait_for

bags = Bag.__table__


def together(*calls):
    """Run the calls at the same moment, each on its own thread; their responses in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def bill_row(api, code: str):
    with db_session(api.app) as session:
        return session.execute(select(Bill.__table__).where(Bill.__table__.c.bill_key == code)).mappings().one()


def test_parallel_adds_never_overfill_a_bill(api):
    bill = api.new_bill(capacity=3)
    qrs = [api.parent(f"SB2{n:04d}") for n in range(8)]
    responses = together(*[lambda qr=qr: api.add(bill, qr) for qr in qrs])
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 3 + [409] * 5, [r.text for r in responses]
    assert bill_row(api, bill)["linked_count"] == 3
    marked = [qr for qr in qrs if api.mark_of(qr)[0] == bill]
    added = [qr for qr, r in zip(qrs, responses) if r.status_code == 201]
    assert sorted(marked) == sorted(added)


@pytest.mark.parametrize("round_", range(5))
def test_complete_racing_the_last_add(api, round_):
    bill = api.new_bill(capacity=2)
    api.parent("SB30000")
    api.parent("SB30001")
    api.add(bill, "SB30000")
    add, complete = together(lambda: api.add(bill, "SB30001"), lambda: api.post(f"/bills/{bill}/complete"))
    assert add.status_code == 201, add.text
    assert complete.status_code in (200, 409), complete.text
    row = bill_row(api, bill)
    assert row["linked_count"] == 2
    assert (row["status"] == "completed") == (complete.status_code == 200)


@pytest.mark.parametrize("round_", range(5))
def test_a_capacity_edit_racing_an_add_has_one_winner(api, round_):
    bill = api.new_bill(capacity=2)
    api.parent("SB30002")
    api.parent("SB30003")
    api.add(bill, "SB30002")
    add, edit = together(lambda: api.add(bill, "SB30003"),
                         lambda: api.client.patch(f"/bills/{bill}", json={"capacity": 1}, headers=token_headers()))
    assert {add.status_code, edit.status_code} == {201, 409} or (add.status_code == 409 and edit.status_code == 200)
    row = bill_row(api, bill)
    assert row["linked_count"] <= row["capacity"]
    assert (row["capacity"], row["linked_count"]) in ((1, 1), (2, 2))


@pytest.mark.parametrize("round_", range(5))
def test_two_bills_racing_for_one_parent_one_wins(api, round_):
    first, second = api.new_bill(), api.new_bill()
    api.parent("SB30004")
    one, two = together(lambda: api.add(first, "SB30004"), lambda: api.add(second, "SB30004"))
    assert sorted([one.status_code, two.status_code]) == [201, 409], (one.text, two.text)
    winner = first if one.status_code == 201 else second
    wait_for(lambda: api.mark_of("SB30004")[0] == winner, what="the winner's mark")
    assert bill_row(api, first)["linked_count"] + bill_row(api, second)["linked_count"] == 1


# --- the reconciler ---

def _pending_row(api, code: str, qr: str, *, age: float) -> int:
    """A parent row left 'pending' `age` seconds ago (its add died after claiming the slot)."""
    with db_session(api.app) as session:
        bill = bill_row(api, code)
        session.execute(update(Bill.__table__).where(Bill.__table__.c.id == bill["id"])
                        .values(linked_count=Bill.__table__.c.linked_count + 1, status="processing"))
        link = session.execute(insert(BillParent.__table__).values(
            bill_pk=bill["id"], parent_qr=qr, state="pending", capacity=0, child_count=0, added_by="bina",
            added_at=utcnow() - timedelta(seconds=age)).returning(BillParent.__table__.c.id)).scalar_one()
        session.commit()
    return link


def _scanning_mark(api, qr: str, code: str, link: int, *, age: float) -> None:
    with api.scanning_db.begin() as conn:
        conn.execute(update(bags).where(bags.c.qr_id == qr).values(
            bill_id=code, bill_link=link, billed_at=utcnow() - timedelta(seconds=age)))


def _run(api, job):
    ctx = api.app.state.billing
    return api.client.portal.call(lambda: job(ctx))


def test_a_pending_add_whose_mark_landed_is_finished(api):
    bill = api.new_bill()
    api.parent("SB30005", children=4)
    link = _pending_row(api, bill, "SB30005", age=120)
    _scanning_mark(api, "SB30005", bill, link, age=120)
    assert _run(api, lambda ctx: marks.settle_pending(ctx.db, ctx.cache, ctx.scanning, grace=30)) == 1
    body = api.get(bill).json()
    assert body["linked_count"] == 1 and body["bags"][0]["pending"] is False
    assert body["expected_weight_kg"] == 30 and body["actual_weight_kg"] == 4


def test_a_pending_add_whose_mark_never_landed_is_released(api):
    bill = api.new_bill()
    api.parent("SB30006")
    _pending_row(api, bill, "SB30006", age=120)
    fresh = _pending_row(api, bill, api.parent("SB30007"), age=0)  # still in flight: left alone
    assert _run(api, lambda ctx: marks.settle_pending(ctx.db, ctx.cache, ctx.scanning, grace=30)) == 1
    body = api.get(bill).json()
    assert [b["parent_qr"] for b in body["bags"]] == ["SB30007"] and body["linked_count"] == 1
    assert fresh


def test_a_mark_no_bill_holds_is_cleared_and_a_held_one_kept(api):
    bill = api.new_bill()
    api.parent("SB30008")
    api.parent("SB30009")
    api.add(bill, "SB30009")
    _scanning_mark(api, "SB30008", bill, 987654, age=120)  # an add whose answer was lost after scanning marked
    held = api.mark_of("SB30009")
    with api.scanning_db.begin() as conn:  # both old enough to be looked at
        conn.execute(update(bags).where(bags.c.qr_id == "SB30009").values(billed_at=utcnow() - timedelta(seconds=120)))
    queued, watermark = _run(api, lambda ctx: marks.clear_strays(ctx.db, ctx.cache, ctx.scanning, window=3600,
                                                                  grace=30))
    assert queued == 1
    # The next pass asks only for marks set since the watermark (less the grace): a stray set after it is found.
    api.parent("SB30010")
    _scanning_mark(api, "SB30010", bill, 987655, age=40)
    again, _ = _run(api, lambda ctx: marks.clear_strays(ctx.db, ctx.cache, ctx.scanning, window=3600, grace=30,
                                                        since=watermark))
    assert again == 1
    _run(api, lambda ctx: marks.deliver_outbox(ctx.db, ctx.cache, ctx.scanning, max_backoff=1))
    assert api.mark_of("SB30008") == (None, None)
    assert api.mark_of("SB30009") == held
