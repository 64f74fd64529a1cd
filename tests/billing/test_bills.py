"""Billing's rules through its HTTP API, on each backend, with a real scanning process behind it (SPEC §2 Bills)."""
from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from services.scanning.models import Bag
from tests.billing.conftest import ADMIN, BILLER, BILLER_2, DISPATCHER, scanning_down, token_headers
from tests.support import wait_for


# --- codes ---

def test_a_bill_without_a_code_gets_the_next_code_of_the_warehouse_day(api):
    today = datetime.now(ZoneInfo("Asia/Kolkata")).strftime("%Y%m%d")
    first, second = api.create().json(), api.create().json()
    assert first["bill_id"] == f"BILL_{today}_0001" and second["bill_id"] == f"BILL_{today}_0002"
    assert first["status"] == "new" and first["linked_count"] == 0 and first["bags"] == []
    assert first["created_by"] == "bina"


def test_a_generated_code_taken_by_a_client_is_skipped(api):
    today = datetime.now(ZoneInfo("Asia/Kolkata")).strftime("%Y%m%d")
    assert api.create(bill_id=f"bill_{today}_0001").status_code == 201
    assert api.create().json()["bill_id"] == f"BILL_{today}_0002"


def test_codes_are_normalised_and_unique_case_insensitively(api):
    created = api.create(bill_id=" truck_7\u200b ")
    assert created.status_code == 201 and created.json()["bill_id"] == "TRUCK_7"
    again = api.create(bill_id="Truck_7")
    assert again.status_code == 409 and again.json()["bill_id"] == "TRUCK_7"
    assert api.get("truck_7").json()["bill_id"] == "TRUCK_7"


@pytest.mark.parametrize("code", ["SB00001", "M444-00001", "CHILD-1", "summary", "export.csv", "_X", "A_", "a b_c",
                                  "X" * 33 + "_"])
def test_a_code_that_is_not_a_bill_code_is_refused(api, code):
    response = api.create(bill_id=code)
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("invalid-bill-code")


@pytest.mark.parametrize("capacity", [0, 501, -1])
def test_capacity_is_1_to_500(api, capacity):
    assert api.create(capacity=capacity).status_code == 422


def test_reading_a_missing_bill_is_404(api):
    response = api.get("NOPE_1")
    assert response.status_code == 404 and "NOPE_1" in response.json()["detail"]


# --- roles ---

@pytest.mark.parametrize("method,path", [("GET", "/bills"), ("GET", "/bills/X_1"), ("POST", "/bills"),
                                         ("GET", "/bills/summary"), ("POST", "/bills/X_1/bags"),
                                         ("GET", "/bills/X_1/history")])
def test_dispatchers_get_403_reads_included(api, method, path):
    response = api.client.request(method, path, headers=token_headers(DISPATCHER), json={"capacity": 1})
    assert response.status_code == 403


def test_only_admins_delete_bills_and_export(api):
    bill = api.new_bill()
    assert api.client.delete(f"/bills/{bill}", headers=token_headers(BILLER)).status_code == 403
    assert api.client.get("/bills/export.csv", headers=token_headers(BILLER)).status_code == 403
    assert api.client.delete(f"/bills/{bill}", headers=token_headers(ADMIN)).status_code == 204
    assert api.get(bill).status_code == 404


def test_no_token_is_401(api):
    assert api.client.get("/bills").status_code == 401


# --- loading parents ---

def test_loading_a_parent_marks_it_and_counts_its_weights(api):
    bill = api.new_bill(capacity=2)
    api.parent("SB10001", children=12)
    response = api.add(bill, "sb10001")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "processing" and body["linked_count"] == 1
    assert body["expected_weight_kg"] == 30 and body["actual_weight_kg"] == 12
    assert [(b["parent_qr"], b["child_count"], b["weight_kg"], b["added_by"]) for b in body["bags"]] == [
        ("SB10001", 12, 12, "bina")]
    assert api.mark_of("SB10001")[0] == bill


