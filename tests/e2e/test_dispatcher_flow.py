"""A dispatcher's working day through the gateway only: scan parents and children, look bags up, undo,
read history; another area stays out of reach; retries land once; a biller deletes an empty parent."""
from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import bearer, create, login

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def people(gw_session, admin_token):
    tokens = {}
    for name, role, area in (("jaipur", "dispatcher", "jaipur"), ("akola", "dispatcher", "akola"), ("biller", "biller", None)):
        user = create(gw_session, admin_token, role, area)
        tokens[name] = bearer(login(gw_session, user["username"]).json()["access_token"])
    return tokens


@pytest.fixture(scope="module")
def codes():
    """Fresh parent numbers per run, so the module can run against a database that already has bags."""
    numbers = random.sample(range(10_000, 99_999), 4)
    return [f"SB{numbers[0]:05d}", f"SB{numbers[1]:05d}", f"M444-{numbers[2]:05d}", f"SB{numbers[3]:05d}"]


def test_the_dispatcher_flow(gw, people, codes):
    sb, other, m444, _ = codes
    me = people["jaipur"]
    first = gw.post("/scans/parent", json={"qr_id": sb.lower() + "\r\n"}, headers=me)
    assert first.status_code == 200 and first.json()["created"] is True
    assert first.json()["parent"]["dispatch_area"] == "jaipur"
    for i in range(3):
        scan = gw.post("/scans/child", json={"parent_qr": sb, "child_qr": f"{sb}-C{i}", "scan_id": f"{sb}-s{i}"}, headers=me)
        assert scan.status_code == 200, scan.text
    assert scan.json()["parent"]["child_count"] == 3 and scan.json()["parent"]["status"] == "in_progress"

    repeat = gw.post("/scans/child", json={"parent_qr": sb, "child_qr": f"{sb}-C0"}, headers=me)
    assert repeat.json()["repeat"] is True and repeat.json()["parent"]["child_count"] == 3
    gw.post("/scans/parent", json={"qr_id": other}, headers=me)
    conflict = gw.post("/scans/child", json={"parent_qr": other, "child_qr": f"{sb}-C0"}, headers=me)
    assert conflict.status_code == 409 and sb in conflict.json()["detail"]

    looked_up = gw.get(f"/bags/{sb}", headers=me).json()
    assert looked_up["children"] == [f"{sb}-C0", f"{sb}-C1", f"{sb}-C2"] and looked_up["weight_kg"] == 3
    assert gw.get(f"/bags/{sb}-C1", headers=me).json()["parent_qr"] == sb

    undo = gw.delete(f"/bags/{sb}/children/{sb}-C2", headers=me)
    assert undo.status_code == 200 and undo.json()["parent"]["child_count"] == 2
    assert gw.get(f"/bags/{sb}", headers=me).json()["child_count"] == 2

    listed = gw.get("/bags", params={"parent_qr": sb, "limit": 1}, headers=me).json()
    assert len(listed["items"]) == 1 and listed["next_cursor"]
    history = gw.get("/scans", params={"qr": sb}, headers=me).json()["items"]
    assert [s["kind"] for s in history][:2] == ["unlink", "child"]


def test_a_full_parent_refuses_more(gw, people, codes):
    m444 = codes[2]
    me = people["jaipur"]
    gw.post("/scans/parent", json={"qr_id": m444}, headers=me)
    statuses = [gw.post("/scans/child", json={"parent_qr": m444, "child_qr": f"K{m444[-5:]}{i:02d}"}, headers=me).status_code
                for i in range(16)]
    assert statuses == [200] * 15 + [409]
    assert gw.get(f"/bags/{m444}", headers=me).json()["status"] == "completed"


def test_another_areas_dispatcher_cannot_read_or_scan_it(gw, people, codes):
    sb = codes[0]
    them = people["akola"]
    assert gw.get(f"/bags/{sb}", headers=them).status_code == 404  # as if it did not exist
    assert gw.get("/bags", params={"dispatch_area": "jaipur"}, headers=them).status_code == 403
    assert gw.post("/scans/child", json={"parent_qr": sb, "child_qr": "INTRUDER1"}, headers=them).status_code == 404
    assert all(b["dispatch_area"] == "akola" for b in gw.get("/bags", headers=them).json()["items"])


def test_a_retried_write_lands_once(gw, people, codes):
    sb = codes[3]
    me = people["jaipur"]
    gw.post("/scans/parent", json={"qr_id": sb}, headers=me)
    body = {"parent_qr": sb, "child_qr": f"{sb}-R", "scan_id": f"retry-{sb}"}
    first = gw.post("/scans/child", json=body, headers=me)
    again = gw.post("/scans/child", json=body, headers=me)
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert len(gw.get("/scans", params={"qr": f"{sb}-R"}, headers=me).json()["items"]) == 1


def test_a_biller_deletes_an_empty_parent_but_not_a_full_one(gw, people, codes):
    sb, other = codes[0], codes[1]
    biller = people["biller"]
    assert gw.delete(f"/bags/{sb}", headers=biller).status_code == 409
    assert gw.delete(f"/bags/{other}", headers=people["jaipur"]).status_code == 403
    assert gw.delete(f"/bags/{other}", headers=biller).status_code == 204
    assert gw.get(f"/bags/{other}", headers=biller).status_code == 404


def test_parallel_scans_through_the_gateway_never_overfill_or_double_link(gw, stack, people):
    me = people["jaipur"]
    parent, rival = f"M444-{random.randint(10_000, 99_999)}", f"M444-{random.randint(10_000, 99_999)}"
    for qr in (parent, rival):
        gw.post("/scans/parent", json={"qr_id": qr}, headers=me)
    for i in range(13):
        gw.post("/scans/child", json={"parent_qr": parent, "child_qr": f"P{parent[-5:]}{i:02d}"}, headers=me)

    def scan(body):
        with httpx.Client(base_url=stack.url() + "/api/v1", timeout=10) as client:
            return client.post("/scans/child", json=body, headers=me).status_code

    racers = [{"parent_qr": parent, "child_qr": f"R{parent[-5:]}{i:02d}"} for i in range(8)]
    twins = [{"parent_qr": qr, "child_qr": f"T{parent[-5:]}X"} for qr in (parent, rival)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(scan, racers + twins))
    assert set(statuses) <= {200, 409} and statuses.count(200) <= 3
    full = gw.get(f"/bags/{parent}", headers=me).json()
    other = gw.get(f"/bags/{rival}", headers=me).json()
    assert full["child_count"] == len(full["children"]) == 15 and full["status"] == "completed"
    twin = gw.get(f"/bags/T{parent[-5:]}X", headers=me).json()
    assert twin["parent_qr"] in (parent, rival)
    assert (f"T{parent[-5:]}X" in full["children"]) + (f"T{parent[-5:]}X" in other["children"]) == 1
