"""Parent and child scans: every rule of SPEC §2 and its status, on SQLite and PostgreSQL."""
from datetime import timedelta

from services.scanning.models import Bag, Scan
from shared.timeutil import utcnow
from shared.unit_of_work import IDEMPOTENT_REQUESTS, purge_idempotency_keys
from tests.scanning.conftest import ADMIN, BILLER


def test_first_parent_scan_creates_it_in_the_dispatchers_area(api):
    response = api.parent("sb00001\r\n")
    assert response.status_code == 200
    body = response.json()
    assert body["created"] is True and body["repeat"] is False and body["child"] is None
    parent = body["parent"]
    assert (parent["qr_id"], parent["type"], parent["status"], parent["dispatch_area"]) == ("SB00001", "parent", "pending", "jaipur")
    assert (parent["capacity"], parent["child_count"], parent["weight_kg"], parent["children"]) == (30, 0, 0, [])
    assert parent["created_by"] == "jai" and parent["parent_qr"] is None


def test_scanning_a_known_parent_selects_it_and_still_writes_a_scan(api):
    api.parent("SB00001")
    again = api.parent("SB00001").json()
    assert again["created"] is False and again["repeat"] is True
    assert len(api.db_rows(Scan, kind="parent", parent_qr="SB00001")) == 2
    assert len(api.db_rows(Bag, qr_id="SB00001")) == 1


def test_m444_parents_hold_fifteen(api):
    assert api.parent("M444-00001").json()["parent"]["capacity"] == 15


def test_a_child_code_or_garbage_is_not_a_parent(api):
    for qr in ("CHILD-1", "x", "SB 12345", "A" * 65):
        response = api.parent(qr)
        assert response.status_code == 422, qr
        assert response.headers["content-type"] == "application/problem+json"


def test_child_scan_creates_and_links_the_child(api):
    api.parent("SB00001")
    response = api.child("SB00001", "ch-0001")
    assert response.status_code == 200
    body = response.json()
    assert body["repeat"] is False and body["created"] is True
    assert (body["parent"]["child_count"], body["parent"]["status"], body["parent"]["weight_kg"]) == (1, "in_progress", 1)
    assert body["parent"]["children"] == ["CH-0001"]
    child = body["child"]
    assert (child["qr_id"], child["type"], child["parent_qr"], child["dispatch_area"], child["weight_kg"]) == (
        "CH-0001", "child", "SB00001", "jaipur", 1)


def test_the_same_child_again_is_a_flagged_repeat_that_changes_nothing(api):
    api.parent("SB00001")
    api.child("SB00001", "CH-0001")
    again = api.child("SB00001", "ch-0001 ")
    assert again.status_code == 200 and again.json()["repeat"] is True
    assert again.json()["parent"]["child_count"] == 1
    assert len(api.db_rows(Bag, type="child")) == 1


def test_a_child_on_another_parent_is_409_naming_that_parent(api):
    api.parent("SB00001")
    api.parent("SB00002")
    api.child("SB00001", "CH-0001")
    response = api.child("SB00002", "CH-0001")
    assert response.status_code == 409
    assert "SB00001" in response.json()["detail"] and response.json()["parent_qr"] == "SB00001"
    assert api.bag("SB00002").json()["child_count"] == 0


def test_reaching_capacity_completes_the_parent_and_a_full_parent_is_409(api):
    api.fill("M444-00001", 14)
    last = api.child("M444-00001", "CHLAST1")
    assert last.json()["parent"]["status"] == "completed" and last.json()["parent"]["child_count"] == 15
    over = api.child("M444-00001", "CHOVER1")
    assert over.status_code == 409 and "full" in over.json()["detail"]
    assert api.db_rows(Bag, qr_id="CHOVER1") == []


def test_a_parent_code_cannot_be_a_child_and_a_child_needs_its_parent_scanned(api):
    api.parent("SB00001")
    api.parent("SB00002")
    assert api.child("SB00001", "SB00002").status_code == 422
    assert api.child("SB00001", "SB00001").status_code == 422
    assert api.child("SB09999", "CH-0001").status_code == 404
    assert api.child("CH-0002", "CH-0001").status_code == 422


def test_billers_do_not_scan(api):
    assert api.parent("SB00001", who=BILLER).status_code == 403


def test_admins_scan_new_parents_into_a_named_area(api):
    assert api.parent("SB00001", who=ADMIN).status_code == 422
    assert api.parent("SB00001", who=ADMIN, dispatch_area="atlantis").status_code == 422
    created = api.parent("SB00001", who=ADMIN, dispatch_area="Akola")
    assert created.status_code == 200 and created.json()["parent"]["dispatch_area"] == "akola"


def test_a_retried_child_scan_with_its_scan_id_replays_and_writes_once(api):
    api.parent("SB00001")
    first = api.child("SB00001", "CH-0001", scan_id="scan-1")
    retry = api.child("SB00001", "CH-0001", scan_id="scan-1")
    assert first.status_code == retry.status_code == 200
    assert first.json() == retry.json() and retry.json()["repeat"] is False
    assert first.headers["Idempotent-Replayed"] == "false" and retry.headers["Idempotent-Replayed"] == "true"
    assert len(api.db_rows(Scan, kind="child")) == 1


def test_the_idempotency_key_header_works_like_scan_id(api):
    api.parent("SB00001")
    key = {"Idempotency-Key": "k-77"}
    api.child("SB00001", "CH-0001", headers=key)
    assert api.child("SB00001", "CH-0001", headers=key).headers["Idempotent-Replayed"] == "true"
    assert len(api.db_rows(IDEMPOTENT_REQUESTS)) == 1


def test_a_scan_id_reused_for_another_request_is_422(api):
    api.parent("SB00001")
    api.child("SB00001", "CH-0001", scan_id="scan-1")
    response = api.child("SB00001", "CH-0002", scan_id="scan-1")
    assert response.status_code == 422 and "already used" in response.json()["detail"]
    assert api.db_rows(Bag, qr_id="CH-0002") == []


def test_a_failed_scan_is_not_recorded_so_its_retry_runs_again(api):
    response = api.child("SB00001", "CH-0001", scan_id="scan-9")
    assert response.status_code == 404
    api.parent("SB00001")
    assert api.child("SB00001", "CH-0001", scan_id="scan-9").status_code == 200


def test_scan_bodies_are_validated(api):
    headers = api.headers()
    assert api.client.post("/scans/child", json={"parent_qr": "SB00001"}, headers=headers).status_code == 422
    assert api.client.post("/scans/parent", json={"qr_id": "SB00001", "colour": "red"}, headers=headers).status_code == 422
    assert api.client.post("/scans/parent", content=b"SB00001", headers=headers).status_code in (400, 422)
    assert api.client.post("/scans/parent", json={"qr_id": "SB00001"}).status_code == 401


def test_old_idempotency_keys_are_purged_in_batches(api):
    for n in range(5):
        api.parent("SB00001", scan_id=f"old-{n}")

    def purge(before, batch=2):
        state = api.app.state
        return api.client.portal.call(lambda: purge_idempotency_keys(state.db, state.cache, before, batch=batch))

    assert purge(utcnow() - timedelta(hours=1)) == 0
    assert purge(utcnow() + timedelta(seconds=1)) == 5  # three batches: 2, 2, 1
    assert api.parent("SB00001", scan_id="old-0").headers["Idempotent-Replayed"] == "false"
