"""The dashboard's reads of scanning (/internal/scans, /internal/bags/{qr}/lookup) against what was really scanned,
on each backend; and, on PostgreSQL, their plans on a table of 200,000 scans."""
from __future__ import annotations

import json
import os
from datetime import datetime

import pytest
from sqlalchemy import insert

from services.scanning import repository as repo
from services.scanning.models import Scan
from shared.timeutil import as_utc
from tests.scanning.conftest import ADMIN, AKOLA, JAIPUR, JAIPUR_2
from tests.scanning.test_scale import compile_sql, explain, plan_nodes, rows_touched
from tests.support import db_session, seeded_pg_database


def feed(api, **params):
    response = api.client.get("/internal/scans", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def lookup(api, qr: str, **params):
    return api.client.get(f"/internal/bags/{qr}/lookup", params=params)


def scans_in_db(api, area: str | None = None) -> list[dict]:
    """Ground truth, newest first, in the feed's item shape."""
    rows = sorted(api.db_rows(Scan, **({"dispatch_area": area} if area else {})), key=lambda s: s.id, reverse=True)
    return [{"id": s.id, "kind": s.kind, "parent_qr": s.parent_qr, "child_qr": s.child_qr,
             "dispatch_area": s.dispatch_area, "user_id": s.user_id, "username": s.username, "repeat": s.repeat,
             "created_at": as_utc(s.created_at)} for s in rows]


def shown(items: list[dict]) -> list[dict]:
    return [{**item, "created_at": datetime.fromisoformat(item["created_at"])} for item in items]


def a_shift(api) -> None:
    """Two Jaipur dispatchers and one in Akola: parents, children, a repeat, an unlink."""
    api.fill("SB00001", 3, who=JAIPUR)
    assert api.child("SB00001", "CH00001000", who=JAIPUR_2).json()["repeat"] is True
    api.fill("SB00002", 2, prefix="AK", who=AKOLA)
    assert api.unlink("SB00001", "CH00001002", who=ADMIN).status_code == 200


# --- the activity feed ---

def test_the_feed_shows_what_was_scanned_newest_first_with_user_and_time(api):
    a_shift(api)
    body = feed(api)
    truth = scans_in_db(api)
    assert len(truth) == 9
    assert shown(body["items"]) == truth
    assert body["latest_id"] == truth[0]["id"]
    assert {(i["username"], i["user_id"]) for i in body["items"]} == {("jai", 11), ("jaya", 12), ("aki", 21),
                                                                       ("boss", 1)}
    assert [i["kind"] for i in body["items"]][:1] == ["unlink"]
    assert [i["repeat"] for i in body["items"]].count(True) == 1


def test_after_id_gives_only_what_is_newer_and_latest_id_holds_when_nothing_is(api):
    api.fill("SB00001", 2)
    seen = feed(api)["latest_id"]
    assert feed(api, after_id=seen) == {"items": [], "latest_id": seen}
    api.child("SB00001", "CH00001005")
    api.parent("SB00003")
    newer = feed(api, after_id=seen)
    assert shown(newer["items"]) == scans_in_db(api)[:2]
    assert [i["parent_qr"] for i in newer["items"]] == ["SB00003", "SB00001"]
    assert newer["latest_id"] == newer["items"][0]["id"] > seen
    assert feed(api, after_id=2**62) == {"items": [], "latest_id": newer["latest_id"]}


def test_an_empty_table_has_latest_id_zero(api):
    assert feed(api) == {"items": [], "latest_id": 0}
    assert feed(api, after_id=5, area="jaipur") == {"items": [], "latest_id": 0}


def test_the_feed_keeps_to_an_area(api):
    a_shift(api)
    akola = feed(api, area="AKOLA")  # areas compare as stored: lower-case
    truth = scans_in_db(api, "akola")
    assert len(truth) == 3 and shown(akola["items"]) == truth
    assert akola["latest_id"] == truth[0]["id"] < feed(api)["latest_id"]
    assert feed(api, area="akola", after_id=akola["latest_id"]) == {"items": [], "latest_id": akola["latest_id"]}
    jaipur = feed(api, area="jaipur")
    assert shown(jaipur["items"]) == scans_in_db(api, "jaipur") and len(jaipur["items"]) == 6
    assert feed(api, area="ranchi") == {"items": [], "latest_id": 0}


def test_limit_keeps_the_newest(api):
    a_shift(api)
    body = feed(api, limit=3)
    assert shown(body["items"]) == scans_in_db(api)[:3] and body["latest_id"] == body["items"][0]["id"]
    oldest = scans_in_db(api)[-1]["id"]
    assert [i["id"] for i in feed(api, after_id=oldest, limit=2)["items"]] == [s["id"] for s in scans_in_db(api)[:2]]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"limit": "x"}, {"after_id": -1},
                                    {"after_id": 2**62 + 1}, {"after_id": "1.5"}, {"area": "a b"}, {"area": "x" * 65}])
