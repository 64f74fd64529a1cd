"""Parallel scans from real threads; the database is checked afterwards, not just the answers."""
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from services.scanning.models import Bag, Scan
from tests.scanning.conftest import JAIPUR, JAIPUR_2
from tests.support import db_session


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
