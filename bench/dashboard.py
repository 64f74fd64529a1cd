"""The dashboard with 1.8 M bags and 50,000 bills loaded, through the gateway: stats and composed lookups at fixed
arrival rates, with p50/p95/p99.

    make bench-dashboard                                   # a system of its own (bagtrack_scale_*), seeded once
    BENCH_SECONDS=20 BENCH_STATS_RATE=40 BENCH_LOOKUP_RATE=20 .venv/bin/python bench/dashboard.py
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bagtrack BAGTRACK_ADMIN_USERNAME=admin \\
        BAGTRACK_ADMIN_PASSWORD=... .venv/bin/python bench/dashboard.py --url http://127.0.0.1:8080   # a running one

What is measured, alongside each other for BENCH_SECONDS, open loop (requests leave at their scheduled instants;
latency counts from then; 2 s = timeout, a failure like any non-2xx):
  GET /dashboard/stats          as a biller (every area, and bills) at BENCH_STATS_RATE/s, and as a dispatcher (one
                                area) at half that rate: what a wall of dashboards asks
  GET /dashboard/lookup/{code}  seeded parents, children and bill codes picked at random (so mostly not cached: each
                                one composed from scanning and billing) at BENCH_LOOKUP_RATE/s
  POST /scans/parent            at BENCH_SCAN_RATE/s meanwhile, as the dispatcher (not the measured thing: it keeps
                                the counts moving and the stats parts refreshing)
Targets: stats p95 < 50 ms; lookup p95 < 100 ms (the dashboard's own answer budget). Data, systems and limits as in
bench/billing.py, whose seeding and reporting this reuses.
"""
from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid
from pathlib import Path

import aiohttp
import httpx
from sqlalchemy import create_engine, pool, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import billing  # noqa: E402
from bench.billing import HEADER, Recorder, pct, report_row, timed  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))
STATS_RATE = float(os.environ.get("BENCH_STATS_RATE", "40"))
LOOKUP_RATE = float(os.environ.get("BENCH_LOOKUP_RATE", "20"))
SCAN_RATE = float(os.environ.get("BENCH_SCAN_RATE", "10"))
AREA = billing.AREA
TARGETS_MS = {"stats": 50.0, "lookup": 100.0}
DISPATCHER = ("bench_dashboard_disp", "B3nch!dispatch")


