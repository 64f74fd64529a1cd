"""The dashboard's counts of bills (/internal/bills/stats, /internal/bills/trends) against the bills really written —
through the API (create, load, complete, reopen, remove, delete) and a seed — on each backend, before and after
the fold; and scanning's billed counts following billing's marks."""
from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Engine, create_engine, func, insert, pool, select
from sqlalchemy.engine import make_url

from scripts.seed import seed
from scripts.seed_bills import seed_bills
from services.billing.config import Settings
from services.billing.models import TALLY, Bill, BillParent
from services.scanning.models import Bag
from shared import migrate
from shared.db import Database
from shared.settings import derive_database_url
from shared.timeutil import as_utc
from tests.billing.conftest import ADMIN, token_headers
from tests.support import wait_for

bills, bags = Bill.__table__, Bag.__table__


def local(moment, zone: ZoneInfo) -> date:
    return as_utc(moment).astimezone(zone).date()


def truth_stats(engine: Engine, zone: ZoneInfo, today: date) -> dict:
    """/internal/bills/stats' body (without as_of) from a GROUP BY over bills and their times by zoneinfo."""
    with engine.connect() as conn:
        by_status = dict(conn.execute(select(bills.c.status, func.count()).group_by(bills.c.status)).all())
        times = conn.execute(select(bills.c.created_at, bills.c.completed_at)).all()
    statuses = {s: by_status.get(s, 0) for s in ("new", "processing", "completed")}
    return {"day": today.isoformat(), "timezone": zone.key, "bills": {**statuses, "total": sum(statuses.values())},
            "today": {"created": sum(local(c, zone) == today for c, _ in times),
                      "completed": sum(d is not None and local(d, zone) == today for _, d in times)}}


def truth_trends(engine: Engine, zone: ZoneInfo, today: date, days: int) -> list[dict]:
    with engine.connect() as conn:
        times = conn.execute(select(bills.c.created_at, bills.c.completed_at)).all()
    created = Counter(local(c, zone) for c, _ in times)
    completed = Counter(local(d, zone) for _, d in times if d is not None)
    first = today - timedelta(days=days - 1)
    return [{"day": (first + timedelta(days=i)).isoformat(), "created": created[first + timedelta(days=i)],
             "completed": completed[first + timedelta(days=i)]} for i in range(days)]


def engine_of(api) -> Engine:
    return create_engine(api.app.state.settings.database_url, poolclass=pool.NullPool)


def answer(api, path: str, **params) -> dict:
    response = api.client.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert abs(datetime.fromisoformat(body.pop("as_of")) - datetime.now(UTC)) < timedelta(seconds=30)
    return body


def fold(api) -> int:
    state = api.app.state
    return api.client.portal.call(TALLY.fold, state.db, state.cache, state.settings.zone)


def a_day_of_billing(api) -> None:
    """Bills created, loaded, completed, one reopened, one emptied again, one deleted; and one of last week."""
    loads = {}
    for i, capacity in enumerate((1, 2, 1, 1, 3)):
        loads[i] = api.new_bill(capacity=capacity)
    for qr, bill in (("SB20001", 0), ("SB20002", 1), ("SB20003", 1), ("SB20004", 2), ("SB20005", 3),
                     ("SB20006", 4)):
        api.parent(qr, children=7)
        assert api.add(loads[bill], qr).status_code == 201
    for bill in (0, 1, 2, 3):
        assert api.post(f"/bills/{loads[bill]}/complete").status_code == 200
    assert api.post(f"/bills/{loads[1]}/reopen").status_code == 200
    assert api.remove(loads[4], "SB20006").status_code == 200  # back to new
    assert api.client.delete(f"/bills/{loads[3]}", headers=token_headers(ADMIN)).status_code == 204
    week_ago = datetime.now(UTC) - timedelta(days=7)
    with engine_of(api).begin() as conn:
        conn.execute(insert(bills).values(bill_id="BILL_OLD_1", bill_key="BILL_OLD_1", capacity=1, status="completed",
                                          linked_count=1, created_by="old", created_at=week_ago,
                                          completed_at=week_ago + timedelta(hours=3)))


