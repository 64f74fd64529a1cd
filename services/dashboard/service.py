"""What the dashboard answers, composed from parts (services/dashboard/parts.py) per caller: a dispatcher sees
their own area and nothing of billing (bills have no area); billers and admins see every area and the bills.

`app.state.dashboard` is a Dashboard; the live stream renders its events through the same methods:

    body = await app.state.dashboard.stats_body(principal)        # what GET /dashboard/stats answers them
    await app.state.dashboard.refresh(keys.scan_stats_key("jaipur"))  # a new scan was seen there
"""
from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import FastAPI

from services.dashboard import keys
from services.dashboard.config import Settings
from services.dashboard.held import Absent, Entry, Reading, iso
from services.dashboard.keys import PartSpec
from services.dashboard.parts import PartStore
from shared.codes import is_bill_code, normalize_code
from shared.errors import Forbidden, InvalidInput, NotFound, ProblemError
from shared.security import Principal

# What a bag QR or a bill code can be made of (scanning's own QR filters and billing's code rule say the same);
# anything else is a 422 here, without asking a source.
_CODE = re.compile(r"^[A-Z0-9_-]{1,64}$")


def sees_all_areas(principal: Principal) -> bool:
    """Billers and admins see every area and the bills; a dispatcher their own area only."""
    return principal.role in ("admin", "biller")


def area_of(principal: Principal) -> str | None:
    """The area a caller is scoped to (None: every area); a 403 for a dispatcher with no area."""
    if sees_all_areas(principal):
        return None
    if not principal.dispatch_area:
        raise Forbidden("a dispatcher without a dispatch area sees no dashboard")
    return principal.dispatch_area.lower()


def lookup_code(raw: str) -> str:
    """A scanned or typed code, normalised like QRs and bill codes; a 422 when it can be neither."""
    code = normalize_code(raw)
    if not _CODE.match(code):
        raise InvalidInput(f"{raw[:64]!r} is neither a bag QR nor a bill code (A-Z, 0-9, '_' and '-' only)")
    return code


