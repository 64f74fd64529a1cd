"""The live dashboard through the gateway, as a browser's EventSource uses it: a single-use ticket, a scan seen
within 2 s, each dispatcher's own area only, heartbeats, Last-Event-ID resuming; and the read routes' numbers."""
from __future__ import annotations

import random
import time

import httpx
import pytest

from tests.e2e.conftest import bearer, create, login
from tests.sse import EventReader

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def people(gw_session, admin_token):
    tokens = {}
    for name, role, area in (("jaipur", "dispatcher", "jaipur"), ("akola", "dispatcher", "akola"),
                             ("biller", "biller", None)):
        user = create(gw_session, admin_token, role, area)
        tokens[name] = bearer(login(gw_session, user["username"]).json()["access_token"])
    return tokens


def fresh_parent() -> str:
    return f"SB{random.randrange(10_000, 99_999):05d}"


def open_stream(gw, stack, who: dict[str, str], last_event_id: str | None = None) -> EventReader:
    ticket = gw.post("/dashboard/stream/ticket", headers=who)
    assert ticket.status_code == 200, ticket.text
    assert ticket.headers["cache-control"] == "no-store" and ticket.json()["expires_in"] > 0
    headers = {"Last-Event-ID": last_event_id} if last_event_id else None
    reader = EventReader(f"{stack.url()}/api/v1/dashboard/stream?ticket={ticket.json()['ticket']}", headers)
    assert reader.status == 200
    assert reader.headers["content-type"].startswith("text/event-stream")
    return reader


def test_a_scan_reaches_the_streams_that_may_see_it_within_2_s(gw, stack, people):
    streams = {name: open_stream(gw, stack, people[name]) for name in ("jaipur", "akola", "biller")}
    try:
        for name, reader in streams.items():
            snapshot = reader.next("stats")  # every stream starts with the caller's stats
            assert "scanning" in snapshot["data"] and ("billing" in snapshot["data"]) == (name == "biller")
        qr = fresh_parent()
        sent = time.monotonic()
        assert gw.post("/scans/parent", json={"qr_id": qr}, headers=people["jaipur"]).status_code == 200
        mine = streams["jaipur"].next("scan", 5, lambda e: e["data"]["parent_qr"] == qr)
        seen_after = mine["at"] - sent
        print(f"\nscan seen on the dispatcher's stream {seen_after * 1000:.0f} ms after it was sent")
        assert seen_after < 2.0
        assert mine["data"]["dispatch_area"] == "jaipur" and mine["data"]["username"]
        assert streams["biller"].next("scan", 2, lambda e: e["data"]["parent_qr"] == qr)
        # New stats follow the scan, already counting it.
        stats = streams["jaipur"].next("stats", 3)
        areas = stats["data"]["scanning"]["data"]["areas"]
        assert [a["dispatch_area"] for a in areas] == ["jaipur"] and areas[0]["scans_today"] >= 1
        time.sleep(0.5)
        other = [e for e in streams["akola"].drain() if e["event"] == "scan"]
        assert all(e["data"]["dispatch_area"] == "akola" for e in other)  # never another area's scan
    finally:
        for reader in streams.values():
            reader.close()


def test_a_ticket_opens_one_stream_once(gw, stack, people):
    ticket = gw.post("/dashboard/stream/ticket", headers=people["jaipur"]).json()["ticket"]
    reader = EventReader(f"{stack.url()}/api/v1/dashboard/stream?ticket={ticket}")
    try:
        assert reader.status == 200
        again = httpx.get(f"{stack.url()}/api/v1/dashboard/stream?ticket={ticket}", timeout=5)
        assert again.status_code == 401 and "ticket" in again.json()["detail"]
    finally:
        reader.close()
    for url in ("/dashboard/stream", "/dashboard/stream?ticket=made-up"):
        refused = httpx.get(stack.url() + "/api/v1" + url, timeout=5)
        assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
    assert gw.post("/dashboard/stream/ticket").status_code == 401  # a ticket needs a signed-in caller


def test_a_fetch_based_client_may_send_its_token_instead(gw, stack, people):
    reader = EventReader(f"{stack.url()}/api/v1/dashboard/stream", people["biller"])
    try:
        assert reader.status == 200
        assert "billing" in reader.next("stats")["data"]  # billers see the bills' part
    finally:
        reader.close()


def test_heartbeats_keep_a_quiet_stream_alive_through_the_gateway(gw, stack, people):
    reader = open_stream(gw, stack, people["akola"])
    try:
        reader.next("stats")
        first = reader.next("comment", 5)
        second = reader.next("comment", 5)
        assert 0.5 < second["at"] - first["at"] < 3  # DASHBOARD_STREAM_HEARTBEAT=1 in the e2e stack
    finally:
        reader.close()


def test_last_event_id_resumes_with_what_was_missed(gw, stack, people):
    reader = open_stream(gw, stack, people["jaipur"])
    first, missed = fresh_parent(), fresh_parent()
    try:
        reader.next("stats")
        assert gw.post("/scans/parent", json={"qr_id": first}, headers=people["jaipur"]).status_code == 200
        seen = reader.next("scan", 5, lambda e: e["data"]["parent_qr"] == first)
    finally:
        reader.close()
    assert gw.post("/scans/parent", json={"qr_id": missed}, headers=people["jaipur"]).status_code == 200
    time.sleep(1.5)  # the poller publishes it while nobody listens
    resumed = open_stream(gw, stack, people["jaipur"], last_event_id=seen["id"])
    try:
        replayed = resumed.next("scan", 5, lambda e: e["data"]["parent_qr"] in (first, missed))
        assert replayed["data"]["parent_qr"] == missed  # after the last id seen: not the first one again
    finally:
        resumed.close()
    # An id the bus never gave (another deployment's, or one older than what is held): the page reloads its state.
    stale = open_stream(gw, stack, people["jaipur"], last_event_id=f"{int(time.time() * 1000) + 10**9}-0")
    try:
        assert stale.next("reset", 5)
    finally:
        stale.close()


def test_stats_through_the_gateway_count_what_was_scanned(gw, people):
    before = gw.get("/dashboard/stats", headers=people["akola"])
    assert before.status_code == 200
    body = before.json()
    assert "billing" not in body and body["scanning"]["status"] in ("fresh", "stale", "unavailable")
    qrs = [fresh_parent() for _ in range(3)]
    for qr in qrs:
        assert gw.post("/scans/parent", json={"qr_id": qr}, headers=people["akola"]).status_code == 200
    # A scan's stats part is refreshed by the live poller within about a second (else within its 30 s ttl).
    deadline = time.monotonic() + 5
    while True:
        area = gw.get("/dashboard/stats", headers=people["akola"]).json()["scanning"]["data"]["areas"][0]
        old = (body["scanning"]["data"] or {"areas": [{"scans_today": 0}]})["areas"][0]["scans_today"]
        if area["scans_today"] >= old + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert area["dispatch_area"] == "akola" and area["scans_today"] >= old + 3
    biller = gw.get("/dashboard/stats", headers=people["biller"]).json()
    assert {"scanning", "billing"} <= set(biller) and biller["down"] == []
    assert gw.get("/dashboard/trends?days=91", headers=people["biller"]).status_code == 422
    lookup = gw.get(f"/dashboard/lookup/{qrs[0]}", headers=people["akola"])
    assert lookup.status_code == 200 and lookup.json()["bag"]["qr_id"] == qrs[0]
    assert gw.get(f"/dashboard/lookup/{qrs[0]}", headers=people["jaipur"]).status_code == 404  # another area
