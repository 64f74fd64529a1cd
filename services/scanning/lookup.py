"""One bag with its parent or children: from the cache when it has it, else the database (then cached)."""
from __future__ import annotations

import json

from services.scanning import repository as repo
from services.scanning.qr import any_code
from services.scanning.views import bag_out, may_see, no_bag
from services.scanning.writes import ScanningContext, cache_key
from shared.cache import TOMBSTONE
from shared.security import Principal


async def lookup(*, ctx: ScanningContext, principal: Principal, raw_qr: str) -> bytes:
    """The bag as BagOut's JSON. A hit costs one cache read: no database, no re-validation (the cache holds the
    finished JSON); the area check runs on every read, cached or not, and another area's bag is as missing."""
    qr = any_code(ctx.settings, raw_qr)
    raw = await ctx.cache.get(cache_key(qr))
    if raw is None or raw == TOMBSTONE:
        # A replica may answer only when the cache can vouch that the bag was not written just now: a tombstone
        # means it was (it stands for the replica's allowed lag), and with the cache down nothing can be known.
        raw = await _load(ctx, qr, replica=raw is None and ctx.cache.available)
    if not may_see(principal, json.loads(raw)["dispatch_area"]):
        raise no_bag(qr)
    return raw


async def _load(ctx: ScanningContext, qr: str, *, replica: bool) -> bytes:
    async with ctx.db.read(replica=replica) as conn:
        bag, children = await repo.bag_with_relatives(conn, qr)
    if bag is None:
        raise no_bag(qr)
    view = bag_out(bag, bag["parent_qr"], children if bag["type"] == "parent" else None)
    raw = view.model_dump_json().encode()
    # SET NX: a tombstone written by a concurrent write wins, so rows read before its commit are never cached.
    await ctx.cache.add(cache_key(qr), raw, ctx.settings.lookup_cache_seconds)
    return raw