def test_a_missing_parent_is_404_and_its_slot_given_back(api):
    bill = api.new_bill(capacity=1)
    response = api.add(bill, "SB10002")
    assert response.status_code == 404 and "SB10002" in response.json()["detail"]
    body = api.get(bill).json()
    assert body["linked_count"] == 0 and body["status"] == "new" and body["bags"] == []


@pytest.mark.parametrize("qr", ["CHILD-0001", "NOT A QR", "BILL_X"])
def test_what_is_not_a_parent_is_422(api, qr):
    bill = api.new_bill()
    response = api.add(bill, qr)
    assert response.status_code == 422, response.text
    assert api.get(bill).json()["linked_count"] == 0


def test_a_parent_is_on_one_bill_and_the_second_bill_is_told_which(api):
    first, second = api.new_bill(), api.new_bill()
    api.parent("SB10003")
    assert api.add(first, "SB10003").status_code == 201
    again = api.add(second, "SB10003")
    assert again.status_code == 409 and again.json()["bill_id"] == first and first in again.json()["detail"]
    same = api.add(first, "SB10003")
    assert same.status_code == 409 and "this bill" in same.json()["detail"]
    assert api.get(first).json()["linked_count"] == 1 and api.get(second).json()["linked_count"] == 0


def test_a_full_or_completed_bill_takes_no_more(api):
    bill = api.new_bill(capacity=1)
    for qr in ("SB10004", "SB10005"):
        api.parent(qr)
    assert api.add(bill, "SB10004").status_code == 201
    full = api.add(bill, "SB10005")
    assert full.status_code == 409 and full.json()["type"].endswith("bill-full")
    assert api.post(f"/bills/{bill}/complete").status_code == 200
    assert api.client.patch(f"/bills/{bill}", json={"capacity": 2}, headers=token_headers()).json()["status"] == "processing"
    assert api.post(f"/bills/{bill}/complete").status_code == 409  # 1 of 2
    assert api.client.patch(f"/bills/{bill}", json={"capacity": 1}, headers=token_headers()).status_code == 200
    assert api.post(f"/bills/{bill}/complete").json()["status"] == "completed"
    completed = api.add(bill, "SB10005")
    assert completed.status_code == 409 and completed.json()["type"].endswith("bill-completed")
    assert api.mark_of("SB10005") == (None, None)


# --- complete, reopen, edit ---

def test_complete_needs_a_bag_and_a_full_bill(api):
    bill = api.new_bill(capacity=2)
    empty = api.post(f"/bills/{bill}/complete")
    assert empty.status_code == 409 and "0 of 2" in empty.json()["detail"]
    for qr in ("SB10006", "SB10007"):
        api.parent(qr)
        api.add(bill, qr)
    done = api.post(f"/bills/{bill}/complete")
    assert done.status_code == 200 and done.json()["status"] == "completed" and done.json()["completed_at"]
    assert api.post(f"/bills/{bill}/complete").status_code == 409
    reopened = api.post(f"/bills/{bill}/reopen")
    assert reopened.status_code == 200 and reopened.json()["status"] == "processing"
    assert api.post(f"/bills/{bill}/reopen").status_code == 409


def test_capacity_never_goes_below_what_is_linked(api):
    bill = api.new_bill(capacity=3)
    for qr in ("SB10008", "SB10009"):
        api.parent(qr)
        api.add(bill, qr)
    below = api.client.patch(f"/bills/{bill}", json={"capacity": 1}, headers=token_headers())
    assert below.status_code == 409 and below.json()["linked_count"] == 2
    edited = api.client.patch(f"/bills/{bill}", json={"capacity": 2, "vehicle_number": "RJ14 AB 1234"},
                              headers=token_headers())
    assert edited.status_code == 200 and edited.json()["capacity"] == 2
    assert edited.json()["vehicle_number"] == "RJ14 AB 1234"


