"""scripts/seed_bills.py on each backend: bills consistent with their parent rows, every billed parent marked in
scanning with its row's link, codes and day counters agreeing, refusals that write nothing."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine, insert, pool, select, text
from sqlalchemy.engine import make_url

from scripts.seed import seed
from scripts.seed_bills import SeedRefused, main, seed_bills
from services.billing.models import Bill
from shared import migrate
from shared.settings import derive_database_url
from shared.timeutil import as_utc

ZONE = "Asia/Kolkata"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BAGS = 3_000  # ~128 parents


@pytest.fixture(scope="module")
def engines(backend, tmp_path_factory):
    """A scanning and a billing database of their own (migrated once per backend)."""
    if backend.database_url:
        url = make_url(backend.database_url)
        base = url.set(database=f"{url.database}_seedbills").render_as_string(hide_password=False)
        var = backend.var_dir
    else:
        base, var = None, str(tmp_path_factory.mktemp("seed-bills"))
    urls = {name: derive_database_url(base, name, var) for name in ("scanning", "billing")}
    for name, url in urls.items():
        migrate.upgrade(name, url)
    made = {name: create_engine(url, poolclass=pool.NullPool) for name, url in urls.items()}
    yield made["scanning"], made["billing"], urls
    for engine in made.values():
        engine.dispose()


@pytest.fixture
def dbs(engines):
    scanning, billing, urls = engines
    with billing.begin() as conn:
        for table in ("bill_parents", "bills", "bill_events", "bill_day_counters", "mark_outbox"):
            conn.execute(text(f"DELETE FROM {table}"))
    with scanning.begin() as conn:
        conn.execute(text("DELETE FROM bags WHERE type = 'child'"))
        conn.execute(text("DELETE FROM bags"))
        conn.execute(text("DELETE FROM scans"))
    seed(scanning, bags=BAGS, days=30, now=NOW - timedelta(days=1), random_seed=7)
    return scanning, billing, urls


def rows(engine, sql: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql)).mappings()]


def check_consistent(scanning, billing) -> dict:
    """Every invariant the seed promises; returns a few figures for the caller's own checks."""
    bills = {b["id"]: b for b in rows(billing, "SELECT * FROM bills")}
    parents = rows(billing, "SELECT * FROM bill_parents")
    bags = {b["qr_id"]: b for b in rows(scanning, "SELECT qr_id, type, capacity, child_count, bill_id, bill_link, "
                                                  "billed_at FROM bags WHERE type = 'parent'")}
    by_bill = defaultdict(list)
    for p in parents:
        by_bill[p["bill_pk"]].append(p)
        bag = bags[p["parent_qr"]]
        bill = bills[p["bill_pk"]]
        assert p["state"] == "active"
        assert (bag["bill_id"], bag["bill_link"]) == (bill["bill_id"], p["id"]), p  # the mark, with this row's link
        assert (p["capacity"], p["child_count"]) == (bag["capacity"], bag["child_count"])
        assert as_utc(_dt(bag["billed_at"])) == as_utc(_dt(p["added_at"]))
        assert as_utc(_dt(p["added_at"])) >= as_utc(_dt(bill["created_at"]))
    marked = {qr for qr, bag in bags.items() if bag["bill_id"] is not None}
    assert marked == {p["parent_qr"] for p in parents}  # no mark without its row
    zone = ZoneInfo(ZONE)
    per_day: dict[str, int] = {}
    for bill in bills.values():
        held = by_bill[bill["id"]]
        assert bill["linked_count"] == len(held)
        assert bill["expected_weight_kg"] == sum(p["capacity"] for p in held)
        assert bill["actual_weight_kg"] == sum(p["child_count"] for p in held)
        assert 1 <= bill["capacity"] <= 60 and bill["bill_key"] == bill["bill_id"].upper()
        if bill["status"] == "completed":
            assert bill["linked_count"] == bill["capacity"] and bill["completed_at"] is not None
        elif bill["status"] == "processing":
            assert 0 < bill["linked_count"] < bill["capacity"] and bill["completed_at"] is None
        else:
            assert bill["status"] == "new" and bill["linked_count"] == 0 and bill["counted_at"] is None
        _, day, number = bill["bill_id"].split("_")
        assert day == f"{as_utc(_dt(bill['created_at'])).astimezone(zone):%Y%m%d}"  # the warehouse's day
        assert bill["created_by"] in {f"biller_{i}" for i in range(1, 6)}
        per_day[day] = max(per_day.get(day, 0), int(number))
    counters = {r["day"]: r["last"] for r in rows(billing, "SELECT * FROM bill_day_counters")}
    assert counters == per_day
    codes = Counter(b["bill_id"] for b in bills.values())
    assert max(codes.values()) == 1
    events = rows(billing, "SELECT * FROM bill_events")
    kinds = Counter(e["kind"] for e in events)
    assert kinds["create"] == len(bills) and kinds["add"] == len(parents)
    assert kinds["complete"] == sum(1 for b in bills.values() if b["status"] == "completed")
    for e in events:
        assert e["bill_id"] == bills[e["bill_pk"]]["bill_id"]
        if e["kind"] == "add":
            assert json.loads(e["detail"])["capacity"] == bags[e["parent_qr"]]["capacity"]
    return {"bills": len(bills), "parents": len(parents), "statuses": Counter(b["status"] for b in bills.values())}


