"""The dashboard's reads of billing (/internal/bills/events, /internal/bills/lookup/{code},
/internal/parents/{qr}/bill) against what was really billed, on each backend, with a real scanning behind it;
and, on PostgreSQL, their plans on 50,000 bills."""
from __future__ import annotations

import json
import os
import time
from datetime import datetime

import pytest
from sqlalchemy import text

from services.billing import repository as repo
from services.billing.models import BillEvent, BillParent
from shared.timeutil import as_utc
from tests.billing.conftest import BILLER_2, scanning_down, token_headers
from tests.billing.test_scale import SEED
from tests.scanning.test_scale import explain, plan_nodes, rows_touched
from tests.support import db_session, seeded_pg_database


def events(api, **params):
    response = api.client.get("/internal/bills/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def events_in_db(api) -> list[dict]:
    """Ground truth, newest first, in the feed's item shape."""
    with db_session(api.app) as session:
        rows = session.query(BillEvent).order_by(BillEvent.id.desc()).all()
    return [{"id": e.id, "bill_id": e.bill_id, "kind": e.kind, "parent_qr": e.parent_qr, "user_id": e.user_id,
             "username": e.username, "created_at": as_utc(e.created_at)} for e in rows]


def shown(items: list[dict]) -> list[dict]:
    return [{**item, "created_at": datetime.fromisoformat(item["created_at"])} for item in items]


def a_loaded_bill(api) -> str:
    """A bill created by one biller, loaded and completed by another."""
    bill = api.new_bill(capacity=1)
    api.parent("SB20001", children=30)
    assert api.add(bill, "SB20001", who=BILLER_2).status_code == 201
    assert api.post(f"/bills/{bill}/complete", who=BILLER_2).status_code == 200
    return bill


# --- the activity feed ---

def test_the_feed_shows_every_change_to_bills_newest_first_with_user_and_time(api):
    bill = a_loaded_bill(api)
    body = events(api)
    truth = events_in_db(api)
    assert shown(body["items"]) == truth
    assert [(e["kind"], e["parent_qr"], e["username"], e["user_id"]) for e in body["items"]] == [
        ("complete", None, "biju", 32), ("add", "SB20001", "biju", 32), ("create", None, "bina", 31)]
    assert {e["bill_id"] for e in body["items"]} == {bill}
    assert body["latest_id"] == truth[0]["id"]


def test_after_id_gives_only_what_is_newer_and_latest_id_holds_when_nothing_is(api):
    assert events(api) == {"items": [], "latest_id": 0}
    api.new_bill()
    seen = events(api)["latest_id"]
    assert seen > 0 and events(api, after_id=seen) == {"items": [], "latest_id": seen}
    bill = a_loaded_bill(api)
    newer = events(api, after_id=seen)
    assert shown(newer["items"]) == events_in_db(api)[:3] and {e["bill_id"] for e in newer["items"]} == {bill}
    assert newer["latest_id"] == newer["items"][0]["id"]
    assert [e["kind"] for e in events(api, after_id=seen, limit=2)["items"]] == ["complete", "add"]
    assert events(api, after_id=2**31 - 1) == {"items": [], "latest_id": newer["latest_id"]}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"after_id": -1}, {"after_id": 2**31},
                                    {"after_id": "x"}])