@pytest.mark.parametrize("body", [{}, {"capacity": None}, {"capacity": 0}, {"colour": "red"}])
def test_an_edit_that_says_nothing_valid_is_422(api, body):
    bill = api.new_bill()
    assert api.client.patch(f"/bills/{bill}", json=body, headers=token_headers()).status_code == 422


# --- removing ---

def test_removing_a_parent_recalculates_reopens_and_clears_the_mark(api):
    bill = api.new_bill(capacity=2)
    for qr, n in (("SB10010", 30), ("SB10011", 5)):
        api.parent(qr, children=n)
        api.add(bill, qr)
    api.post(f"/bills/{bill}/complete")
    response = api.remove(bill, "SB10010")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "processing" and body["linked_count"] == 1
    assert body["expected_weight_kg"] == 30 and body["actual_weight_kg"] == 5
    wait_for(lambda: api.mark_of("SB10010") == (None, None), what="mark cleared")
    assert api.mark_of("SB10011")[0] == bill
    assert api.remove(bill, "SB10010").status_code == 404
    last = api.remove(bill, "SB10011").json()
    assert last["status"] == "new" and last["linked_count"] == 0 and last["expected_weight_kg"] == 0


def test_deleting_a_bill_releases_its_parents(api):
    bill = api.new_bill(capacity=2)
    api.parent("SB10012")
    api.add(bill, "SB10012")
    assert api.client.delete(f"/bills/{bill}", headers=token_headers(ADMIN)).status_code == 204
    wait_for(lambda: api.mark_of("SB10012") == (None, None), what="mark cleared")
    other = api.new_bill()
    assert api.add(other, "SB10012").status_code == 201


def test_a_parent_removed_while_scanning_is_down_is_released_when_it_returns(api):
    bill = api.new_bill()
    api.parent("SB10013")
    api.add(bill, "SB10013")
    with scanning_down(api):
        assert api.remove(bill, "SB10013").status_code == 200
        time.sleep(0.5)  # the outbox tries and fails meanwhile
        assert api.mark_of("SB10013")[0] == bill
        assert api.outbox()[0]["attempts"] >= 1
    wait_for(lambda: api.mark_of("SB10013") == (None, None), timeout=15, what="mark cleared after scanning is back")
    wait_for(lambda: not api.outbox(), what="outbox empty")


def test_a_parent_re_added_keeps_its_new_mark_when_an_old_clear_arrives_late(api):
    """The clear names the link it undoes; the re-add is a new link."""
    bill = api.new_bill()
    api.parent("SB10014")
    api.add(bill, "SB10014")
    old_link = api.mark_of("SB10014")[1]
    with scanning_down(api):
        api.remove(bill, "SB10014")
    # The clear of the old link may or may not have gone out yet; the re-add's mark must survive it either way.
    assert api.add(bill, "SB10014").status_code == 201
    new_link = api.mark_of("SB10014")[1]
    assert new_link != old_link
    wait_for(lambda: not api.outbox(), timeout=15, what="outbox empty")
    assert api.mark_of("SB10014") == (bill, new_link)


# --- weights ---

def test_weights_follow_children_scanned_after_loading(api):
    bill = api.new_bill()
    api.parent("SB10015", children=3)
    api.add(bill, "SB10015")
    api.set_children("SB10015", 29)
    body = api.get(bill).json()
    assert body["actual_weight_kg"] == 29 and body["bags"][0]["child_count"] == 29
    assert body["counts"]["stale"] is False
    listed = api.client.get("/bills", headers=token_headers()).json()["items"][0]
    assert listed["actual_weight_kg"] == 29 and listed["counts"]["age_seconds"] is not None


