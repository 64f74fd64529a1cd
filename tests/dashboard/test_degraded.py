"""Never down with its sources: with scanning or billing stopped (connections refused) or hung (accepted, never
answered), every answer is a 200 within 100 ms from what the dashboard holds; a part whose refresh failed, or whose
source is known down, is stale with its age and the answer names the source; a part never fetched is unavailable;
all of it recovers by itself. Plus: one upstream call for N concurrent requests on an expired part (one replica and
two), and the last good values coming back from the dashboard's own database after a restart with Redis flushed."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.dashboard import keys
from tests.dashboard.conftest import ADMIN, BILLER, JAIPUR, Dash, clear_dashboard_cache
from tests.support import wait_for

BUDGET = 0.1  # seconds

# Each read route with its scanning field, billing field, the part key of each, and the source routes they call.
ROUTES = {
    "stats": ("/dashboard/stats", "scanning", "billing", keys.scan_stats_key(None), keys.bill_stats_key(),
              "/internal/stats"),
    "activity": ("/dashboard/activity", "scans", "bill_events", keys.scan_activity_key(None),
                 keys.bill_activity_key(), "/internal/scans"),
}


@pytest.fixture(params=list(ROUTES))
def route(request):
    return ROUTES[request.param]


def quick(dash: Dash, path: str, who=ADMIN) -> dict:
    """An answer, which must be a 200 within the budget."""
    response, seconds = dash.timed(path, who)
    assert response.status_code == 200, response.text
    assert seconds < BUDGET, f"{path} took {seconds * 1000:.0f} ms"
    return response.json()


def overdue(dash: Dash, key: str) -> None:
    """Age a part past its ttl and the refresh budget: no refresh has succeeded for longer than it may."""
    spec = dash.app.state.dashboard.parts.spec(key)
    dash.age(key, spec.ttl + dash.settings.refresh_timeout + 1)


def expire(dash: Dash, key: str) -> None:
    """Age a part just past its ttl: the next read refreshes it."""
    dash.age(key, dash.app.state.dashboard.parts.spec(key).ttl + 0.1)


def test_with_billing_stopped_its_part_turns_stale_and_recovers(dash, route):
    path, scan_field, bill_field, _, bill_key, _ = route
    dash.fill(1)
    before = dash.settled(path, ADMIN, fields=(scan_field, bill_field))
    with dash.billing.down():
        expire(dash, bill_key)
        body = wait_for(lambda: (b := quick(dash, path))[bill_field]["status"] == "stale" and b, 5,
                        "billing's part stale")
        assert body["down"] == ["billing"] and body["sources"] == {"scanning": "up", "billing": "down"}
        assert body[bill_field]["data"] == before[bill_field]["data"]  # the last good value, still shown
        assert body[bill_field]["age_seconds"] >= dash.app.state.dashboard.parts.spec(bill_key).ttl
        assert body[scan_field]["status"] == "fresh"
    recovered = dash.settled(path, ADMIN, fields=(scan_field, bill_field), timeout=15)
    assert recovered["down"] == [] and recovered[bill_field]["age_seconds"] < 5


def test_with_billing_hung_answers_stay_within_100_ms_and_turn_stale_once_a_refresh_failed(dash, route):
    path, scan_field, bill_field, _, bill_key, _ = route
    before = dash.settled(path, ADMIN, fields=(scan_field, bill_field))
    with dash.billing.down(hung=True):
        expire(dash, bill_key)
        during = quick(dash, path)  # the refresh it started hangs; this answer did not wait for it
        assert during[bill_field]["status"] == "fresh" and during["down"] == []
        time.sleep(dash.settings.refresh_timeout + 0.2)
        after = quick(dash, path)
        assert after[bill_field]["status"] == "stale" and after[bill_field]["data"] == before[bill_field]["data"]
        assert after["down"] == ["billing"] and after[scan_field]["status"] == "fresh"
        for _ in range(5):  # and every answer meanwhile stays quick
            assert quick(dash, path)["down"] == ["billing"]
    dash.settled(path, ADMIN, fields=(scan_field, bill_field), timeout=15)


def test_a_part_never_fetched_is_unavailable_while_its_source_hangs(dash, route):
    path, scan_field, bill_field, *_ = route
    with dash.billing.down(hung=True):
        first = quick(dash, path, BILLER)
        assert first[bill_field] == {"status": "unavailable", "as_of": None, "age_seconds": None,
                                     "source": "billing", "data": None}
        assert first[scan_field]["status"] == "fresh"  # scanning answered within the first-fetch wait
        time.sleep(dash.settings.refresh_timeout + 0.2)
        later = quick(dash, path, BILLER)
        assert later[bill_field]["status"] == "unavailable" and later["down"] == ["billing"]
    dash.settled(path, BILLER, fields=(scan_field, bill_field), timeout=15)


def test_with_scanning_stopped_a_dispatcher_gets_stale_counts_and_no_billing(dash, route):
    path, scan_field, bill_field, *_ = route
    dash.fill(1, who=JAIPUR)
    before = dash.settled(path, JAIPUR, fields=(scan_field,))
    area_key = dash.app.state.dashboard.parts.spec(
        keys.scan_stats_key("jaipur") if scan_field == "scanning" else keys.scan_activity_key("jaipur")).key
    with dash.scanning.down():
        expire(dash, area_key)
        body = wait_for(lambda: (b := quick(dash, path, JAIPUR))[scan_field]["status"] == "stale" and b, 5,
                        "scanning's part stale")
        assert body["down"] == ["scanning"] and body["sources"] == {"scanning": "down"}
        assert bill_field not in body and body[scan_field]["data"] == before[scan_field]["data"]
    dash.settled(path, JAIPUR, fields=(scan_field,), timeout=15)


def test_a_source_known_down_makes_its_other_parts_stale_too(dash):
    """Activity's refresh fails; stats' scanning part, within its ttl, is stale as well: its source is down."""
    dash.settled("/dashboard/stats", ADMIN, fields=("scanning", "billing"))
    dash.settled("/dashboard/activity", ADMIN, fields=("scans", "bill_events"))
    with dash.scanning.down():
        expire(dash, keys.scan_activity_key(None))
        wait_for(lambda: quick(dash, "/dashboard/activity")["scans"]["status"] == "stale", 5, "activity stale")
        stats = quick(dash, "/dashboard/stats")
        assert stats["scanning"]["status"] == "stale" and stats["down"] == ["scanning"]
        assert stats["billing"]["status"] == "fresh"
    wait_for(lambda: quick(dash, "/dashboard/activity")["scans"]["status"] == "fresh", 15, "activity fresh")
    assert quick(dash, "/dashboard/stats")["scanning"]["status"] == "fresh"


def test_lookups_answer_within_100_ms_with_billing_hung(dash):
    parent, kids = dash.fill(2)
    with dash.billing.down(hung=True):
        response, seconds = dash.timed(f"/dashboard/lookup/{parent}")
        assert response.status_code == 200 and seconds < BUDGET, (response.text, seconds)
        body = response.json()
        assert body["status"] == "fresh" and sorted(body["bag"]["children"]) == kids
        assert body["bill"]["status"] == "unavailable" and body["down"] == []
        time.sleep(dash.settings.refresh_timeout + 0.2)
        response, seconds = dash.timed(f"/dashboard/lookup/{kids[0]}")
        assert response.status_code == 200 and seconds < BUDGET, (response.text, seconds)
        assert response.json()["parent"]["qr_id"] == parent and response.json()["down"] == ["billing"]


def test_lookups_with_scanning_hung_answer_the_held_bag_stale_or_say_unavailable(dash):
    parent, kids = dash.fill(1)
    held = quick(dash, f"/dashboard/lookup/{parent}")
    with dash.scanning.down(hung=True):
        expire(dash, keys.bag_key(parent, None))
        again = quick(dash, f"/dashboard/lookup/{parent}")  # waited for scanning at most the first-fetch wait
        assert again["bag"] == held["bag"] and again["status"] in ("fresh", "stale")
        time.sleep(dash.settings.refresh_timeout + 0.2)
        stale = quick(dash, f"/dashboard/lookup/{parent}")
        assert stale["status"] == "stale" and stale["bag"] == held["bag"] and stale["down"] == ["scanning"]
        never = quick(dash, f"/dashboard/lookup/{kids[0]}")
        assert never["status"] == "unavailable" and never["bag"] is None and "scanning" in never["down"]
    wait_for(lambda: quick(dash, f"/dashboard/lookup/{kids[0]}")["status"] == "fresh", 15, "lookup recovered")


def test_fifty_concurrent_requests_on_an_expired_part_make_one_upstream_call(dash, route):
    path, scan_field, bill_field, scan_key, _, source_route = route
    dash.settled(path, ADMIN, fields=(scan_field, bill_field))
    calls = dash.scanning.requests_to(source_route)
    expire(dash, scan_key)
    answers = dash.concurrently(path, 50, ADMIN)
    assert {a.status_code for a in answers} == {200}
    wait_for(lambda: dash.body(path, ADMIN)[scan_field]["age_seconds"] < 2, 5, "the refresh to land")
    assert dash.scanning.requests_to(source_route) - calls == 1


def test_two_replicas_sharing_redis_make_one_upstream_call_between_them(dash, where, route):
    if where.redis_url is None:
        pytest.skip("replicas share refreshes through Redis; the embedded cache is one process's")
    path, scan_field, bill_field, scan_key, _, source_route = route
    other = Dash(dash.settings, dash.sources)
    try:
        dash.settled(path, ADMIN, fields=(scan_field, bill_field))
        assert other.body(path, ADMIN)[scan_field]["status"] == "fresh"  # read from the shared cache
        calls = dash.scanning.requests_to(source_route)
        expire(dash, scan_key)
        with ThreadPoolExecutor(2) as pool:
            bursts = list(pool.map(lambda replica: replica.concurrently(path, 25, ADMIN), (dash, other)))
        assert {a.status_code for burst in bursts for a in burst} == {200}
        wait_for(lambda: other.body(path, ADMIN)[scan_field]["age_seconds"] < 2, 5, "the refresh to land")
        assert dash.scanning.requests_to(source_route) - calls == 1
    finally:
        other.stop()


def test_after_a_restart_with_redis_flushed_the_last_good_values_come_from_the_database(dash):
    dash.fill(2)
    fields = {"/dashboard/stats": ("scanning", "billing"), "/dashboard/activity": ("scans", "bill_events"),
              "/dashboard/trends": ("scanning", "billing")}
    good = {path: dash.settled(path, ADMIN, fields=names) for path, names in fields.items()}
    wait_for(lambda: len(dash.stored_parts()) == 6, 5, "the write-behinds")
    stored = dash.stored_parts()
    assert set(stored) == {"scan-stats:all", "bill-stats", "scan-activity:all", "bill-activity",
                           "scan-trends:14:all", "bill-trends:14"}
    assert {row["source"] for key, row in stored.items() if key.startswith("bill")} == {"billing"}
    dash.stop()
    clear_dashboard_cache(dash.settings)
    with dash.scanning.down(), dash.billing.down():
        dash.start()
        for path, names in fields.items():
            body = quick(dash, path)
            for name in names:
                assert body[name]["status"] == "stale", (path, name)
                assert body[name]["data"] == good[path][name]["data"], (path, name)
                assert body[name]["as_of"] == good[path][name]["as_of"], (path, name)
            assert body["down"] == ["scanning", "billing"]
    for path, names in fields.items():
        dash.settled(path, ADMIN, fields=names, timeout=15)


def test_a_restored_value_is_stale_until_refreshed_even_with_its_sources_up(dash):
    before = dash.settled("/dashboard/stats", ADMIN, fields=("scanning", "billing"))
    wait_for(lambda: len(dash.stored_parts()) == 2, 5, "the write-behinds")
    dash.stop()
    clear_dashboard_cache(dash.settings)
    with dash.billing.down(hung=True):
        dash.start()
        body = quick(dash, "/dashboard/stats")
        assert body["billing"]["status"] == "stale" and body["billing"]["data"] == before["billing"]["data"]
        assert body["scanning"]["status"] == "fresh"  # refreshed within the first-fetch wait
