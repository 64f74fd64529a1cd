"""The dashboard's counts of scanning (/internal/stats, /internal/trends) against the bags and scans really written —
through the API (scans, unlinks, deletes, bill marks) and straight into the tables (back-dated rows, a seed) —
on each backend, before and after the fold; and, on PostgreSQL, a plan that reads neither bags nor scans."""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, create_engine, func, insert, pool, select, update
from sqlalchemy.engine import make_url

from scripts.seed import seed
from services.scanning import stats
from services.scanning.config import Settings
from services.scanning.models import TALLY, Bag, Scan
from services.scanning.writes import ScanningContext
from shared import migrate
from shared.cache import MemoryCache
from shared.db import Database
from shared.settings import derive_database_url
from shared.tally import read_query
from shared.timeutil import as_utc
from tests.scanning.conftest import ADMIN, AKOLA, BILLER, JAIPUR
from tests.scanning.test_scale import compile_sql, plan_nodes, run_sql

bags, scans = Bag.__table__, Scan.__table__
METRICS = ("scans", "completed_parents", "billed_parents", "billed_weight_kg")


# --- ground truth, from the tables ---

def local(moment, zone: ZoneInfo) -> date:
    return as_utc(moment).astimezone(zone).date()


def truth_stats(engine: Engine, zone: ZoneInfo, now: datetime, area: str | None = None) -> dict:
    """/internal/stats' body (without as_of) from GROUP BYs over bags and scans, days placed by zoneinfo."""
    today, since = now.astimezone(zone).date(), (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    with engine.connect() as conn:
        states = conn.execute(select(bags.c.dispatch_area, bags.c.type, bags.c.status, bags.c.parent_id.is_(None),
                                     func.count()).group_by(bags.c.dispatch_area, bags.c.type, bags.c.status,
                                                            bags.c.parent_id.is_(None))).all()
        scan_times = conn.execute(select(scans.c.dispatch_area, scans.c.created_at)).all()
        parents = conn.execute(select(bags.c.dispatch_area, bags.c.status, bags.c.completed_at, bags.c.bill_id,
                                      bags.c.billed_at, bags.c.child_count).where(bags.c.type == "parent")).all()
    figures: dict[str, Counter] = {}
    for a, kind, status, unlinked, n in states:
        f = figures.setdefault(a, Counter())
        f[f"parents_{status}" if kind == "parent" else "children"] += n
        if kind == "child" and not unlinked:
            f["linked_children"] += n
    for a, created in scan_times:
        f = figures.setdefault(a, Counter())
        f["scans_ever"] += 1
        f["scans_today"] += local(created, zone) == today
        f["scans_last_hour"] += as_utc(created) >= since
    for a, status, completed_at, bill_id, billed_at, children in parents:
        f = figures[a]
        f["completed_today"] += status == "completed" and completed_at is not None and local(completed_at, zone) == today
        if bill_id is not None and local(billed_at, zone) == today:
            f["billed_parents"] += 1
            f["billed_weight_kg"] += children

    def shown(f: Counter) -> dict:
        statuses = {s: f[f"parents_{s}"] for s in ("pending", "in_progress", "completed")}
        return {"parents": {**statuses, "total": sum(statuses.values())}, "children": f["children"],
                "linked_children": f["linked_children"], "scans_today": f["scans_today"],
                "scans_last_hour": f["scans_last_hour"], "completed_today": f["completed_today"],
                "billed_today": {"parents": f["billed_parents"], "weight_kg": f["billed_weight_kg"]}}

    present = sorted(a for a, f in figures.items() if any(f[k] for k in (
        "parents_pending", "parents_in_progress", "parents_completed", "children", "scans_ever")))
    names = [area] if area else present
    everything = sum(figures.values(), Counter()) if area is None else figures.get(area, Counter())
    return {"day": today.isoformat(), "timezone": zone.key,
            "areas": [{"dispatch_area": a, **shown(figures.get(a, Counter()))} for a in names],
            "totals": shown(everything)}


def truth_trends(engine: Engine, zone: ZoneInfo, today: date, days: int, area: str | None = None) -> list[dict]:
    where = [] if area is None else [bags.c.dispatch_area == area]
    with engine.connect() as conn:
        scan_times = conn.execute(select(scans.c.created_at).where(
            *([] if area is None else [scans.c.dispatch_area == area]))).scalars().all()
        parents = conn.execute(select(bags.c.status, bags.c.completed_at, bags.c.bill_id, bags.c.billed_at,
                                      bags.c.child_count).where(bags.c.type == "parent", *where)).all()
    per_day = {metric: Counter() for metric in METRICS}
    for created in scan_times:
        per_day["scans"][local(created, zone)] += 1
    for status, completed_at, bill_id, billed_at, children in parents:
        if status == "completed" and completed_at is not None:
            per_day["completed_parents"][local(completed_at, zone)] += 1
        if bill_id is not None:
            per_day["billed_parents"][local(billed_at, zone)] += 1
            per_day["billed_weight_kg"][local(billed_at, zone)] += children
    first = today - timedelta(days=days - 1)
    return [{"day": (first + timedelta(days=i)).isoformat(), **{m: per_day[m][first + timedelta(days=i)] for m in METRICS}}
            for i in range(days)]


# --- through the API ---

def engine_of(api) -> Engine:
    return create_engine(api.app.state.settings.database_url, poolclass=pool.NullPool)


def get_stats(api, **params) -> dict:
    response = api.client.get("/internal/stats", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert abs(datetime.fromisoformat(body.pop("as_of")) - datetime.now(UTC)) < timedelta(seconds=30)
    return body


def get_trends(api, **params) -> list[dict]:
    response = api.client.get("/internal/trends", params=params)
    assert response.status_code == 200, response.text
    return response.json()["days"]


def fold(api) -> int:
    state = api.app.state
    return api.client.portal.call(TALLY.fold, state.db, state.cache, state.settings.zone)


def check_stats(api, *areas: str | None) -> None:
    """Each area's answer equals the tables' truth, read as the writes left it and again after a fold."""
    zone, engine = api.app.state.settings.zone, engine_of(api)
    try:
        for _ in range(2):
            for area in areas:
                assert get_stats(api, **({"area": area} if area else {})) == truth_stats(
                    engine, zone, datetime.now(UTC), area)
            fold(api)
    finally:
        engine.dispose()


def mark(api, qr: str, bill_id: str, link: int):
    response = api.client.put(f"/internal/parents/{qr}/bill", json={"bill_id": bill_id, "link": link})
    assert response.status_code == 200, response.text


def a_shift(api) -> None:
    """Two areas' day: parents filled to completion and part way, a repeat, an unlink (a completed parent goes
    back in progress), a delete, an admin's parent elsewhere, billing's marks set, cleared and set again."""
    api.fill("M444-00001", 15, who=JAIPUR)
    api.fill("SB00002", 3, who=JAIPUR)
    assert api.child("SB00002", "CH00002000", who=JAIPUR).json()["repeat"] is True
    assert api.parent("SB00003", who=AKOLA).status_code == 200
    api.fill("M444-00004", 15, prefix="AK", who=AKOLA)
    assert api.unlink("M444-00004", "AK00004014", who=ADMIN).status_code == 200
    assert api.client.delete("/bags/AK00004014", headers=api.headers(BILLER)).status_code == 204
    assert api.parent("SB00005", who=ADMIN, dispatch_area="ranchi").status_code == 200
    mark(api, "M444-00001", "BILL_20260301_0001", 1)
    mark(api, "SB00002", "BILL_20260301_0002", 2)
    cleared = api.client.delete("/internal/parents/SB00002/bill", params={"bill_id": "BILL_20260301_0002", "link": 2})
    assert cleared.status_code == 204
    mark(api, "SB00002", "BILL_20260301_0003", 3)
    assert api.child("SB00002", "CH00002009", who=JAIPUR).status_code == 200  # a billed parent grows: 4 kg now


def test_stats_match_what_was_scanned_per_area_and_in_total(api):
    a_shift(api)
    body = get_stats(api)
    assert [a["dispatch_area"] for a in body["areas"]] == ["akola", "jaipur", "ranchi"]
    jaipur = body["areas"][1]
    assert jaipur["parents"] == {"pending": 0, "in_progress": 1, "completed": 1, "total": 2}
    assert (jaipur["children"], jaipur["scans_today"], jaipur["completed_today"]) == (19, 2 + 15 + 4 + 1, 1)
    assert jaipur["billed_today"] == {"parents": 2, "weight_kg": 15 + 4}
    akola = body["areas"][0]
    assert (akola["children"], akola["linked_children"], akola["completed_today"]) == (14, 14, 0)
    check_stats(api, None, "jaipur", "akola", "ranchi")


def test_an_area_with_nothing_is_listed_with_zeros_and_areas_compare_lower_case(api):
    a_shift(api)
    assert get_stats(api, area="hisar") == truth_stats(engine_of(api), api.app.state.settings.zone,
                                                       datetime.now(UTC), "hisar")
    assert get_stats(api, area="hisar")["totals"]["parents"]["total"] == 0
    assert get_stats(api, area="JAIPUR") == get_stats(api, area="jaipur")


def test_deleting_everything_counts_down_to_nothing(api):
    a_shift(api)
    fold(api)
    with engine_of(api).begin() as conn:
        conn.execute(scans.delete())
        conn.execute(update(bags).values(parent_id=None))
        conn.execute(bags.delete())
    body = get_stats(api)
    assert body["areas"] == [] and body["totals"] == truth_stats(engine_of(api), api.app.state.settings.zone,
                                                                 datetime.now(UTC))["totals"]
    assert body["totals"]["parents"]["total"] == body["totals"]["scans_today"] == 0


def back_dated(api, day: date) -> list[datetime]:
    """Rows written straight into the tables at chosen times (as a bulk load or an operator would): scans either side
    of the local midnight ending `day` (Asia/Kolkata: 18:30 UTC), a parent completed then and billed a day later."""
    evening = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=18, minutes=29)
    times = [evening, evening + timedelta(minutes=2), evening + timedelta(minutes=2, seconds=30)]
    with engine_of(api).begin() as conn:
        conn.execute(insert(scans), [dict(kind="parent", parent_qr="SB09000", dispatch_area="lucknow", user_id=5,
                                          username="old", repeat=False, created_at=t) for t in times])
        conn.execute(insert(bags).values(qr_id="SB09000", type="parent", status="completed", dispatch_area="lucknow",
                                         capacity=30, child_count=30, created_by="old", created_at=evening,
                                         updated_at=evening))
        conn.execute(update(bags).where(bags.c.qr_id == "SB09000").values(
            bill_id="BILL_20260301_0009", bill_link=9, billed_at=evening + timedelta(days=1)))
    return times


def test_trends_place_each_event_on_its_local_day(api):
    zone = api.app.state.settings.zone
    assert zone.key == "Asia/Kolkata"
    today = datetime.now(zone).date()
    day = today - timedelta(days=4)
    back_dated(api, day)
    a_shift(api)
    for _ in range(2):
        days = get_trends(api, days=7)
        assert days == truth_trends(engine_of(api), zone, today, 7)
        by_day = {d["day"]: d for d in days}
        assert by_day[day.isoformat()]["scans"] == 1  # 18:29 UTC: 23:59 there
        assert by_day[(day + timedelta(days=1)).isoformat()]["scans"] == 2  # 18:31 UTC: the next day
        assert by_day[day.isoformat()]["completed_parents"] == 1
        assert by_day[(day + timedelta(days=1)).isoformat()]["billed_weight_kg"] == 30
        assert get_trends(api, days=7, area="lucknow") == truth_trends(engine_of(api), zone, today, 7, "lucknow")
        fold(api)
    assert len(get_trends(api)) == 14 and get_trends(api)[-1]["day"] == today.isoformat()
    assert get_trends(api, days=1) == truth_trends(engine_of(api), zone, today, 1)
    assert len(get_trends(api, days=90)) == 90


def test_the_last_hour_is_counted_from_the_start_of_the_minute_an_hour_ago(api):
    now = datetime.now(UTC)
    with engine_of(api).begin() as conn:
        conn.execute(insert(scans), [dict(kind="parent", parent_qr="SB09001", dispatch_area="indore", user_id=5,
                                          username="x", repeat=False, created_at=now - timedelta(minutes=m))
                                     for m in (90, 62, 58, 1)])
    assert get_stats(api, area="indore")["totals"]["scans_last_hour"] == 2
    check_stats(api, "indore")


@pytest.mark.parametrize("path,params", [("/internal/trends", {"days": 0}), ("/internal/trends", {"days": 91}),
                                         ("/internal/trends", {"days": "x"}), ("/internal/trends", {"days": "1.5"}),
                                         ("/internal/stats", {"area": "a b"}), ("/internal/stats", {"area": "x" * 65}),
                                         ("/internal/trends", {"area": "a;b"})])
def test_bad_parameters_are_422(api, path, params):
    response = api.client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


# --- after a bulk load (scripts/seed.py: COPY on PostgreSQL) ---

@pytest.fixture(scope="module")
def seeded(backend, tmp_path_factory):
    """A scanning database of its own, seeded with 3,000 bags over 30 days, and a context to read it with."""
    if backend.database_url:
        url = make_url(backend.database_url)
        base, var = url.set(database=f"{url.database}_seedstats").render_as_string(hide_password=False), backend.var_dir
    else:
        base, var = None, str(tmp_path_factory.mktemp("seed-stats"))
    database_url = derive_database_url(base, "scanning", var)
    migrate.upgrade("scanning", database_url)
    engine = create_engine(database_url, poolclass=pool.NullPool)
    seed(engine, bags=3_000, days=30, random_seed=11)
    with engine.begin() as conn:  # some of them billed, as scripts/seed_bills.py marks them
        conn.execute(update(bags).where(bags.c.type == "parent", bags.c.status == "completed", bags.c.id % 3 == 0)
                     .values(bill_id="BILL_20260301_0001", bill_link=bags.c.id, billed_at=bags.c.updated_at))
    yield engine, Settings(database_url=database_url)
    engine.dispose()


def read_seeded(settings: Settings, body):
    async def main():
        db = Database(settings)
        try:
            return await body(ScanningContext(settings, db, MemoryCache("t")))
        finally:
            await db.dispose()

    return asyncio.run(main())


def test_a_seeded_database_is_counted_and_its_history_charted(seeded):
    engine, settings = seeded
    zone, now = settings.zone, datetime.now(UTC)
    today = now.astimezone(zone).date()

    async def read(ctx: ScanningContext):
        shown = [(await stats.stats(ctx=ctx, area=None)).model_dump(mode="json"),
                 (await stats.trends(ctx=ctx, days=31, area=None)).model_dump(mode="json")]
        await TALLY.fold(ctx.db, ctx.cache, zone)
        return shown + [(await stats.stats(ctx=ctx, area=None)).model_dump(mode="json"),
                        (await stats.trends(ctx=ctx, days=31, area=None)).model_dump(mode="json")]

    for body in read_seeded(settings, read)[::2]:
        body.pop("as_of")
        assert body == truth_stats(engine, zone, now)
        assert body["totals"]["parents"]["total"] > 100
    for body in read_seeded(settings, read)[1::2]:
        assert body["days"] == truth_trends(engine, zone, today, 31)
        assert sum(d["scans"] for d in body["days"]) == 3_000 and sum(d["billed_parents"] for d in body["days"]) > 10


def test_the_stats_read_touches_only_the_tally(backend, seeded):
    if backend.database_url is None:
        pytest.skip("SQLite's planner is not the one production runs")
    engine, settings = seeded
    today = datetime.now(settings.zone).date()
    shapes = ((read_query(days=True, since=True, area=False), {"first": today, "last": today, "since": 0}),
              (read_query(days=True, since=False, area=True),
               {"first": today - timedelta(days=89), "last": today, "area": "lucknow"}))
    for statement, params in shapes:
        plan = run_sql(engine, "EXPLAIN (ANALYZE, FORMAT JSON) " + compile_sql(statement.params(params)))[0][0][0]["Plan"]
        relations = {node.get("Relation Name") for node in plan_nodes(plan)} - {None}
        assert relations <= {"tally_totals", "tally_days", "tally_minutes", "tally_deltas"}, json.dumps(plan)
        assert "tally_totals" in relations
