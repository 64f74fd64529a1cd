"""GET /dashboard/stats against what was really scanned and billed (counted here from the sources' tables), per
area and in total; a dispatcher's own area only; held for its ttl; a forced refresh through the context API."""
from __future__ import annotations

from shared.security import Principal
from tests.dashboard.conftest import ADMIN, AKOLA, BILLER, JAIPUR
from tests.dashboard.truth import billing_stats, scanning_stats


def a_day_of_work(dash) -> None:
    """Two areas scanning, a parent filled to capacity, a repeat scan, and bills: one completed."""
    full, kids = dash.fill(15, small=True)  # M444- parents hold 15: completed
    dash.scan_child(full, kids[0])  # a repeat: a scan row, nothing else changes
    half, _ = dash.fill(4)
    dash.fill(2, who=AKOLA)
    dash.scan_parent(dash.fill(0)[0])  # scanned twice, never filled
    done = dash.new_bill(capacity=1)
    dash.add_to_bill(done, full)
    dash.complete_bill(done)
    loading = dash.new_bill(capacity=3)
    dash.add_to_bill(loading, half)
    dash.new_bill()


def counts(part: dict) -> dict:
    """A stats part's figures without the times."""
    return {"areas": part["data"]["areas"], "totals": part["data"]["totals"]}


def test_the_numbers_are_what_was_scanned_and_billed(dash):
    a_day_of_work(dash)
    body = dash.settled("/dashboard/stats", ADMIN, fields=("scanning", "billing"))
    zone = dash.settings.zone
    assert counts(body["scanning"]) == scanning_stats(dash.scanning.engine(), zone)
    billing = body["billing"]["data"]
    assert {"bills": billing["bills"], "today": billing["today"]} == billing_stats(dash.billing.engine(), zone)
    totals = body["scanning"]["data"]["totals"]
    assert totals["completed_today"] >= 1 and totals["billed_today"]["parents"] >= 2
    assert billing["bills"]["completed"] >= 1 and billing["today"]["completed"] >= 1
    assert {a["dispatch_area"] for a in body["scanning"]["data"]["areas"]} >= {"jaipur", "akola"}
    assert (body["sources"], body["down"]) == ({"scanning": "up", "billing": "up"}, [])
    assert body["as_of"] == min(body["scanning"]["as_of"], body["billing"]["as_of"])


def test_a_dispatcher_sees_their_own_area_and_no_bills(dash):
    a_day_of_work(dash)
    body = dash.settled("/dashboard/stats", JAIPUR, fields=("scanning",))
    assert "billing" not in body and body["sources"] == {"scanning": "up"}
    truth = scanning_stats(dash.scanning.engine(), dash.settings.zone, "jaipur")
    assert counts(body["scanning"]) == truth
    assert [a["dispatch_area"] for a in body["scanning"]["data"]["areas"]] == ["jaipur"]
    akola = dash.settled("/dashboard/stats", AKOLA, fields=("scanning",))
    assert counts(akola["scanning"]) == scanning_stats(dash.scanning.engine(), dash.settings.zone, "akola")
    assert akola["scanning"]["data"]["totals"] != body["scanning"]["data"]["totals"]


def test_an_area_with_nothing_shows_zeros(dash):
    body = dash.settled("/dashboard/stats", ("13", "ria", "dispatcher", "ranchi"), fields=("scanning",))
    totals = body["scanning"]["data"]["totals"]
    assert totals["parents"]["total"] == totals["scans_today"] == totals["children"] == 0
    assert [a["dispatch_area"] for a in body["scanning"]["data"]["areas"]] == ["ranchi"]


def test_counts_are_held_for_their_ttl_and_a_forced_refresh_shows_a_new_scan(dash):
    before = dash.settled("/dashboard/stats", BILLER, fields=("scanning", "billing"))
    dash.fill(3)
    held = dash.body("/dashboard/stats", BILLER)
    assert counts(held["scanning"]) == counts(before["scanning"])  # cached: the scans are not counted yet
    dashboard = dash.app.state.dashboard
    dash.client.portal.call(dashboard.refresh, "scan-stats:all")
    after = dash.body("/dashboard/stats", BILLER)
    assert counts(after["scanning"]) == scanning_stats(dash.scanning.engine(), dash.settings.zone)
    assert after["scanning"]["data"]["totals"]["children"] == before["scanning"]["data"]["totals"]["children"] + 3


def test_the_context_api_answers_what_the_route_does(dash):
    dash.fill(1)
    over_http = dash.settled("/dashboard/stats", JAIPUR, fields=("scanning",))
    dashboard = dash.app.state.dashboard
    direct = dash.client.portal.call(dashboard.stats_body, Principal(11, "jai", "dispatcher", "jaipur"))
    assert direct["scanning"]["data"] == over_http["scanning"]["data"]
    assert (direct["sources"], direct["down"]) == (over_http["sources"], over_http["down"])
    activity = dash.client.portal.call(dashboard.activity_body, Principal(1, "boss", "admin", None))
    assert set(activity) == {"scans", "bill_events", "sources", "down", "as_of"}


def test_no_token_is_a_401_and_a_dispatcher_without_an_area_a_403(dash):
    assert dash.client.get("/dashboard/stats").status_code == 401
    assert dash.get("/dashboard/stats", ("14", "nia", "dispatcher", None)).status_code == 403
