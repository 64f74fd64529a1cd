"""Billing's internal routes (bill marks, counts, the reconciler's listing) and the delete they guard: no parent is
ever both deleted and billed, including when the two are sent at the same moment."""
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from services.scanning.models import Bag
from tests.scanning.conftest import ADMIN, BILLER
from tests.support import db_session, wait_for_lock_waiters

BILLED = "urn:bagtrack:problem:parent-billed"


def mark(api, qr, bill_id="BILL_0001", link=1):
    return api.client.put(f"/internal/parents/{qr}/bill", json={"bill_id": bill_id, "link": link})


def clear(api, qr, bill_id="BILL_0001", link=1):
    return api.client.delete(f"/internal/parents/{qr}/bill", params={"bill_id": bill_id, "link": link})


def delete(api, qr):
    return api.client.delete(f"/bags/{qr}", headers=api.headers(ADMIN))


def row(api, qr):
    with db_session(api.app) as session:
        return session.scalar(select(Bag).where(Bag.qr_id == qr))


def test_a_mark_answers_the_parent_and_marking_it_again_for_the_same_bill_takes_the_new_link(api):
    api.fill("SB00001", 2)
    first = mark(api, "sb00001%0D")  # a scanner's Enter, percent-encoded: normalised like everywhere else
    assert first.status_code == 200, first.text
    body = first.json()
    assert {k: v for k, v in body.items() if k != "billed_at"} == {
        "qr_id": "SB00001", "capacity": 30, "child_count": 2, "bill_id": "BILL_0001", "link": 1,
        "dispatch_area": "jaipur"}
    assert abs(datetime.fromisoformat(body["billed_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    again = mark(api, "SB00001", link=7)  # the parent loaded anew onto the same bill (or a retry's new row)
    assert again.status_code == 200 and again.json()["link"] == 7 and again.json()["billed_at"] >= body["billed_at"]
    assert (row(api, "SB00001").bill_id, row(api, "SB00001").bill_link) == ("BILL_0001", 7)


def test_marking_needs_an_existing_parent_and_a_bill_code(api):
    api.fill("SB00001", 1)
    missing = mark(api, "SB09999")
    assert missing.status_code == 404 and missing.json()["type"] == "urn:bagtrack:problem:not-found"
    for qr in ("CH00001000", "no such bag", "BILL_0001"):  # a child, no format at all, a bill's code
        response = mark(api, qr)
        assert response.status_code == 422 and response.json()["type"] == "urn:bagtrack:problem:invalid-qr", qr
    for body in ({"bill_id": "BILL-0001", "link": 1}, {"bill_id": "", "link": 1}, {"bill_id": "B_" + "1" * 39, "link": 1},
                 {"bill_id": "B_1 ", "link": 1}, {"bill_id": "B_1"}, {"bill_id": "B_1", "link": 0}, {},
                 {"bill_id": "B_1", "link": 1, "extra": 1}):
        assert api.client.put("/internal/parents/SB00001/bill", json=body).status_code == 422, body
    assert row(api, "SB00001").bill_id is None


def test_a_parent_on_another_bill_is_409_naming_that_bill_and_keeps_its_mark(api):
    api.parent("SB00001")
    mark(api, "SB00001", "BILL_0001", link=3)
    response = mark(api, "SB00001", "BILL_0002", link=4)
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == BILLED and problem["bill_id"] == "BILL_0001" and problem["link"] == 3
    assert "BILL_0001" in problem["detail"]
    assert (row(api, "SB00001").bill_id, row(api, "SB00001").bill_link) == ("BILL_0001", 3)


def test_clearing_takes_off_only_that_mark_and_is_204_every_time(api):
    api.parent("SB00001")
    mark(api, "SB00001", "BILL_0001", link=2)
    assert clear(api, "SB00001", "BILL_0002", link=2).status_code == 204  # another bill's: untouched
    assert clear(api, "SB00001", "BILL_0001", link=1).status_code == 204  # an earlier link's, arriving late
    assert (row(api, "SB00001").bill_id, row(api, "SB00001").bill_link) == ("BILL_0001", 2)
    assert clear(api, "SB00001", "BILL_0001", link=2).status_code == 204
    cleared = row(api, "SB00001")
    assert (cleared.bill_id, cleared.bill_link, cleared.billed_at) == (None, None, None)
    assert clear(api, "SB00001", "BILL_0001", link=2).status_code == 204  # an outbox retry
    assert clear(api, "SB09999", "BILL_0001").status_code == 204  # the bag is gone
    assert mark(api, "SB00001", "BILL_0002").status_code == 200  # free for another bill now
    for qr, params in (("CH00001000", {"bill_id": "BILL_0001", "link": 1}), ("SB00001", {"bill_id": "BILL-1", "link": 1}),
                       ("SB00001", {"bill_id": "BILL_0001"}), ("SB00001", {"link": 1})):
        assert api.client.delete(f"/internal/parents/{qr}/bill", params=params).status_code == 422, (qr, params)


def test_counts_answer_each_parent_in_one_call_and_name_the_missing(api):
    api.fill("SB00001", 3)
    api.parent("M444-00001")
    mark(api, "SB00001")
    response = api.client.post("/internal/parents/counts",
                               json={"qr_ids": ["sb00001", "M444-00001", "SB09999", "CH00001000", "SB00001\t"]})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "parents": {"SB00001": {"child_count": 3, "capacity": 30, "bill_id": "BILL_0001", "link": 1},
                    "M444-00001": {"child_count": 0, "capacity": 15, "bill_id": None, "link": None}},
        "missing": ["SB09999", "CH00001000"]}  # a child is not a parent
    for body in ({"qr_ids": []}, {"qr_ids": ["SB00001"] * 501}, {"qr_ids": [""]}, {"qr_ids": ["S" * 65]}, {}):
        assert api.client.post("/internal/parents/counts", json=body).status_code == 422


def test_the_reconcilers_listing_pages_in_qr_order_and_filters_on_when_marks_were_set(api):
    at = datetime(2026, 11, 28, 10, tzinfo=UTC)
    qrs = [f"SB0000{i}" for i in range(1, 6)]
    for qr in qrs:
        api.parent(qr)
        mark(api, qr, f"BILL_{qr[-1]}")
    api.parent("SB00009")  # never marked: never listed
    with db_session(api.app) as session:
        for hours, qr in enumerate(reversed(qrs)):  # SB00005 marked first, SB00001 last
            session.execute(update(Bag).where(Bag.qr_id == qr).values(billed_at=at + timedelta(hours=hours)))
        session.commit()

    def pages(**params):
        items, cursor, count = [], None, 0
        while True:
            page = api.client.get("/internal/parents/marks", params={**params, **({"after_qr": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            items += page.json()["items"]
            cursor, count = page.json()["next_cursor"], count + 1
            if not cursor:
                return items, count

    everything, count = pages(limit=2)
    assert [m["qr_id"] for m in everything] == qrs and count == 3
    assert everything[0] == {"qr_id": "SB00001", "bill_id": "BILL_1", "link": 1, "billed_at": "2026-11-28T14:00:00Z"}
    recent, _ = pages(billed_after=(at + timedelta(hours=3)).isoformat())
    assert [m["qr_id"] for m in recent] == ["SB00001", "SB00002"]
    window, _ = pages(billed_after="2026-11-28T16:00:00+05:00", billed_before="2026-11-28T17:00:00+05:00")
    assert [m["qr_id"] for m in window] == ["SB00004"]  # 11:00 UTC: the offset is applied
    assert [m["qr_id"] for m in pages(after_qr="sb00003")[0]] == ["SB00004", "SB00005"]
    for params in ({"limit": 0}, {"limit": 1001}, {"after_qr": "SB_1"}, {"billed_after": "yesterday"}):
        assert api.client.get("/internal/parents/marks", params=params).status_code == 422, params
    assert len(api.client.get("/internal/parents/marks").json()["items"]) == 5  # default limit 500


def test_a_marked_parent_is_never_deleted_until_its_bill_clears_the_mark(api):
    api.parent("SB00001")
    mark(api, "SB00001", "BILL_0001")
    response = api.client.delete("/bags/SB00001", headers=api.headers(BILLER))
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == BILLED and problem["bill_id"] == "BILL_0001"
    assert problem["detail"] == "parent SB00001 is on bill BILL_0001; remove it from the bill first"
    assert api.bag("SB00001").status_code == 200
    clear(api, "SB00001", "BILL_0001")
    assert delete(api, "SB00001").status_code == 204
    assert mark(api, "SB00001", "BILL_0001").status_code == 404  # gone: billing cannot bill it any more


def test_a_marked_parent_holding_children_is_refused_for_its_bill_first(api):
    api.fill("SB00001", 1)
    mark(api, "SB00001", "BILL_0001")
    response = delete(api, "SB00001")
    assert response.status_code == 409 and response.json()["type"] == BILLED  # unlinking would change the bill


def test_the_internal_routes_are_documented_under_their_own_tag(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    internal = {path for path, operations in paths.items()
                if any("internal" in op.get("tags", ()) for op in operations.values())}
    assert internal == {path for path in paths if path.startswith("/internal/")}  # every one tagged, only they
    assert {"/internal/parents/{qr_id}/bill", "/internal/parents/counts", "/internal/parents/marks",
            "/internal/scans", "/internal/bags/{qr_id}/lookup"} <= internal


# -- the race (PostgreSQL: row locks across connections) ----------------------------------------------------------

def _pg_only(api):
    if api.app.state.db.dialect != "postgresql":
        pytest.skip("row locks across connections are PostgreSQL's; SQLite serialises every write")


def test_a_delete_and_a_mark_sent_at_once_end_in_exactly_one_of_them(api):
    _pg_only(api)
    outcomes = Counter()
    with ThreadPoolExecutor(2) as pool:
        for round_ in range(50):
            qr = f"SB{round_:05d}"
            assert api.parent(qr).status_code == 200
            barrier = threading.Barrier(2)

            def at_once(call):
                barrier.wait()
                return call()

            deleting = pool.submit(at_once, lambda: delete(api, qr))
            marking = pool.submit(at_once, lambda: mark(api, qr, f"BILL_{round_}"))
            statuses = (deleting.result(10).status_code, marking.result(10).status_code)
            after = row(api, qr)
            if statuses == (204, 404):
                assert after is None, round_
            else:
                assert statuses == (409, 200), (round_, statuses)
                assert after is not None and after.bill_id == f"BILL_{round_}", round_
            outcomes[statuses] += 1
    print("delete/mark outcomes over 50 rounds:", dict(outcomes))


def test_a_delete_queued_behind_a_mark_waits_for_it_then_refuses(api):
    _pg_only(api)
    api.parent("SB00001")
    with db_session(api.app) as holder, ThreadPoolExecutor(2) as pool:
        # Another transaction holds the parent's row (as a child scan would): both requests queue on it, in order.
        holder.execute(select(Bag).where(Bag.qr_id == "SB00001").with_for_update())
        marking = pool.submit(mark, api, "SB00001", "BILL_0001")
        wait_for_lock_waiters(api.app, 1)
        deleting = pool.submit(delete, api, "SB00001")
        wait_for_lock_waiters(api.app, 2)
        holder.rollback()  # the mark takes the row first and commits; the delete then sees the mark
        assert marking.result(10).status_code == 200
        response = deleting.result(10)
    assert response.status_code == 409 and response.json()["bill_id"] == "BILL_0001", response.text
    assert row(api, "SB00001").bill_id == "BILL_0001"