@pytest.mark.parametrize("hung", [False, True], ids=["stopped", "hung"])
def test_with_scanning_away_bills_stay_readable_and_adding_fails_fast(api, hung):
    bill = api.new_bill(capacity=2)
    api.parent("SB10016", children=7)
    api.parent("SB10017")
    api.add(bill, "SB10016")
    api.set_children("SB10016", 9)
    with scanning_down(api, hung=hung):
        started = time.monotonic()
        read = api.get(bill)
        read_took = time.monotonic() - started
        assert read.status_code == 200
        assert read.json()["counts"]["stale"] is True and read.json()["actual_weight_kg"] == 7
        assert read.json()["counts"]["age_seconds"] is not None  # counted when the parent was loaded
        started = time.monotonic()
        add = api.add(bill, "SB10017")
        add_took = time.monotonic() - started
        assert add.status_code == 503 and add.headers["Retry-After"]
        assert add.headers["X-Dependency-Failure"] == "scanning"
        assert api.client.get("/bills", headers=token_headers()).status_code == 200
        assert api.client.patch(f"/bills/{bill}", json={"capacity": 1}, headers=token_headers()).status_code == 200
        assert api.post(f"/bills/{bill}/complete").status_code == 200
        assert api.post(f"/bills/{bill}/reopen").status_code == 200
        assert api.remove(bill, "SB10016").status_code == 200
        print(f"\nscanning {'hung' if hung else 'stopped'}: bill read {read_took * 1000:.0f} ms, "
              f"add 503 in {add_took * 1000:.0f} ms")
    assert api.get(bill).json()["linked_count"] == 0
    wait_for(lambda: api.mark_of("SB10017") == (None, None) and api.mark_of("SB10016") == (None, None),
             timeout=15, what="marks cleared")


# --- idempotency ---

def test_every_write_replays_with_its_idempotency_key(api):
    first = api.create(key="k-create", capacity=1)
    again = api.create(key="k-create", capacity=1)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    bill = first.json()["bill_id"]
    assert again.json()["bill_id"] == bill
    api.parent("SB10018")
    assert api.add(bill, "SB10018", key="k-add").status_code == 201
    replay = api.add(bill, "SB10018", key="k-add")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    for action in ("complete", "reopen"):
        one = api.client.post(f"/bills/{bill}/{action}", headers=token_headers(**{"Idempotency-Key": f"k-{action}"}))
        two = api.client.post(f"/bills/{bill}/{action}", headers=token_headers(**{"Idempotency-Key": f"k-{action}"}))
        assert one.status_code == two.status_code == 200 and two.headers["Idempotent-Replayed"] == "true"
    assert api.remove(bill, "SB10018", key="k-remove").status_code == 200
    assert api.remove(bill, "SB10018", key="k-remove").headers["Idempotent-Replayed"] == "true"
    assert api.create(key="k-create", capacity=2).status_code == 422  # same key, another request
    kinds = [e["kind"] for e in api.client.get(f"/bills/{bill}/history", headers=token_headers()).json()["items"]]
    assert kinds == ["create", "add", "complete", "reopen", "remove"]


# --- history, lists, summary, export ---

def test_history_says_who_did_what_and_when(api):
    bill = api.new_bill(capacity=1)
    api.parent("SB10019")
    api.add(bill, "SB10019", who=BILLER_2)
    api.post(f"/bills/{bill}/complete")
    api.client.patch(f"/bills/{bill}", json={"destination": "Delhi"}, headers=token_headers())
    page = api.client.get(f"/bills/{bill}/history?limit=2", headers=token_headers()).json()
    rest = api.client.get(f"/bills/{bill}/history?cursor={page['next_cursor']}", headers=token_headers()).json()
    events = page["items"] + rest["items"]
    assert [(e["kind"], e["username"], e["parent_qr"]) for e in events] == [
        ("create", "bina", None), ("add", "biju", "SB10019"), ("complete", "bina", None), ("edit", "bina", None)]
    assert events[3]["detail"] == {"from": {"destination": None}, "to": {"destination": "Delhi"}}
    assert all(e["created_at"] for e in events)


