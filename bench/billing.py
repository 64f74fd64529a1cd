"""Billing with 1.8 M bags and 50,000 bills loaded, through the gateway: parents added to bills and bills read, at
fixed arrival rates, with p50/p95/p99.

    make bench-billing                                   # a system of its own (bagtrack_scale_*), seeded once
    BENCH_BAGS=1800000 BENCH_BILLS=50000 BENCH_SECONDS=20 BENCH_ADD_RATE=20 BENCH_READ_RATE=40 .venv/bin/python bench/billing.py
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bagtrack BAGTRACK_ADMIN_USERNAME=admin \\
        BAGTRACK_ADMIN_PASSWORD=... .venv/bin/python bench/billing.py --url http://127.0.0.1:8080   # a running system

What is measured, alongside each other for BENCH_SECONDS:
  POST /bills/{id}/bags   parents scanned just before (by an admin, with a few children each: not measured) added
                          at BENCH_ADD_RATE/s to fresh bills of capacity 30, several open at once (as billers work)
  GET /bills/{id}         seeded bills holding 25-35 parents (their counts asked of scanning: one batch call), at
                          BENCH_READ_RATE/s, and the fresh bills being loaded, at half that rate
Target: add p95 < 50 ms. Reads also say how many answered with stale counts (scanning did not answer within
BILLING_COUNTS_TIMEOUT). Load is open loop (docs/performance.md, "Traps"): requests leave at their scheduled
instants whatever the answers do, latency counts from the scheduled instant, and a request not answered within 2 s
of it is a timeout, counted as a failure like any non-2xx. Its own system: PostgreSQL 127.0.0.1:5432 (databases
bagtrack_scale_*: the bags are shared with bench/scanning.py; bills topped up to BENCH_BILLS by
scripts/seed_bills.py) and Redis db 13, stopped at the end. A running system (--url): loopback only, its databases
named by DATABASE_URL (seeded with `make seed` and `make seed-bills` first), an admin from BAGTRACK_ADMIN_*.
Bounded in time and count; the bills and parents it creates stay (they are few).
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httpx
from sqlalchemy import create_engine, pool, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, reachable  # noqa: E402
from scripts.seed import seed  # noqa: E402
from scripts.seed_bills import seed_bills  # noqa: E402
from scripts.stack import PORT_NAMES, Stack  # noqa: E402
from shared.settings import derive_database_url  # noqa: E402

BAGS = int(os.environ.get("BENCH_BAGS", "1800000"))
BILLS = int(os.environ.get("BENCH_BILLS", "50000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))
ADD_RATE = float(os.environ.get("BENCH_ADD_RATE", "20"))
READ_RATE = float(os.environ.get("BENCH_READ_RATE", "40"))
OPEN_BILLS = int(os.environ.get("BENCH_OPEN_BILLS", "5"))  # fresh bills loaded at once, round-robin
AREA = os.environ.get("BENCH_AREA", "lucknow")
BILL_CAPACITY = 30
CHILDREN_PER_PARENT = 3
TIMEOUT = 2.0
TARGET_ADD_P95_MS = 50.0
PG = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/bagtrack_scale")
REDIS = "redis://127.0.0.1:6379/13"
ADMIN = (os.environ.get("BAGTRACK_ADMIN_USERNAME") or "benchadmin",
         os.environ.get("BAGTRACK_ADMIN_PASSWORD") or "B3nch!admin")
BILLER = ("bench_biller", "B3nch!biller")


def loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise SystemExit(f"cannot resolve {host!r}: {exc}") from exc
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"refusing {url}: the benchmark runs only against loopback addresses")


# --- data ----------------------------------------------------------------------------------------------------

def ensure_seeded(scanning_url: str, billing_url: str) -> str:
    """Top the scanning database up to BAGS bags and billing's up to BILLS bills (reused when there)."""
    done = []
    scanning = create_engine(scanning_url, poolclass=pool.NullPool)
    billing = create_engine(billing_url, poolclass=pool.NullPool)
    try:
        with scanning.connect() as conn:
            have = conn.execute(text("SELECT count(*) FROM bags")).scalar()
        if have < BAGS:
            print(f"seeding {BAGS - have:,} bags (have {have:,}) ...", flush=True)
            report = seed(scanning, bags=BAGS - have, append=have > 0, progress=lambda line: print(line, flush=True))
            print(report.summary(), flush=True)
            done.append(f"{report.bags:,} bags seeded now in {report.seconds:.0f} s")
        with billing.connect() as conn:
            bills = conn.execute(text("SELECT count(*) FROM bills")).scalar()
        if bills < BILLS:
            print(f"seeding {BILLS - bills:,} bills (have {bills:,}) ...", flush=True)
            report = seed_bills(billing, scanning, bills=BILLS - bills, append=bills > 0,
                                progress=lambda line: print(line, flush=True))
            print(report.summary(), flush=True)
            done.append(f"{report.bills:,} bills seeded now in {report.seconds:.0f} s")
    finally:
        scanning.dispose()
        billing.dispose()
    return "; ".join(done) or "reused"


