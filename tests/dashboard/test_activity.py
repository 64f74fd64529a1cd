"""GET /dashboard/activity: the latest scans (area-scoped for dispatchers) and bill events (billers and admins),
with user and time, against the rows scanning and billing really wrote."""
from __future__ import annotations

from sqlalchemy import select

from services.billing.models import BillEvent
from services.scanning.models import Scan
from tests.dashboard.conftest import ADMIN, AKOLA, JAIPUR


def latest_scans(dash, area: str | None = None, limit: int = 50) -> list[tuple]:
    """Ground truth: (id, kind, parent_qr, child_qr, area, username) of the newest scans, newest first."""
    t = Scan.__table__
    query = select(t.c.id, t.c.kind, t.c.parent_qr, t.c.child_qr, t.c.dispatch_area, t.c.username)
    if area:
        query = query.where(t.c.dispatch_area == area)
    with dash.scanning.engine().connect() as conn:
        return [tuple(row) for row in conn.execute(query.order_by(t.c.id.desc()).limit(limit))]


def latest_events(dash, limit: int = 50) -> list[tuple]:
    t = BillEvent.__table__
    with dash.billing.engine().connect() as conn:
        return [tuple(row) for row in conn.execute(
            select(t.c.id, t.c.bill_id, t.c.kind, t.c.username).order_by(t.c.id.desc()).limit(limit))]


def shown_scans(part: dict) -> list[tuple]:
    return [(s["id"], s["kind"], s["parent_qr"], s["child_qr"], s["dispatch_area"], s["username"])
            for s in part["data"]["items"]]


def test_activity_shows_the_latest_scans_and_bill_events_as_written(dash):
    dash.fill(2, who=JAIPUR)
    parent, _ = dash.fill(1, who=AKOLA)
    bill_id = dash.new_bill()
    dash.add_to_bill(bill_id, parent)
    body = dash.settled("/dashboard/activity", ADMIN, fields=("scans", "bill_events"))
    assert shown_scans(body["scans"]) == latest_scans(dash)
    assert {s["username"] for s in body["scans"]["data"]["items"][:5]} == {"jai", "aki"}
    assert all(s["created_at"] for s in body["scans"]["data"]["items"])
    events = [(e["id"], e["bill_id"], e["kind"], e["username"]) for e in body["bill_events"]["data"]["items"]]
    assert events == latest_events(dash)
    assert events[0][1:3] == (bill_id, "add") and events[1][1:3] == (bill_id, "create")
    assert (body["sources"], body["down"]) == ({"scanning": "up", "billing": "up"}, [])


def test_a_dispatcher_sees_only_their_areas_scans_and_no_bills(dash):
    dash.fill(1, who=JAIPUR)
    dash.fill(1, who=AKOLA)
    body = dash.settled("/dashboard/activity", JAIPUR, fields=("scans",))
    assert "bill_events" not in body and body["sources"] == {"scanning": "up"}
    shown = shown_scans(body["scans"])
    assert shown == latest_scans(dash, "jaipur")
    assert {row[4] for row in shown} == {"jaipur"}


def test_activity_is_held_for_its_ttl_then_refreshed(dash):
    dash.fill(1, who=JAIPUR)
    before = dash.settled("/dashboard/activity", JAIPUR, fields=("scans",))
    parent, _ = dash.fill(1, who=JAIPUR)
    held = dash.body("/dashboard/activity", JAIPUR)
    assert held["scans"]["data"] == before["scans"]["data"]  # within the ttl: what was held
    # Past its ttl and the refresh budget: stale, answered as held while the refresh runs behind it.
    dash.age("scan-activity:jaipur", dash.settings.ttl_activity + dash.settings.refresh_timeout + 1)
    assert dash.body("/dashboard/activity", JAIPUR)["scans"]["data"] == before["scans"]["data"]
    refreshed = dash.settled("/dashboard/activity", JAIPUR, fields=("scans",))
    assert shown_scans(refreshed["scans"]) == latest_scans(dash, "jaipur")
    assert refreshed["scans"]["data"]["items"][0]["parent_qr"] == parent
