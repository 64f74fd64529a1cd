"""GET /dashboard/lookup/{code}: a QR composed from scanning (the bag, its parent or children, its last scans) and
billing (its bill, or its parent's), a bill code from billing; area rules; bad codes; answered within 100 ms."""
from __future__ import annotations

import httpx
from sqlalchemy import select

from services.scanning.models import Scan
from tests.dashboard.conftest import AKOLA, BILLER, JAIPUR, headers, new_parent

BUDGET = 0.1  # seconds: every answer, whatever the sources do


def public_bag(dash, qr: str) -> dict:
    """The bag as scanning's own GET /bags/{qr} shows it to a biller."""
    response = httpx.get(dash.scanning.url + f"/bags/{qr}", headers=headers(BILLER))
    assert response.status_code == 200, response.text
    return response.json()


def scan_ids_of(dash, qr: str, area: str | None = None) -> list[int]:
    """Ground truth: the ids of the last 10 scans touching `qr`, newest first."""
    table = Scan.__table__
    query = select(table.c.id).where((table.c.parent_qr == qr) | (table.c.child_qr == qr))
    if area:
        query = query.where(table.c.dispatch_area == area)
    with dash.scanning.engine().connect() as conn:
        return list(conn.execute(query.order_by(table.c.id.desc()).limit(10)).scalars())


def lookup(dash, code: str, who=BILLER):
    response, seconds = dash.timed(f"/dashboard/lookup/{code}", who)
    assert seconds < BUDGET, f"lookup took {seconds * 1000:.0f} ms"
    return response


def test_a_parent_shows_its_children_last_scans_and_bill(dash):
    parent, kids = dash.fill(3)
    bill_id = dash.new_bill(capacity=2)
    dash.add_to_bill(bill_id, parent)
    response = lookup(dash, parent.lower())  # typed in lower case: normalised like every QR
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["kind"], body["code"], body["status"], body["source"]) == ("bag", parent, "fresh", "scanning")
    assert body["bag"] == public_bag(dash, parent)
    assert sorted(body["bag"]["children"]) == sorted(kids) and body["bag"]["child_count"] == 3
    assert body["parent"] is None
    assert [scan["id"] for scan in body["last_scans"]] == scan_ids_of(dash, parent)
    assert {scan["username"] for scan in body["last_scans"]} == {"jai"}
    bill = body["bill"]
    assert (bill["status"], bill["source"]) == ("fresh", "billing")
    assert bill["data"]["bill"]["bill_id"] == bill_id and bill["data"]["bill"]["linked_count"] == 1
    assert (body["sources"], body["down"]) == ({"scanning": "up", "billing": "up"}, [])


def test_a_child_shows_its_parent_and_the_bill_of_its_parent(dash):
    parent, kids = dash.fill(2)
    bill_id = dash.new_bill()
    dash.add_to_bill(bill_id, parent)
    body = lookup(dash, kids[1]).json()
    assert body["bag"] == public_bag(dash, kids[1])
    assert body["bag"]["type"] == "child" and body["bag"]["parent_qr"] == parent
    assert body["parent"]["qr_id"] == parent and body["parent"]["child_count"] == 2
    assert [scan["id"] for scan in body["last_scans"]] == scan_ids_of(dash, kids[1])
    assert body["bill"]["data"]["bill"]["bill_id"] == bill_id


def test_a_parent_on_no_bill_says_so(dash):
    parent, _ = dash.fill(1)
    body = lookup(dash, parent).json()
    assert body["bill"]["status"] == "fresh" and body["bill"]["data"] == {"bill": None}


def test_a_bill_code_gives_the_bill_with_its_parents(dash):
    first, _ = dash.fill(2)
    second, _ = dash.fill(1)
    bill_id = dash.new_bill(capacity=3)
    dash.add_to_bill(bill_id, first)
    dash.add_to_bill(bill_id, second)
    body = lookup(dash, bill_id.lower()).json()
    truth = httpx.get(dash.billing.url + f"/bills/{bill_id}", headers=headers(BILLER)).json()
    assert (body["kind"], body["code"], body["status"], body["source"]) == ("bill", bill_id, "fresh", "billing")
    shown = body["bill"]
    assert [bag["parent_qr"] for bag in shown["bags"]] == [bag["parent_qr"] for bag in truth["bags"]] == [first, second]
    for field in ("bill_id", "status", "capacity", "linked_count", "expected_weight_kg", "actual_weight_kg"):
        assert shown[field] == truth[field], field
    assert shown["actual_weight_kg"] == 3
    assert (body["sources"], body["down"]) == ({"billing": "up"}, [])


def test_a_dispatcher_sees_their_own_bag_without_any_bill(dash):
    parent, _ = dash.fill(1, who=JAIPUR)
    body = lookup(dash, parent, who=JAIPUR).json()
    assert body["bag"]["qr_id"] == parent and "bill" not in body
    assert [scan["id"] for scan in body["last_scans"]] == scan_ids_of(dash, parent, "jaipur")
    assert body["sources"] == {"scanning": "up"}


def test_another_areas_bag_is_a_404_like_an_unknown_one(dash):
    parent, kids = dash.fill(1, who=JAIPUR)
    elsewhere = lookup(dash, parent, who=AKOLA)
    child_elsewhere = lookup(dash, kids[0], who=AKOLA)
    unknown = lookup(dash, new_parent(), who=AKOLA)
    for response in (elsewhere, child_elsewhere, unknown):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "jaipur" not in response.text and "jai" not in response.text.replace(parent, "")
    assert elsewhere.json()["detail"] == f"no bag {parent}"
    assert set(elsewhere.json()) == set(unknown.json())
    assert lookup(dash, "SB99999", who=BILLER).status_code == 404


def test_bills_are_for_billers_and_admins(dash):
    bill_id = dash.new_bill()
    assert lookup(dash, bill_id, who=JAIPUR).status_code == 403
    assert lookup(dash, "BILL_20000101_9999").status_code == 404


def test_a_code_that_is_neither_is_a_422(dash):
    for code in ("a%20b", "%F0%9F%98%80", "SB.1", "%00"):
        response = dash.get(f"/dashboard/lookup/{code}")
        assert response.status_code == 422, (code, response.text)
    assert dash.get("/dashboard/lookup/" + "A" * 65).status_code == 422
    # A well-formed code no QR format accepts: scanning's own 422, passed on.
    response = lookup(dash, "AB")
    assert response.status_code == 422 and "not a bag QR" in response.json()["detail"]


def test_no_token_is_a_401(dash):
    assert dash.client.get("/dashboard/lookup/SB00001").status_code == 401
