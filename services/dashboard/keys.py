"""Part keys: what names each part of a dashboard answer, and what a key means (which source answers it, on which
route, how long it stays fresh). Areas are configured names and codes are A-Z, 0-9, `_` and `-`, so `:` separates a
key's fields unambiguously; `all` in an area field means every area (no area may be named so: config.py)."""
from __future__ import annotations

from dataclasses import dataclass

from services.dashboard.config import Settings

ALL = "all"


def scan_stats_key(area: str | None) -> str:
    return f"scan-stats:{area or ALL}"


def bill_stats_key() -> str:
    return "bill-stats"


def scan_activity_key(area: str | None) -> str:
    return f"scan-activity:{area or ALL}"


def bill_activity_key() -> str:
    return "bill-activity"


def scan_trends_key(days: int, area: str | None) -> str:
    return f"scan-trends:{days}:{area or ALL}"


def bill_trends_key(days: int) -> str:
    return f"bill-trends:{days}"


def bag_key(qr: str, area: str | None) -> str:
    return f"bag:{area or ALL}:{qr}"


def parent_bill_key(qr: str) -> str:
    return f"parent-bill:{qr}"


def bill_key(code: str) -> str:
    return f"bill:{code}"


def keys_for_scan(area: str) -> list[str]:
    """The parts a new scan in `area` changes: its area's and every area's stats and activity."""
    return [scan_stats_key(area), scan_stats_key(None), scan_activity_key(area), scan_activity_key(None)]


def keys_for_bill_event() -> list[str]:
    """The parts a new line of some bill's history changes."""
    return [bill_stats_key(), bill_activity_key()]


@dataclass(frozen=True)
class PartSpec:
    """What a key means: which source answers it, on which route, how long it stays fresh, how long it is kept."""

    key: str
    name: str  # the key's prefix: scan-stats, bill-trends, bag, ... (the metrics' `kind`)
    source: str
    path: str
    params: tuple[tuple[str, str], ...]
    ttl: float
    keep: float  # seconds the shared cache holds it
    lookup: bool = False  # a lookup: a 4xx is its answer; not persisted; no cross-replica lock

    @property
    def persisted(self) -> bool:
        return not self.lookup


def spec_for(key: str, settings: Settings) -> PartSpec:
    """The spec a key names; ValueError for a key no helper above makes."""
    name, _, rest = key.partition(":")
    fields = rest.split(":") if rest else []

    def area(value: str) -> tuple[tuple[str, str], ...]:
        return () if value == ALL else (("area", value),)

    def part(source: str, path: str, params: tuple, ttl: float, *, lookup: bool = False) -> PartSpec:
        keep = settings.keep_lookups if lookup else settings.keep_parts
        return PartSpec(key, name, source, path, params, ttl, keep, lookup)

    limit = (("limit", str(settings.activity_items)),)
    match name, fields:
        case "scan-stats", [where]:
            return part("scanning", "/internal/stats", area(where), settings.ttl_stats)
        case "bill-stats", []:
            return part("billing", "/internal/bills/stats", (), settings.ttl_stats)
        case "scan-activity", [where]:
            return part("scanning", "/internal/scans", area(where) + limit, settings.ttl_activity)
        case "bill-activity", []:
            return part("billing", "/internal/bills/events", limit, settings.ttl_activity)
        case "scan-trends", [days, where] if days.isdigit():
            return part("scanning", "/internal/trends", (("days", days),) + area(where), settings.ttl_trends)
        case "bill-trends", [days] if days.isdigit():
            return part("billing", "/internal/bills/trends", (("days", days),), settings.ttl_trends)
        case "bag", [where, qr] if qr:
            return part("scanning", f"/internal/bags/{qr}/lookup", area(where), settings.ttl_lookup, lookup=True)
        case "parent-bill", [qr] if qr:
            return part("billing", f"/internal/parents/{qr}/bill", (), settings.ttl_lookup, lookup=True)
        case "bill", [code] if code:
            return part("billing", f"/internal/bills/lookup/{code}", (), settings.ttl_lookup, lookup=True)
    raise ValueError(f"not a dashboard part key: {key!r}")