def test_bad_feed_parameters_are_422(api, params):
    response = api.client.get("/internal/bills/events", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


# --- a bill by its code ---

def without_count_time(bill: dict) -> dict:
    """A fresh read stamps its counts with the moment it asked scanning, a stale one with their age at that moment:
    all else is the bill."""
    return {**bill, "counts": {**bill["counts"], "counted_at": None, "age_seconds": None}}


def test_a_bill_is_looked_up_exactly_as_the_public_read_shows_it_whatever_the_case(api):
    bill = a_loaded_bill(api)
    api.set_children("SB20001", 28)  # fresh counts, asked of scanning by both reads
    looked_up = api.client.get(f"/internal/bills/lookup/{bill.lower()}")
    assert looked_up.status_code == 200, looked_up.text
    body = looked_up.json()
    assert without_count_time(body) == without_count_time(api.get(bill).json())
    assert body["bill_id"] == bill and body["actual_weight_kg"] == 28 and body["counts"]["stale"] is False
    assert [(b["parent_qr"], b["child_count"]) for b in body["bags"]] == [("SB20001", 28)]


@pytest.mark.parametrize("hung", [False, True], ids=["stopped", "hung"])
def test_with_scanning_away_a_looked_up_bill_has_its_stored_counts_marked_stale(api, hung):
    bill = a_loaded_bill(api)
    api.set_children("SB20001", 12)
    with scanning_down(api, hung=hung):
        started = time.monotonic()
        body = api.client.get(f"/internal/bills/lookup/{bill}").json()
        took = time.monotonic() - started
        assert without_count_time(body) == without_count_time(api.get(bill).json())
    assert body["counts"]["stale"] is True and body["actual_weight_kg"] == 30
    assert took < api.app.state.settings.counts_timeout + 0.5
    print(f"\nscanning {'hung' if hung else 'stopped'}: internal bill lookup {took * 1000:.0f} ms (stale)")


@pytest.mark.parametrize("code, status", [("NOPE_1", 404), ("SB20001", 422), ("CHILD-1", 422), ("a b_c", 422)])
def test_unknown_and_malformed_codes_answer_as_the_public_read(api, code, status):
    assert api.client.get(f"/internal/bills/lookup/{code}").status_code == status
    assert api.get(code).status_code == status


# --- the bill holding a parent ---

def test_a_billed_parent_names_its_bill(api):
    bill = a_loaded_bill(api)
    body = api.client.get("/internal/parents/sb20001%0D/bill").json()  # normalised like every QR
    with db_session(api.app) as session:
        added_at = session.query(BillParent).filter_by(parent_qr="SB20001").one().added_at
    assert body == {"bill": {"bill_id": bill, "status": "completed", "capacity": 1, "linked_count": 1,
                             "added_at": body["bill"]["added_at"], "pending": False}}
    assert datetime.fromisoformat(body["bill"]["added_at"]) == as_utc(added_at)


def test_a_parent_still_being_added_is_shown_pending(api):
    bill = api.new_bill(capacity=3)
    with db_session(api.app) as session:  # a slot claimed, scanning not yet answered (what add_parent writes first)
        pk = session.execute(text("SELECT id FROM bills WHERE bill_key = :k"), {"k": bill}).scalar()
        session.add(BillParent(bill_pk=pk, parent_qr="SB20004", state="pending", capacity=0, child_count=0,
                               added_by="bina"))
        session.commit()
    shown_bill = api.client.get("/internal/parents/SB20004/bill").json()["bill"]
    assert (shown_bill["bill_id"], shown_bill["pending"], shown_bill["status"]) == (bill, True, "new")


def test_an_unbilled_or_unknown_parent_has_no_bill(api):
    bill = api.new_bill(capacity=2)
    api.parent("SB20002")
    api.parent("SB20003")
    api.add(bill, "SB20002")
    api.remove(bill, "SB20002")
    for qr in ("SB20002", "SB20003", "SB29999"):
        response = api.client.get(f"/internal/parents/{qr}/bill")
        assert response.status_code == 200 and response.json() == {"bill": None}


def test_a_bill_code_is_not_a_parent(api):
    assert api.client.get("/internal/parents/BILL_20260101_0001/bill").status_code == 422


def test_the_internal_routes_need_no_token_and_shadow_no_public_route(api):
    bill = api.new_bill()
    assert api.client.get(f"/bills/{bill}").status_code == 401  # the public read still wants a biller
    assert api.client.get(f"/bills/{bill}", headers=token_headers()).status_code == 200
    assert api.client.get(f"/internal/bills/{bill}").status_code == 404  # no catch-all under /internal/bills


# --- plans (PostgreSQL) ---

@pytest.fixture(scope="module")
def plan_db():
    yield from seeded_pg_database(f"bt_test_billfeed_{os.getpid()}", "billing", SEED)


PLANS = [
    ("events feed", repo.events_feed_query(limit=51), "bill_events_pkey", 60),
    ("events feed after_id", repo.events_feed_query(newer_than=149_000, limit=51), "bill_events_pkey", 60),
    ("latest event id", repo.latest_event_query(), "bill_events_pkey", 5),
    ("the bill holding a parent", repo.parent_bill_query("SB030000"), "bill_parents_parent_qr_key", 5),
]


@pytest.mark.parametrize("name", [name for name, *_ in PLANS])
def test_the_feed_and_parent_queries_read_an_index_and_a_bounded_number_of_rows(plan_db, name):
    _, statement, index, max_rows = next(p for p in PLANS if p[0] == name)
    plan = explain(plan_db, statement)
    nodes = list(plan_nodes(plan))
    said = f"{name}\n{json.dumps(plan, indent=1)}"
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], f"sequential scan: {said}"
    assert index in {n.get("Index Name") for n in nodes}, f"not on {index}: {said}"
    assert plan["Actual Rows"] > 0 and rows_touched(nodes) <= max_rows, f"read {rows_touched(nodes):,} rows: {said}"