def _dt(value):
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def test_bills_hold_marked_parents_and_add_up(dbs):
    scanning, billing, _ = dbs
    available = rows(scanning, "SELECT count(*) AS n FROM bags WHERE type = 'parent' AND child_count > 0")[0]["n"]
    report = seed_bills(billing, scanning, bills=60, now=NOW, timezone=ZONE, days=20)
    figures = check_consistent(scanning, billing)
    assert figures["bills"] == report.bills == 60
    assert figures["parents"] == report.parents_billed <= int(available * 0.9)
    assert report.parents_available == available
    assert figures["statuses"]["completed"] > figures["statuses"]["new"]
    created = [as_utc(_dt(r["created_at"])) for r in rows(billing, "SELECT created_at FROM bills")]
    assert max(created) <= NOW - timedelta(minutes=30)
    # Working hours of the warehouse's day (a bill is moved later only to follow its parents).
    working = [c for c in created if 7 <= c.astimezone(ZoneInfo(ZONE)).hour < 21]
    assert len(working) >= 0.8 * len(created)
    # Parents are plenty for 60 bills: capacities go beyond 1, and a truck-sized bill or two is not required.
    assert max(r["capacity"] for r in rows(billing, "SELECT capacity FROM bills")) > 2
    # The sequences were moved past the explicit ids: the service's next row gets a fresh id.
    with billing.begin() as conn:
        new_id = conn.execute(insert(Bill.__table__).values(
            bill_id="X_1", bill_key="X_1", capacity=1, status="new", linked_count=0, expected_weight_kg=0,
            actual_weight_kg=0, created_by="x").returning(Bill.__table__.c.id)).scalar()
        top = conn.execute(select(Bill.__table__.c.id).order_by(Bill.__table__.c.id.desc()).offset(1).limit(1)).scalar()
        assert new_id > top
        conn.execute(text("DELETE FROM bills WHERE bill_id = 'X_1'"))


def test_a_second_seed_is_refused_and_writes_nothing_unless_appending(dbs):
    scanning, billing, _ = dbs
    first = seed_bills(billing, scanning, bills=30, now=NOW, timezone=ZONE, days=5, fill=0.5)
    before_marks = rows(scanning, "SELECT qr_id, bill_id, bill_link FROM bags WHERE bill_id IS NOT NULL ORDER BY qr_id")
    with pytest.raises(SeedRefused, match="already has 30 bills"):
        seed_bills(billing, scanning, bills=10, now=NOW, timezone=ZONE)
    assert rows(billing, "SELECT count(*) AS n FROM bills")[0]["n"] == 30
    assert rows(scanning, "SELECT qr_id, bill_id, bill_link FROM bags WHERE bill_id IS NOT NULL "
                          "ORDER BY qr_id") == before_marks

    more = seed_bills(billing, scanning, bills=20, now=NOW, timezone=ZONE, days=5, random_seed=9, append=True)
    figures = check_consistent(scanning, billing)  # codes continue each day's numbering; counters follow
    assert figures["bills"] == 50 and figures["parents"] == first.parents_billed + more.parents_billed
    assert more.parents_available <= first.parents_available - first.parents_billed


def test_too_few_parents_is_refused_before_anything_is_written(dbs):
    scanning, billing, _ = dbs
    with pytest.raises(SeedRefused, match="seed more bags"):
        seed_bills(billing, scanning, bills=5_000, now=NOW, timezone=ZONE)
    assert rows(billing, "SELECT count(*) AS n FROM bills")[0]["n"] == 0
    assert rows(scanning, "SELECT count(*) AS n FROM bags WHERE bill_id IS NOT NULL")[0]["n"] == 0


def test_a_parent_taken_meanwhile_rolls_everything_back(dbs, monkeypatch):
    """Another writer marks one of the chosen parents between the plan and the marks: nothing is written."""
    import scripts.seed_bills as module

    scanning, billing, _ = dbs
    real = module.set_marks

    def interfering(engine, marks):
        with engine.begin() as conn:
            conn.execute(text("UPDATE bags SET bill_id = 'OTHER_1', bill_link = 999999 WHERE qr_id = :q"),
                         {"q": marks[0][0]})
        real(engine, marks)

    monkeypatch.setattr(module, "set_marks", interfering)
    with pytest.raises(SeedRefused, match="could be marked"):
        seed_bills(billing, scanning, bills=20, now=NOW, timezone=ZONE)
    assert rows(billing, "SELECT count(*) AS n FROM bills")[0]["n"] == 0
    assert rows(scanning, "SELECT count(*) AS n FROM bags WHERE bill_id IS NOT NULL")[0]["n"] == 1  # only theirs


def test_the_command_line_says_why_it_refuses(dbs, capsys):
    scanning, billing, urls = dbs
    args = ["--billing-database-url", urls["billing"], "--scanning-database-url", urls["scanning"]]
    assert main(args + ["--bills", "10", "--seed", "3"]) == 0
    assert "seeded 10 bills" in capsys.readouterr().out
    assert main(args + ["--bills", "10"]) == 2
    assert "seed refused: billing already has 10 bills" in capsys.readouterr().err
    check_consistent(scanning, billing)