def test_bad_feed_parameters_are_422(api, params):
    response = api.client.get("/internal/scans", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


# --- the composed lookup ---

def public_bag(api, qr: str) -> dict:
    response = api.bag(qr, who=ADMIN)
    assert response.status_code == 200
    return response.json()


def last_scans_in_db(api, qr: str, area: str | None = None) -> list[dict]:
    return [s for s in scans_in_db(api, area) if qr in (s["parent_qr"], s["child_qr"])][:10]


def test_a_parent_is_shown_as_the_public_lookup_shows_it_with_its_last_ten_scans(api):
    children = api.fill("SB00001", 12)
    api.parent("SB00001", who=JAIPUR_2)
    api.fill("SB00002", 1)  # scans of another parent: not this one's
    response = lookup(api, "SB00001")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bag"] == public_bag(api, "SB00001") and body["bag"]["children"] == children
    assert body["parent"] is None
    truth = last_scans_in_db(api, "SB00001")
    assert len(truth) == 10 and shown(body["last_scans"]) == truth
    assert body["last_scans"][0]["kind"] == "parent" and body["last_scans"][0]["username"] == "jaya"


def test_a_child_shows_its_parent_without_children_and_its_own_scans(api):
    children = api.fill("M444-00001", 3)
    api.child("M444-00001", children[1], who=JAIPUR_2)  # a repeat
    body = lookup(api, children[1].lower() + "%0D").json()  # normalised like every QR
    assert body["bag"] == public_bag(api, children[1]) and body["bag"]["parent_qr"] == "M444-00001"
    assert body["parent"] == {**public_bag(api, "M444-00001"), "children": None}
    assert body["parent"]["child_count"] == 3
    truth = last_scans_in_db(api, children[1])
    assert len(truth) == 2 and shown(body["last_scans"]) == truth
    assert [s["repeat"] for s in body["last_scans"]] == [True, False]


def test_an_unlinked_child_has_no_parent(api):
    api.fill("SB00001", 1)
    api.unlink("SB00001", "CH00001000")
    body = lookup(api, "CH00001000").json()
    assert body["bag"] == public_bag(api, "CH00001000") and body["parent"] is None
    assert [s["kind"] for s in body["last_scans"]] == ["unlink", "child"]


def test_an_area_filter_hides_another_areas_bag_as_if_it_did_not_exist(api):
    api.fill("SB00001", 1, who=JAIPUR)
    assert lookup(api, "SB00001", area="jaipur").status_code == 200
    for qr in ("SB00001", "CH00001000"):
        hidden = lookup(api, qr, area="akola")
        missing = lookup(api, qr.replace("1", "9"), area="akola")
        assert hidden.status_code == missing.status_code == 404
        assert "jaipur" not in hidden.text.lower()
        assert hidden.json()["detail"] == missing.json()["detail"].replace("9", "1") == f"no bag {qr}"


def test_an_area_filter_keeps_the_last_scans_to_that_area(api):
    api.fill("SB00001", 1, who=JAIPUR)
    with db_session(api.app) as session:  # a scan of the QR from another area (an older bag of that code)
        session.execute(insert(Scan).values(kind="parent", parent_qr="SB00001", dispatch_area="akola", user_id=99,
                                            username="old", repeat=False))
        session.commit()
    assert len(lookup(api, "SB00001").json()["last_scans"]) == 3
    scoped = lookup(api, "SB00001", area="jaipur").json()["last_scans"]
    assert shown(scoped) == last_scans_in_db(api, "SB00001", "jaipur") and len(scoped) == 2


@pytest.mark.parametrize("qr, status", [("SB09999", 404), ("CH-NOBODY", 404), ("no such thing", 422),
                                        ("BILL_20260101_0001", 422), ("X" * 65, 422)])
def test_unknown_and_malformed_codes_answer_as_the_public_lookup(api, qr, status):
    assert lookup(api, qr).status_code == status
    assert api.bag(qr, who=ADMIN).status_code == status


# --- plans (PostgreSQL) ---

AREAS = ["lucknow", "indore", "jaipur", "hisar", "sri_ganganagar", "sangaria", "bathinda", "raipur", "ranchi", "akola"]
PARENTS, CHILDREN_EACH, SCANS = 2_000, 20, 200_000
SEED = f"""
INSERT INTO bags (id, qr_id, type, status, dispatch_area, capacity, child_count, created_by, created_at, updated_at)
SELECT p, 'SB' || lpad(p::text, 5, '0'), 'parent', 'in_progress', (ARRAY{AREAS})[1 + p % 10], 30, {CHILDREN_EACH},
       'disp', now(), now()
FROM generate_series(1, {PARENTS}) AS p;
INSERT INTO bags (id, qr_id, type, status, dispatch_area, parent_id, child_count, created_by, created_at, updated_at)
SELECT {PARENTS} + c, 'CH' || lpad(c::text, 8, '0'), 'child', 'completed', (ARRAY{AREAS})[1 + (1 + (c - 1) / {CHILDREN_EACH}) % 10],
       1 + (c - 1) / {CHILDREN_EACH}, 0, 'disp', now(), now()
FROM generate_series(1, {PARENTS * CHILDREN_EACH}) AS c;
INSERT INTO scans (id, kind, parent_qr, child_qr, dispatch_area, user_id, username, repeat, created_at)
SELECT n, 'child', 'SB' || lpad(p::text, 5, '0'), 'CH' || lpad(((p - 1) * {CHILDREN_EACH} + 1 + (n / {PARENTS}) % {CHILDREN_EACH})::text, 8, '0'),
       (ARRAY{AREAS})[1 + p % 10], 1 + p % 10, 'disp_' || (p % 10), false, now() - interval '1 second' * ({SCANS} - n)
FROM (SELECT n, 1 + n % {PARENTS} AS p FROM generate_series(1, {SCANS}) AS n) AS s;
-- Akola went quiet half the table ago: its newer half of scans were Lucknow's.
UPDATE scans SET dispatch_area = 'lucknow' WHERE dispatch_area = 'akola' AND id > {SCANS // 2};
"""


@pytest.fixture(scope="module")
def plan_db():
    yield from seeded_pg_database(f"bt_test_feedplans_{os.getpid()}", "scanning", SEED)


LATE = SCANS - 500  # an after_id a follower holds: 500 scans ago
PAGE_ROWS = 2 * 51 + 10  # an area's page: its ids off the area index, then those rows
BAG_SCANS = 250  # a bag's own scans (a parent: about its capacity, plus repeats), each arm may read them all
PLANS = [
    # (name, statement, the index it must read, rows it may touch)
    ("feed", repo.feed_query(limit=51), "scans_pkey", 60),
    ("feed after_id", repo.feed_query(newer_than=LATE, limit=51), "scans_pkey", 60),
    ("feed of an area", repo.feed_query(area="jaipur", limit=51), "ix_scans_area_id", PAGE_ROWS),
    ("feed of an area after_id", repo.feed_query(area="jaipur", newer_than=LATE - 5000, limit=51), "ix_scans_area_id",
     PAGE_ROWS),
    ("feed of an area gone quiet", repo.feed_query(area="akola", limit=51), "ix_scans_area_id", PAGE_ROWS),
    ("latest id", repo.latest_scan_query(), "scans_pkey", 5),
    ("latest id of an area", repo.latest_scan_query(area="jaipur"), "ix_scans_area_id", 5),
    ("latest id of an area gone quiet", repo.latest_scan_query(area="akola"), "ix_scans_area_id", 5),
    ("last scans of a parent", repo.last_scans_query("SB00042", limit=10), "ix_scans_parent_qr_id", BAG_SCANS),
    ("last scans of a child", repo.last_scans_query("CH00000842", limit=10), "ix_scans_child_qr_id", BAG_SCANS),
    ("last scans of a parent in an area", repo.last_scans_query("SB00042", area="jaipur", limit=10),
     "ix_scans_parent_qr_id", BAG_SCANS),
    ("a parent with its children", repo.bag_parent_children_query("SB00042"), "uq_bags_qr_id", 60),
    ("a child with its parent", repo.bag_parent_children_query("CH00000842"), "uq_bags_qr_id", 60),
]


@pytest.mark.parametrize("name", [name for name, *_ in PLANS])
def test_the_feed_and_lookup_queries_read_an_index_and_a_bounded_number_of_rows(plan_db, name):
    _, statement, index, max_rows = next(p for p in PLANS if p[0] == name)
    plan = explain(plan_db, statement)
    nodes = list(plan_nodes(plan))
    said = f"{name}\n{compile_sql(statement)}\n{json.dumps(plan, indent=1)}"
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], f"sequential scan: {said}"
    assert index in {n.get("Index Name") for n in nodes}, f"not on {index}: {said}"
    assert plan["Actual Rows"] > 0, f"found nothing: {said}"
    assert rows_touched(nodes) <= max_rows, f"read {rows_touched(nodes):,} rows: {said}"


def test_the_last_scans_read_each_arm_off_its_own_index(plan_db):
    plan = explain(plan_db, repo.last_scans_query("CH00000842", limit=10))
    used = {n.get("Index Name") for n in plan_nodes(plan) if n["Node Type"] != "Seq Scan"}
    assert {"ix_scans_parent_qr_id", "ix_scans_child_qr_id"} <= used, json.dumps(plan)
    assert plan["Actual Rows"] == 5  # CH00000842's five scans