def test_lists_filter_search_and_page(api):
    a = api.new_bill(bill_id="DEL_1", destination="Delhi hub", vehicle_number="RJ14-1")
    b = api.new_bill(bill_id="JPR_1", destination="Jaipur", description="fragile 100%")
    c = api.create(who=BILLER_2, bill_id="DEL_2", destination="delhi east").json()["bill_id"]

    def codes(query: str) -> list[str]:
        return [item["bill_id"] for item in api.client.get(f"/bills?{query}", headers=token_headers()).json()["items"]]

    assert codes("") == [c, b, a]
    assert codes("q=delhi") == [c, a]
    assert codes("q=rj14") == [a]
    assert codes("q=100%25") == [b]
    assert codes("q=_") == [c, b, a]
    assert codes("created_by=biju") == [c]
    assert codes("status=new") == [c, b, a] and codes("status=completed") == []
    first = api.client.get("/bills?limit=2", headers=token_headers()).json()
    second = api.client.get(f"/bills?limit=2&cursor={first['next_cursor']}", headers=token_headers()).json()
    assert [i["bill_id"] for i in first["items"] + second["items"]] == [c, b, a] and second["next_cursor"] is None
    assert api.client.get("/bills?cursor=WyJcdTAwMDAiXQ", headers=token_headers()).status_code == 400
    assert api.client.get("/bills?status=lost", headers=token_headers()).status_code == 422
    assert api.client.get("/bills?created_from=2024", headers=token_headers()).status_code == 422


def test_the_day_summary_groups_by_status_and_creator(api):
    one = api.new_bill(capacity=1)
    api.new_bill(capacity=1)
    api.create(who=BILLER_2, capacity=3)
    api.parent("SB10020", children=10)
    api.add(one, "SB10020")
    api.post(f"/bills/{one}/complete")
    body = api.client.get("/bills/summary", headers=token_headers()).json()
    assert body["date"] == datetime.now(ZoneInfo("Asia/Kolkata")).date().isoformat()
    assert body["timezone"] == "Asia/Kolkata"
    assert body["totals"] == {"bills": 3, "bags": 1, "expected_weight_kg": 30, "actual_weight_kg": 10}
    assert body["by_status"]["completed"]["bills"] == 1 and body["by_status"]["new"]["bills"] == 2
    assert body["by_creator"]["bina"]["bills"] == 2 and body["by_creator"]["biju"]["by_status"]["new"]["bills"] == 1
    yesterday = (datetime.now(ZoneInfo("Asia/Kolkata")).date() - timedelta(days=1)).isoformat()
    assert api.client.get(f"/bills/summary?date={yesterday}", headers=token_headers()).json()["totals"]["bills"] == 0
    for bad in ("2026-13-01", "9999-12-31", "yesterday", "0", "20261128"):
        assert api.client.get(f"/bills/summary?date={bad}", headers=token_headers()).status_code == 422


def test_the_csv_export_streams_every_bill(api):
    for n in range(3):
        api.new_bill(bill_id=f"CSV_{n}", destination="Delhi, north")
    response = api.client.get("/bills/export.csv", headers=token_headers(ADMIN))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    lines = response.text.strip().splitlines()
    assert lines[0].startswith("bill_id,status,capacity") and len(lines) == 4
    assert '"Delhi, north"' in lines[1]


def test_a_stale_mark_of_another_bill_is_cleared_when_the_parent_is_loaded(api):
    """Scanning still marks the parent for a bill that no longer holds it (its clear is queued, or its add died):
    billing holds the parent on no bill, so the add clears that mark by its link and marks it anew."""
    bill = api.new_bill()
    api.parent("SB10021")
    with api.scanning_db.begin() as conn:
        conn.execute(update(Bag.__table__).where(Bag.__table__.c.qr_id == "SB10021").values(
            bill_id="GONE_1", bill_link=987654, billed_at=datetime.now(ZoneInfo("UTC"))))
    response = api.add(bill, "SB10021")
    assert response.status_code == 201, response.text
    assert api.mark_of("SB10021")[0] == bill