def test_bill_stats_and_trends_match_the_bills(api):
    a_day_of_billing(api)
    zone = api.app.state.settings.zone
    today = datetime.now(zone).date()
    for _ in range(2):  # as written, then folded
        body = answer(api, "/internal/bills/stats")
        assert body == truth_stats(engine_of(api), zone, today)
        assert body["bills"] == {"new": 1, "processing": 1, "completed": 3, "total": 5}
        assert body["today"] == {"created": 4, "completed": 2}
        days = answer(api, "/internal/bills/trends", days=10)["days"]
        assert days == truth_trends(engine_of(api), zone, today, 10)
        assert sum(d["created"] for d in days) == 5 and days[-1]["day"] == today.isoformat()
        fold(api)
    assert len(answer(api, "/internal/bills/trends")["days"]) == 14


def test_a_bill_completed_and_reopened_is_counted_where_it_is_now(api):
    bill = api.new_bill(capacity=1)
    api.parent("SB20010", children=3)
    api.add(bill, "SB20010")
    zone = api.app.state.settings.zone
    today = datetime.now(zone).date()
    for step in ("complete", "reopen", "complete"):
        assert api.post(f"/bills/{bill}/{step}").status_code == 200
        assert answer(api, "/internal/bills/stats") == truth_stats(engine_of(api), zone, today)
    assert answer(api, "/internal/bills/stats")["today"]["completed"] == 1


def test_scanning_counts_the_parents_billing_marked_today(api):
    a_day_of_billing(api)
    with engine_of(api).connect() as conn:
        held = set(conn.execute(select(BillParent.__table__.c.parent_qr)).scalars())

    def marked() -> dict[str, int]:
        with api.scanning_db.connect() as conn:
            return dict(conn.execute(select(bags.c.qr_id, bags.c.child_count).where(bags.c.bill_id.is_not(None))).all())

    wait_for(lambda: set(marked()) == held, what="the removed parents' marks cleared")
    url = f"http://127.0.0.1:{api.proxy.port}/internal/stats"

    def billed() -> dict:
        return httpx.get(url, params={"area": "jaipur"}, timeout=5).json()["totals"]["billed_today"]

    assert billed() == {"parents": len(held), "weight_kg": sum(marked().values())} == {"parents": 4, "weight_kg": 28}
    api.set_children("SB20001", 9)  # a billed parent that grows weighs more that day
    assert billed() == {"parents": 4, "weight_kg": 30}


@pytest.mark.parametrize("params", [{"days": 0}, {"days": 91}, {"days": "many"}, {"days": "-3"}])
def test_bad_trend_days_are_422(api, params):
    response = api.client.get("/internal/bills/trends", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


ZONE = ZoneInfo("Asia/Kolkata")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def seeded(backend, tmp_path_factory):
    """A scanning and a billing database of their own: 3,000 bags, then 60 bills on them (scripts/seed*.py)."""
    if backend.database_url:
        url = make_url(backend.database_url)
        base, var = url.set(database=f"{url.database}_billstats").render_as_string(hide_password=False), backend.var_dir
    else:
        base, var = None, str(tmp_path_factory.mktemp("bill-stats"))
    urls = {name: derive_database_url(base, name, var) for name in ("scanning", "billing")}
    for name, url in urls.items():
        migrate.upgrade(name, url)
    scanning, billing = (create_engine(urls[name], poolclass=pool.NullPool) for name in ("scanning", "billing"))
    seed(scanning, bags=3_000, days=30, now=NOW - timedelta(days=1), random_seed=7)
    seed_bills(billing, scanning, bills=60, now=NOW, timezone=ZONE.key, days=20)
    yield billing, urls["billing"]
    scanning.dispose()
    billing.dispose()


def test_seeded_bills_are_counted_and_charted(seeded):
    billing, url = seeded
    today = NOW.astimezone(ZONE).date()

    async def read():
        db = Database(Settings(database_url=url))
        try:
            async with db.read() as conn:
                return await TALLY.read(conn, ZONE, days=(today - timedelta(days=29), today))
        finally:
            await db.dispose()

    counts = asyncio.run(read())
    expected = truth_stats(billing, ZONE, today)["bills"]
    assert {s: counts.total(f"status_{s}") for s in ("new", "processing", "completed")} == {
        s: expected[s] for s in ("new", "processing", "completed")}
    assert counts.total("created") == 60 and expected["completed"] > 10
    created, completed = counts.daily("created"), counts.daily("completed")
    charted = [{"day": d.isoformat(), "created": created[d], "completed": completed[d]}
               for d in (today - timedelta(days=29 - i) for i in range(30))]
    assert charted == truth_trends(billing, ZONE, today, 30)