@dataclass
class Workload:
    bags: int
    bills: int
    billed_parents: int
    seeded_big: list[str]  # codes of seeded bills holding 25-35 parents
    free_parents: list[str]  # parent codes no bag has (the loadtest's dispatchers scan all over the code space)


def pick_workload(scanning_url: str, billing_url: str, parents_needed: int, rng: random.Random) -> Workload:
    scanning = create_engine(scanning_url, poolclass=pool.NullPool)
    billing = create_engine(billing_url, poolclass=pool.NullPool)
    try:
        with billing.connect() as conn:
            bills = conn.execute(text("SELECT count(*) FROM bills")).scalar()
            billed = conn.execute(text("SELECT count(*) FROM bill_parents")).scalar()
            big = list(conn.execute(text("SELECT bill_id FROM bills WHERE linked_count BETWEEN 25 AND 35")).scalars())
        with scanning.connect() as conn:
            bags = conn.execute(text("SELECT count(*) FROM bags")).scalar()
            used = set(conn.execute(text("SELECT qr_id FROM bags WHERE qr_id LIKE 'SB%' OR qr_id LIKE 'M444-%'"))
                       .scalars())
    finally:
        scanning.dispose()
        billing.dispose()
    free = [code for prefix in ("SB", "M444-") for n in range(100_000)
            if (code := f"{prefix}{n:05d}") not in used]
    if len(free) < parents_needed:
        raise SystemExit(f"only {len(free)} SB / M444- parent codes are free; {parents_needed} are needed")
    free = rng.sample(free, parents_needed)
    if not big:
        raise SystemExit("no seeded bill holds 25-35 parents: seed bills with scripts/seed_bills.py first")
    rng.shuffle(big)
    return Workload(bags, bills, billed, big[:2000], free)


# --- people and set-up (not measured) ------------------------------------------------------------------------

