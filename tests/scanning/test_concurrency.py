"""Parallel scans from real threads; the database is checked afterwards, not just the answers."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from services.scanning.models import Bag, Scan
from tests.scanning.conftest import ADMIN, JAIPUR, JAIPUR_2
from tests.support import db_session, wait_for_lock_waiters


def _parallel(calls):
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def _db_children(api, parent_qr):
    with db_session(api.app) as session:
        parent = session.scalar(select(Bag).where(Bag.qr_id == parent_qr))
        linked = session.scalar(select(func.count()).select_from(Bag).where(Bag.parent_id == parent.id))
        return parent, linked


def test_parallel_child_scans_never_push_a_nearly_full_parent_past_capacity(api):
    api.fill("M444-00001", 13)  # capacity 15: two slots left
    calls = [lambda i=i: api.child("M444-00001", f"RACER{i:03d}", who=JAIPUR if i % 2 else JAIPUR_2) for i in range(10)]
    statuses = sorted(r.status_code for r in _parallel(calls))
    assert statuses.count(200) == 2 and statuses.count(409) == 8, statuses
    parent, linked = _db_children(api, "M444-00001")
    assert (parent.child_count, linked, parent.status) == (15, 15, "completed")
    with db_session(api.app) as session:
        assert session.scalar(select(func.count()).select_from(Bag).where(Bag.qr_id.like("RACER%"))) == 2


def test_one_child_scanned_onto_two_parents_at_once_gets_exactly_one(api):
    for round_ in range(5):
        a, b = f"SB1{round_:04d}", f"SB2{round_:04d}"
        api.parent(a)
        api.parent(b)
        child = f"TWIN{round_:04d}"
        responses = _parallel([lambda: api.child(a, child), lambda: api.child(b, child, who=JAIPUR_2)])
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 409], [r.text for r in responses]
        loser = next(r for r in responses if r.status_code == 409).json()
        (pa, la), (pb, lb) = _db_children(api, a), _db_children(api, b)
        assert (pa.child_count, pb.child_count) == (la, lb) and la + lb == 1
        assert loser["parent_qr"] == (a if la else b)


def test_the_same_scan_id_sent_many_times_at_once_writes_once(api):
    api.parent("SB00001")
    responses = _parallel([lambda: api.child("SB00001", "CH-0001", scan_id="same-scan") for _ in range(6)])
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1
    with db_session(api.app) as session:
        assert session.scalar(select(func.count()).select_from(Scan).where(Scan.kind == "child")) == 1


def test_the_same_new_parent_scanned_at_once_is_created_once(api):
    responses = _parallel([lambda: api.parent("SB00042") for _ in range(6)])
    assert {r.status_code for r in responses} == {200}
    assert sum(r.json()["created"] for r in responses) == 1
    with db_session(api.app) as session:
        assert session.scalar(select(func.count()).select_from(Bag).where(Bag.qr_id == "SB00042")) == 1


# -- interleavings forced with a row lock held from another connection (PostgreSQL) ------------------------------

def _pg_only(api):
    if api.app.state.db.dialect != "postgresql":
        pytest.skip("row locks across connections are PostgreSQL's; SQLite serialises every write")


def test_a_parent_deleted_while_a_child_is_being_linked_is_409_never_500(api):
    _pg_only(api)
    api.parent("SB00001")
    with db_session(api.app) as linker, ThreadPoolExecutor(1) as pool:
        # Another dispatcher's child scan, paused inside its transaction while it holds the parent's row.
        parent = linker.execute(select(Bag).where(Bag.qr_id == "SB00001").with_for_update()).scalar_one()
        delete = pool.submit(api.client.delete, "/bags/SB00001", headers=api.headers(ADMIN))
        wait_for_lock_waiters(api.app)
        linker.add(Bag(qr_id="CH-RACE1", type="child", status="completed", dispatch_area="jaipur",
                       child_count=0, capacity=0, parent_id=parent.id, created_by="12"))
        parent.child_count = 1
        linker.commit()  # the link lands; the delete, waiting on the row, sees it
        response = delete.result(timeout=10)
    assert response.status_code == 409, response.text
    assert "children" in response.json()["detail"]
    assert api.bag("SB00001").json()["child_count"] == 1


def test_deletes_racing_child_scans_on_one_parent_never_answer_5xx(api):
    for round_ in range(5):
        parent = f"SB0100{round_}"
        assert api.parent(parent).status_code == 200
        barrier = threading.Barrier(4)

        def at_once(call):
            def run():
                barrier.wait()
                return call()
            return run

        statuses = _parallel([
            at_once(lambda: api.child(parent, f"CH-R{round_}A").status_code),
            at_once(lambda: api.child(parent, f"CH-R{round_}B").status_code),
            at_once(lambda: api.client.delete(f"/bags/{parent}", headers=api.headers(ADMIN)).status_code),
            at_once(lambda: api.client.delete(f"/bags/{parent}", headers=api.headers(ADMIN)).status_code),
        ])
        assert all(status < 500 for status in statuses), statuses
        assert set(statuses[2:]) <= {204, 404, 409}, statuses
        with db_session(api.app) as session:  # never a deleted parent with linked children
            row = session.scalar(select(Bag).where(Bag.qr_id == parent))
            if row is None:
                assert 204 in statuses[2:]
            else:
                linked = session.scalar(select(func.count()).select_from(Bag).where(Bag.parent_id == row.id))
                assert row.child_count == linked


def test_an_unlink_retried_with_its_idempotency_key_replays_and_unlinks_once(api):
    api.fill("SB00001", 2)
    key = {"Idempotency-Key": "unlink-1"}
    first = api.client.delete("/bags/SB00001/children/CH00001000", headers=api.headers(JAIPUR, **key))
    again = api.client.delete("/bags/SB00001/children/CH00001000", headers=api.headers(JAIPUR, **key))
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    parent, linked = _db_children(api, "SB00001")
    assert parent.child_count == linked == 1
    with db_session(api.app) as session:
        unlinks = session.scalar(select(func.count()).select_from(Scan).where(Scan.kind == "unlink"))
    assert unlinks == 1