class Dashboard:
    """The answers of the dashboard's read routes (and of its stream), for one caller each."""

    def __init__(self, settings: Settings, store: PartStore) -> None:
        self.settings = settings
        self.parts = store

    async def stats_body(self, principal: Principal) -> dict[str, Any]:
        """GET /dashboard/stats: scanning's counts (the caller's area, or all), billing's for billers and admins."""
        area = area_of(principal)
        specs = {"scanning": keys.scan_stats_key(area)}
        if sees_all_areas(principal):
            specs["billing"] = keys.bill_stats_key()
        return await self._compose(specs)

    async def activity_body(self, principal: Principal) -> dict[str, Any]:
        """GET /dashboard/activity: recent scans (the caller's area, or all), bill events for billers and admins."""
        area = area_of(principal)
        specs = {"scans": keys.scan_activity_key(area)}
        if sees_all_areas(principal):
            specs["bill_events"] = keys.bill_activity_key()
        return await self._compose(specs)

    async def trends_body(self, principal: Principal, days: int) -> dict[str, Any]:
        """GET /dashboard/trends?days=N: each source's daily series over the last N local days."""
        area = area_of(principal)
        specs = {"scanning": keys.scan_trends_key(days, area)}
        if sees_all_areas(principal):
            specs["billing"] = keys.bill_trends_key(days)
        return {"days": days, **await self._compose(specs)}

    async def lookup_body(self, principal: Principal, raw_code: str) -> dict[str, Any]:
        """GET /dashboard/lookup/{code}: a bill code gives the bill; a QR the bag, its parent or children, its
        last scans and (billers and admins) the bill holding it or its parent."""
        code = lookup_code(raw_code)
        if is_bill_code(code):
            return await self._bill_lookup(principal, code)
        return await self._bag_lookup(principal, code)

    async def refresh(self, key: str) -> None:
        """Refresh one part now and wait for it (bounded by DASHBOARD_REFRESH_TIMEOUT); ValueError for a key
        that names no part."""
        await self.parts.refresh(key)

    # -- composing -------------------------------------------------------------------------------------------

    async def _compose(self, named: dict[str, str]) -> dict[str, Any]:
        specs = {field: self.parts.spec(key) for field, key in named.items()}
        reading = await self.parts.read(list(specs.values()), wait=self.settings.first_fetch_wait)
        shown = {field: self.parts.view(spec, reading) for field, spec in specs.items()}
        held = [entry.as_of for spec in specs.values()
                if isinstance(entry := reading.entries.get(spec.key), Entry) and entry.held]
        # The answer is as old as its oldest part.
        return {**shown, **reading.sources(), "as_of": iso(min(held)) if held else None}

    async def _bill_lookup(self, principal: Principal, code: str) -> dict[str, Any]:
        if not sees_all_areas(principal):
            raise Forbidden("bills are for billers and admins")
        spec = self.parts.spec(keys.bill_key(code))
        reading = await self._read_lookup([spec], self._deadline())
        _raise_if_absent(reading, spec, f"no bill {code}")
        part = self.parts.view(spec, reading)
        return {"kind": "bill", "code": code, **_status_of(part), "bill": part["data"], **reading.sources()}

    async def _bag_lookup(self, principal: Principal, qr: str) -> dict[str, Any]:
        """The bag and, concurrently, the bill holding that QR; for a child, the bill of its parent (a second
        call, once the bag says who its parent is), all within the one budget."""
        deadline = self._deadline()
        bag = self.parts.spec(keys.bag_key(qr, area_of(principal)))
        billing = sees_all_areas(principal)
        bill = self.parts.spec(keys.parent_bill_key(qr)) if billing else None
        reading = await self._read_lookup([bag] + ([bill] if bill else []), deadline)
        _raise_if_absent(reading, bag, f"no bag {qr}")
        shown = self.parts.view(bag, reading)
        found = shown["data"] or {}
        parent_qr = (found.get("bag") or {}).get("parent_qr")
        if bill is not None and parent_qr:
            bill = self.parts.spec(keys.parent_bill_key(parent_qr))
            reading = reading.merged(await self._read_lookup([bill], deadline))
        body = {"kind": "bag", "code": qr, **_status_of(shown), "bag": found.get("bag"),
                "parent": found.get("parent"), "last_scans": found.get("last_scans", [])}
        if bill is not None:
            body["bill"] = self.parts.view(bill, reading)
        return {**body, **reading.sources()}

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.settings.first_fetch_wait

    async def _read_lookup(self, specs: list[PartSpec], deadline: float) -> Reading:
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        return await self.parts.read(specs, wait=remaining, wait_if_expired=True)


def _status_of(part: dict[str, Any]) -> dict[str, Any]:
    """A lookup's own freshness fields (the part's, without its data)."""
    return {name: part[name] for name in ("status", "as_of", "age_seconds", "source")}


def _raise_if_absent(reading: Reading, spec: PartSpec, detail: str) -> None:
    """The source's 4xx for a lookup, as ours: 404 names only the code asked (another area's bag is a 404 like
    an unknown one); a 422 passes the source's reason on."""
    entry = reading.entries.get(spec.key)
    if not isinstance(entry, Absent):
        return
    if entry.status == 404:
        raise NotFound(detail)
    if entry.status == 422:
        raise InvalidInput(entry.detail)
    raise ProblemError(entry.detail, status=entry.status)


async def settle_at_shutdown(app: FastAPI) -> None:
    """The job that ends the parts' background work when the process stops (PartStore.run_until_shutdown)."""
    await app.state.dashboard.parts.run_until_shutdown()


async def build_context(app: FastAPI) -> None:
    """Start-up hook: the dashboard on app.state (its parts read and refreshed through app.state.clients)."""
    state = app.state
    store = PartStore(state.settings, state.db, state.cache, state.clients)
    state.dashboard = Dashboard(state.settings, store)