def tokens(api: str) -> tuple[str, str]:
    """(admin token, biller token): the bench biller is created once and reused."""
    with httpx.Client(base_url=api, timeout=10) as client:
        login = client.post("/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        if login.status_code != 200:
            raise SystemExit(f"admin login failed: {login.status_code} {login.text} (set BAGTRACK_ADMIN_USERNAME/"
                             "PASSWORD to the system's admin)")
        admin = login.json()["access_token"]
        created = client.post("/users", headers={"Authorization": f"Bearer {admin}"}, json={
            "username": BILLER[0], "email": f"{BILLER[0]}@example.com", "password": BILLER[1], "role": "biller"})
        if created.status_code not in (201, 409):
            raise SystemExit(f"POST /users (biller) answered {created.status_code} {created.text}")
        login = client.post("/auth/login", json={"username": BILLER[0], "password": BILLER[1]})
        if login.status_code != 200:
            raise SystemExit(f"biller login failed: {login.status_code} {login.text}")
        return admin, login.json()["access_token"]


async def prepare(api: str, admin: str, biller: str, work: Workload, parents: int, bills: int,
                  run: str) -> tuple[list[str], list[str]]:
    """Scan `parents` fresh parents (a few children each) as the admin, create `bills` fresh bills as the biller."""
    qrs = work.free_parents[:parents]
    failures: Counter = Counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        scan = {"Authorization": f"Bearer {admin}"}
        queue = list(enumerate(qrs))

        async def scanner() -> None:
            while queue:
                i, qr = queue.pop()
                async with session.post(f"{api}/scans/parent", headers=scan,
                                        json={"qr_id": qr, "dispatch_area": AREA, "scan_id": uuid.uuid4().hex}) as r:
                    await r.read()
                    if r.status != 200:
                        failures[f"parent {r.status}"] += 1
                        continue
                for k in range(CHILDREN_PER_PARENT):
                    async with session.post(f"{api}/scans/child", headers=scan, json={
                            "parent_qr": qr, "child_qr": f"BB{run}{i:05d}{k}", "scan_id": uuid.uuid4().hex}) as r:
                        await r.read()
                        if r.status != 200:
                            failures[f"child {r.status}"] += 1

        await asyncio.gather(*(scanner() for _ in range(8)))
        codes = []
        for i in range(bills):
            async with session.post(f"{api}/bills", headers={"Authorization": f"Bearer {biller}"},
                                    json={"capacity": BILL_CAPACITY, "destination": "Bench",
                                          "description": f"bench run {run} #{i}"}) as r:
                body = await r.json()
                if r.status != 201:
                    raise SystemExit(f"POST /bills answered {r.status}: {body}")
                codes.append(body["bill_id"])
    if failures:
        raise SystemExit(f"scanning the fresh parents failed: {dict(failures)}")
    return qrs, codes


# --- open-loop load ------------------------------------------------------------------------------------------

@dataclass
class Recorder:
    name: str
    rate: float
    latencies: list[float] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    stale: int = 0
    parents_seen: list[int] = field(default_factory=list)
    lag: float = 0.0

    def fail(self, kind: str, example: str = "") -> None:
        self.failures[kind] += 1
        self.examples.setdefault(kind, example[:300])


async def timed(session: aiohttp.ClientSession, rec: Recorder, scheduled: float, method: str, url: str,
                **kwargs) -> dict | None:
    """One request sent at `scheduled`; latency counts from then, 2 s later it timed out. The body on a 2xx."""
    loop = asyncio.get_running_loop()
    rec.sent += 1
    rec.lag = max(rec.lag, loop.time() - scheduled)
    try:
        async with asyncio.timeout_at(scheduled + TIMEOUT):
            async with session.request(method, url, **kwargs) as response:
                body = await response.read()
    except TimeoutError:
        rec.fail("timeout")
        return None
    except aiohttp.ClientError as exc:
        rec.fail("error", repr(exc))
        return None
    if not 200 <= response.status < 300:
        rec.fail(str(response.status), body.decode(errors="replace"))
        return None
    rec.latencies.append(loop.time() - scheduled)
    return json.loads(body)


async def at_rate(rate: float, send) -> None:
    """Call send(i, scheduled) at `rate` per second for SECONDS, without waiting for the answers."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    tasks = []
    for i in range(int(rate * SECONDS)):
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        tasks.append(asyncio.create_task(send(i, at)))
    await asyncio.gather(*tasks)


async def phase(api: str, biller: str, work: Workload, fresh_parents: list[str], fresh_bills: list[str],
                rng: random.Random) -> list[Recorder]:
    connector = aiohttp.TCPConnector(limit=500, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {biller}"}) as session:
        adds = Recorder("POST /bills/{id}/bags (fresh parent)", ADD_RATE)
        big = Recorder("GET /bills/{id} (seeded, 25-35 parents)", READ_RATE)
        fresh = Recorder("GET /bills/{id} (fresh, being loaded)", READ_RATE / 2)
        loading = fresh_bills[:OPEN_BILLS]
        waiting = fresh_bills[OPEN_BILLS:]
        filled: Counter = Counter()

        async def add(i: int, at: float) -> None:
            slot = i % len(loading)
            bill = loading[slot]
            filled[bill] += 1
            if filled[bill] == BILL_CAPACITY and waiting:  # full: this biller starts the next bill
                loading[slot] = waiting.pop(0)
            await timed(session, adds, at, "POST", f"{api}/bills/{bill}/bags", json={"parent_qr": fresh_parents[i]})

        async def read(rec: Recorder, pick, i: int, at: float) -> None:
            body = await timed(session, rec, at, "GET", f"{api}/bills/{pick()}")
            if body is not None:
                rec.stale += bool(body["counts"]["stale"])
                rec.parents_seen.append(body["linked_count"])

        started = [b for b in fresh_bills if b in loading]
        await asyncio.gather(
            at_rate(ADD_RATE, add),
            at_rate(big.rate, lambda i, at: read(big, lambda: work.seeded_big[i % len(work.seeded_big)], i, at)),
            at_rate(fresh.rate, lambda i, at: read(fresh, lambda: rng.choice(started + list(filled)), i, at)))
        return [adds, big, fresh]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))] * 1000


HEADER = (f"{'operation':<42} {'rate/s':>6} {'sent':>6} {'ok':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'non-2xx':>7} {'timeouts':>8} {'errors':>6} {'lag ms':>7}  notes")


def report_row(rec: Recorder) -> str:
    non2xx = sum(v for k, v in rec.failures.items() if k.isdigit())
    notes = ""
    if rec.parents_seen:
        notes = (f"{rec.stale} stale; parents per bill {min(rec.parents_seen)}-{max(rec.parents_seen)} "
                 f"(mean {sum(rec.parents_seen) / len(rec.parents_seen):.1f})")
    return (f"{rec.name:<42} {rec.rate:>6.1f} {rec.sent:>6} {len(rec.latencies):>6} {pct(rec.latencies, 50):>7.1f} "
            f"{pct(rec.latencies, 95):>7.1f} {pct(rec.latencies, 99):>7.1f} "
            f"{max(rec.latencies, default=float('nan')) * 1000:>7.1f} {non2xx:>7} {rec.failures['timeout']:>8} "
            f"{rec.failures['error']:>6} {rec.lag * 1000:>7.1f}  {notes}")


def measure(api: str, scanning_url: str, billing_url: str, described: str) -> int:
    rng = random.Random()
    run = uuid.uuid4().hex[:6].upper()
    adds = int(ADD_RATE * SECONDS)
    work = pick_workload(scanning_url, billing_url, adds, rng)
    admin, biller = tokens(api)
    bills_needed = OPEN_BILLS + adds // BILL_CAPACITY + 1
    fresh_parents, fresh_bills = asyncio.run(prepare(api, admin, biller, work, adds, bills_needed, run))
    print(f"bagtrack billing at scale — {described}: {work.bags:,} bags, {work.bills:,} bills holding "
          f"{work.billed_parents:,} parents ({len(work.seeded_big):,} of them read: 25-35 parents each); through the "
          f"gateway on loopback; {os.cpu_count()} cores", flush=True)
    print(f"set up (not measured): {len(fresh_parents)} fresh parents of {AREA} with {CHILDREN_PER_PARENT} children "
          f"each, {len(fresh_bills)} fresh bills of capacity {BILL_CAPACITY} ({OPEN_BILLS} loaded at once)")
    print(f"\nopen loop, {SECONDS:.0f} s: {ADD_RATE:.0f} adds/s alongside {READ_RATE:.0f} + {READ_RATE / 2:.0f} bill "
          f"reads/s; latency from the scheduled send, {TIMEOUT:.0f} s = timeout")
    print(HEADER)
    recs = asyncio.run(phase(api, biller, work, fresh_parents, fresh_bills, rng))
    for rec in recs:
        print(report_row(rec), flush=True)
    for rec in recs:
        for kind, example in rec.examples.items():
            print(f"  first failure of {rec.name} {kind}: {example}")
    p95 = pct(recs[0].latencies, 95)
    verdict = "meets" if p95 < TARGET_ADD_P95_MS and not recs[0].failures else "MISSES"
    print(f"\nadd p95 {p95:.1f} ms {verdict} the target (< {TARGET_ADD_P95_MS:.0f} ms through the gateway, no failures)")
    return 0


def main() -> int:
    return run_against_system(measure, description=__doc__.splitlines()[0], name="billing")


def run_against_system(measure, *, description: str, name: str) -> int:
    """`measure(api, scanning_url, billing_url, described)` against a running system (--url, databases from
    DATABASE_URL) or against a system of its own on bagtrack_scale_* (seeded once, then reused), stopped after.
    Shared by the benchmarks that need 1.8 M bags and 50,000 bills (this one, bench/dashboard.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", help="a running system's gateway (loopback); its databases from DATABASE_URL")
    args = parser.parse_args()
    if not (reachable(5432) and reachable(6379)):
        print("this benchmark needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379", file=sys.stderr)
        return 2
    if args.url:
        loopback_only(args.url)
        base = os.environ.get("DATABASE_URL")
        if not base or not base.startswith(("postgresql", "postgres")):
            print("--url needs DATABASE_URL (the running system's PostgreSQL base URL)", file=sys.stderr)
            return 2
        scanning_url, billing_url = (derive_database_url(base, name, ROOT / "var") for name in ("scanning", "billing"))
        return measure(args.url.rstrip("/") + "/api/v1", scanning_url, billing_url,
                       f"the running system at {args.url} (PostgreSQL {scanning_url.rsplit('/', 1)[1]}, ...)")
    work_dir = Path(tempfile.mkdtemp(prefix=f"bagtrack-bench-{name}-"))
    env = {"BAGTRACK_VAR_DIR": str(work_dir), "BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1],
           "DATABASE_URL": PG, "REDIS_URL": REDIS, "ACCESS_LOG": "false", "LOG_LEVEL": "WARNING"}
    stack = Stack(ports={name: free_port() for name in PORT_NAMES}, env=env, log_dir=work_dir / "log")
    scanning_url, billing_url = (derive_database_url(PG, name, work_dir) for name in ("scanning", "billing"))
    try:
        stack.migrate()
        seeded = ensure_seeded(scanning_url, billing_url)  # before the services start: the seeders write alone
        stack.start()
        stack.wait_ready(timeout=60)
        code = measure(stack.url() + "/api/v1", scanning_url, billing_url,
                       f"its own system, PostgreSQL {PG.rsplit('/', 1)[1]}_* ({seeded}) + Redis {REDIS}")
        dead = stack.dead()
        if dead:
            print(f"processes that died: {dead}; logs in {work_dir / 'log'}")
            return 1
    finally:
        stack.stop()
    shutil.rmtree(work_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
