"""GET /dashboard/trends?days=N: N in 1..90 (else 422), default 14; each source's daily series, today's entry
matching what was scanned and billed today; a dispatcher's own area; kept in the dashboard's table."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from tests.dashboard.conftest import ADMIN, AKOLA, JAIPUR
from tests.dashboard.truth import billing_stats, scanning_stats
from tests.support import wait_for


@pytest.mark.parametrize("days", ["0", "91", "-1", "x", "1.5"])
def test_days_outside_1_to_90_are_a_422(dash, days):
    response = dash.get("/dashboard/trends", days=days)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("query.days")


def test_the_series_end_today_and_today_is_what_was_done(dash):
    parent, _ = dash.fill(2)
    dash.fill(1, who=AKOLA)
    bill_id = dash.new_bill(capacity=1)
    dash.add_to_bill(bill_id, parent)
    body = dash.settled("/dashboard/trends", ADMIN, fields=("scanning", "billing"))
    assert body["days"] == 14
    scans, bills = body["scanning"]["data"]["days"], body["billing"]["data"]["days"]
    today = scanning_stats(dash.scanning.engine(), dash.settings.zone)["totals"]
    assert len(scans) == len(bills) == 14
    last = date.fromisoformat(scans[-1]["day"])
    assert [date.fromisoformat(d["day"]) for d in scans] == [last - timedelta(days=13 - i) for i in range(14)]
    assert scans[-1]["scans"] == today["scans_today"]
    assert scans[-1]["billed_parents"] == today["billed_today"]["parents"]
    assert scans[-1]["billed_weight_kg"] == today["billed_today"]["weight_kg"] >= 2
    assert bills[-1]["created"] == billing_stats(dash.billing.engine(), dash.settings.zone)["today"]["created"]
    assert [d["day"] for d in bills] == [d["day"] for d in scans]


def test_a_dispatcher_gets_their_areas_series_only(dash):
    dash.fill(3, who=JAIPUR)
    body = dash.settled("/dashboard/trends", JAIPUR, fields=("scanning",), days=1)
    assert "billing" not in body and body["days"] == 1
    (today,) = body["scanning"]["data"]["days"]
    truth = scanning_stats(dash.scanning.engine(), dash.settings.zone, "jaipur")["totals"]
    assert today["scans"] == truth["scans_today"]
    assert dash.settled("/dashboard/trends", ADMIN, fields=("scanning",), days=1)["scanning"]["data"]["days"][0][
        "scans"] > today["scans"]


def test_each_length_is_its_own_part_and_is_kept_in_the_table(dash):
    for days in (1, 30, 90):
        body = dash.settled("/dashboard/trends", ADMIN, fields=("scanning", "billing"), days=days)
        assert len(body["scanning"]["data"]["days"]) == len(body["billing"]["data"]["days"]) == days
    keys = {f"scan-trends:{d}:all" for d in (1, 30, 90)} | {f"bill-trends:{d}" for d in (1, 30, 90)}
    stored = wait_for(lambda: keys <= set(found := dash.stored_parts()) and found, 5, "the write-behinds")
    assert len(json.loads(stored["scan-trends:90:all"]["payload"])["days"]) == 90