def pick_codes(scanning_url: str, billing_url: str, rng: random.Random, count: int = 3000) -> list[str]:
    """Seeded codes to look up: a third parents (with children), a third children, a third bill codes."""
    scanning = create_engine(scanning_url, poolclass=pool.NullPool)
    bills = create_engine(billing_url, poolclass=pool.NullPool)
    try:
        with scanning.connect() as conn:
            parents = list(conn.execute(text(
                "SELECT qr_id FROM bags WHERE type = 'parent' AND child_count > 0 "
                "AND id >= (SELECT max(id) FROM bags) * random() LIMIT :n"), {"n": count}).scalars())
            children = list(conn.execute(text(
                "SELECT qr_id FROM bags WHERE type = 'child' AND parent_id IS NOT NULL "
                "AND id >= (SELECT max(id) FROM bags) * random() LIMIT :n"), {"n": count}).scalars())
        with bills.connect() as conn:
            codes = list(conn.execute(text("SELECT bill_id FROM bills ORDER BY random() LIMIT :n"),
                                      {"n": count}).scalars())
    finally:
        scanning.dispose()
        bills.dispose()
    if not (parents and children and codes):
        raise SystemExit("no seeded parents, children or bills to look up: seed first (make seed, make seed-bills)")
    picked = rng.sample(parents, min(len(parents), count // 3)) + rng.sample(children, min(len(children), count // 3))
    picked += rng.sample(codes, min(len(codes), count // 3))
    rng.shuffle(picked)
    return picked


def dispatcher_token(api: str, admin: str) -> str:
    with httpx.Client(base_url=api, timeout=10) as client:
        created = client.post("/users", headers={"Authorization": f"Bearer {admin}"}, json={
            "username": DISPATCHER[0], "email": f"{DISPATCHER[0]}@example.com", "password": DISPATCHER[1],
            "role": "dispatcher", "dispatch_area": AREA})
        if created.status_code not in (201, 409):
            raise SystemExit(f"POST /users (dispatcher) answered {created.status_code} {created.text}")
        login = client.post("/auth/login", json={"username": DISPATCHER[0], "password": DISPATCHER[1]})
        if login.status_code != 200:
            raise SystemExit(f"dispatcher login failed: {login.status_code} {login.text}")
        return login.json()["access_token"]


async def at_rate(rate: float, send) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    tasks = []
    for i in range(int(rate * SECONDS)):
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        tasks.append(asyncio.create_task(send(i, at)))
    await asyncio.gather(*tasks)


async def phase(api: str, biller: str, dispatcher: str, codes: list[str]) -> list[Recorder]:
    connector = aiohttp.TCPConnector(limit=500, ttl_dns_cache=300)
    as_biller = {"Authorization": f"Bearer {biller}"}
    as_dispatcher = {"Authorization": f"Bearer {dispatcher}"}
    async with aiohttp.ClientSession(connector=connector) as session:
        stats_all = Recorder("GET /dashboard/stats (biller: all areas)", STATS_RATE)
        stats_area = Recorder(f"GET /dashboard/stats (dispatcher: {AREA})", STATS_RATE / 2)
        lookups = Recorder("GET /dashboard/lookup/{code} (seeded, random)", LOOKUP_RATE)
        scans = Recorder("POST /scans/parent (background; 404: another area's)", SCAN_RATE)

        async def scan(i: int, at: float) -> None:
            qr = f"{random.choice(('SB', 'M444-'))}{random.randrange(100_000):05d}"
            await timed(session, scans, at, "POST", f"{api}/scans/parent", headers=as_dispatcher,
                        json={"qr_id": qr, "scan_id": uuid.uuid4().hex})

        await asyncio.gather(
            at_rate(stats_all.rate, lambda i, at: timed(session, stats_all, at, "GET", f"{api}/dashboard/stats",
                                                        headers=as_biller)),
            at_rate(stats_area.rate, lambda i, at: timed(session, stats_area, at, "GET", f"{api}/dashboard/stats",
                                                         headers=as_dispatcher)),
            at_rate(lookups.rate, lambda i, at: timed(session, lookups, at, "GET",
                                                      f"{api}/dashboard/lookup/{codes[i % len(codes)]}",
                                                      headers=as_biller)),
            at_rate(scans.rate, scan))
        return [stats_all, stats_area, lookups, scans]


def measure(api: str, scanning_url: str, billing_url: str, described: str) -> int:
    rng = random.Random()
    codes = pick_codes(scanning_url, billing_url, rng)
    admin, biller = billing.tokens(api)
    dispatcher = dispatcher_token(api, admin)
    print(f"bagtrack dashboard at scale — {described}; through the gateway on loopback; {os.cpu_count()} cores",
          flush=True)
    print(f"\nopen loop, {SECONDS:.0f} s: stats {STATS_RATE:.0f} + {STATS_RATE / 2:.0f}/s, lookups {LOOKUP_RATE:.0f}/s "
          f"over {len(codes):,} seeded codes, child scans {SCAN_RATE:.0f}/s; latency from the scheduled send")
    print(HEADER)
    recs = asyncio.run(phase(api, biller, dispatcher, codes))
    for rec in recs:
        print(report_row(rec), flush=True)
    for rec in recs:
        for kind, example in rec.examples.items():
            print(f"  first failure of {rec.name} {kind}: {example}")
    for rec, target in ((recs[0], TARGETS_MS["stats"]), (recs[1], TARGETS_MS["stats"]),
                        (recs[2], TARGETS_MS["lookup"])):
        p95 = pct(rec.latencies, 95)
        ok = p95 < target and not rec.failures
        print(f"{rec.name}: p95 {p95:.1f} ms {'meets' if ok else 'MISSES'} the target (< {target:.0f} ms, no failures)")
    return 0


def main() -> int:
    return billing.run_against_system(measure, description=__doc__.splitlines()[0], name="dashboard")


if __name__ == "__main__":
    sys.exit(main())
