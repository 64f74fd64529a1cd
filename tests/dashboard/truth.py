"""Ground truth for the dashboard's numbers, counted here from the sources' own tables row by row (not through their
counters): what the contract's fields mean, per dispatch area and in total."""
from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from shared.timeutil import local_day


def moment(value) -> datetime | None:
    """A timestamp as either database returns it (SQLite: text, naive UTC), as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _figures() -> dict:
    return {"parents": {"pending": 0, "in_progress": 0, "completed": 0, "total": 0}, "children": 0,
            "linked_children": 0, "scans_today": 0, "scans_last_hour": 0, "completed_today": 0,
            "billed_today": {"parents": 0, "weight_kg": 0}}


def scanning_stats(engine, zone: ZoneInfo, area: str | None = None) -> dict:
    """{areas: [{dispatch_area, ...figures}], totals: figures} as /internal/stats should say now."""
    _, start, end = local_day(zone)
    now = datetime.now(UTC)
    hour_ago = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    per_area: dict[str, dict] = defaultdict(_figures)
    with engine.connect() as conn:
        bags = conn.execute(text("SELECT type, status, dispatch_area, parent_id, child_count, completed_at, "
                                 "bill_id, billed_at FROM bags")).mappings().all()
        scans = conn.execute(text("SELECT dispatch_area, created_at FROM scans")).mappings().all()
    for bag in bags:
        figures = per_area[bag["dispatch_area"]]
        if bag["type"] == "parent":
            figures["parents"][bag["status"]] += 1
            figures["parents"]["total"] += 1
            completed = moment(bag["completed_at"])
            if bag["status"] == "completed" and completed and start <= completed < end:
                figures["completed_today"] += 1
            billed = moment(bag["billed_at"])
            if bag["bill_id"] is not None and billed and start <= billed < end:
                figures["billed_today"]["parents"] += 1
                figures["billed_today"]["weight_kg"] += bag["child_count"]
        else:
            figures["children"] += 1
            figures["linked_children"] += bag["parent_id"] is not None
    for scan in scans:
        figures, created = per_area[scan["dispatch_area"]], moment(scan["created_at"])
        figures["scans_today"] += start <= created < end
        figures["scans_last_hour"] += created >= hour_ago
    names = [area] if area else sorted(per_area)
    areas = [{"dispatch_area": name, **per_area[name]} for name in names]
    return {"areas": areas, "totals": _sum([per_area[name] for name in names])}


def _sum(many: list[dict]) -> dict:
    total = _figures()
    for figures in many:
        for name, value in figures.items():
            if isinstance(value, dict):
                for sub, n in value.items():
                    total[name][sub] += n
            else:
                total[name] += value
    return total


def billing_stats(engine, zone: ZoneInfo) -> dict:
    """{bills: by status and total, today: {created, completed}} as /internal/bills/stats should say now."""
    _, start, end = local_day(zone)
    bills = {"new": 0, "processing": 0, "completed": 0, "total": 0}
    today = {"created": 0, "completed": 0}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, created_at, completed_at FROM bills")).mappings().all()
    for row in rows:
        bills[row["status"]] += 1
        bills["total"] += 1
        today["created"] += start <= moment(row["created_at"]) < end
        completed = moment(row["completed_at"])
        today["completed"] += row["status"] == "completed" and completed is not None and start <= completed < end
    return {"bills": bills, "today": today}
