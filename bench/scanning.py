"""Scanning with 1.8 M bags loaded, through the gateway: bag lookups (first touch and repeated) and child scans
at a fixed arrival rate, then a closed-loop wrk figure for repeated lookups.

    make bench-scanning
    BENCH_BAGS=1800000 BENCH_SECONDS=20 BENCH_LOOKUP_RATE=100 BENCH_SCAN_RATE=20 .venv/bin/python bench/scanning.py
    .venv/bin/python bench/scanning.py --explain     # EXPLAIN (ANALYZE, BUFFERS) of the service's queries

Storage: PostgreSQL on 127.0.0.1:5432 (database bagtrack_scale_scanning, seeded up to BENCH_BAGS bags the first
time and reused after) and Redis db 13; both must be running. Load is open loop (docs/performance.md, "Traps"): requests
leave at their scheduled instants whatever the answers do, latency counts from the scheduled instant (so queueing
shows), and a request not answered within 2 s of it is a timeout, counted as a failure like any non-2xx.
"First touch" lookups ask for bags no one has asked for (their cache keys are removed first): Redis misses,
answered by PostgreSQL. "Repeated" ones come from a set of bags looked up just before: Redis hits.
Everything is bounded in time and on loopback; the system it starts is stopped at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import redis
from sqlalchemy import create_engine, pool, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import WRK_REPORT, free_port, reachable, run_wrk  # noqa: E402
from scripts.stack import PORT_NAMES, Stack  # noqa: E402
from scripts.seed import last_code_number, seed  # noqa: E402
from shared.settings import derive_database_url  # noqa: E402

BAGS = int(os.environ.get("BENCH_BAGS", "1800000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))
LOOKUP_RATE = float(os.environ.get("BENCH_LOOKUP_RATE", "100"))
SCAN_RATE = float(os.environ.get("BENCH_SCAN_RATE", "20"))
AREA = os.environ.get("BENCH_AREA", "lucknow")
WRK_SECONDS = 10
TIMEOUT = 2.0
WARM_SET = 500
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/bagtrack_scale"
REDIS = "redis://127.0.0.1:6379/13"
ADMIN = (os.environ.get("BAGTRACK_ADMIN_USERNAME") or "benchadmin", os.environ.get("BAGTRACK_ADMIN_PASSWORD") or "B3nch!admin")
DISPATCHER_PASSWORD = "B3nch!dispatch"

LUA = """
local token = os.getenv("BENCH_TOKEN")
wrk.headers["Authorization"] = "Bearer " .. token
local qrs = {}
for line in io.lines(os.getenv("BENCH_QRS")) do qrs[#qrs + 1] = line end
request = function()
  return wrk.format("GET", "/api/v1/bags/" .. qrs[math.random(#qrs)])
end
""" + WRK_REPORT


# --- data ----------------------------------------------------------------------------------------------------

def ensure_seeded(url: str) -> tuple[int, str]:
    """Bag count after topping the database up to BAGS (reused when it already has them), and what was done."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            have = conn.execute(text("SELECT count(*) FROM bags")).scalar()
        if have >= BAGS:
            return have, "reused"
        print(f"seeding {BAGS - have:,} bags (have {have:,}) ...", flush=True)
        report = seed(engine, bags=BAGS - have, append=have > 0, progress=lambda line: print(line, flush=True))
        print(report.summary(), flush=True)
        return have + report.bags, f"seeded {report.bags:,} bags now in {report.seconds:.0f} s"
    finally:
        engine.dispose()


@dataclass
class Workload:
    cold: list[str]
    warm: list[str]
    next_parent: tuple[str, int]  # first unused parent number's prefix and number
    capacity: dict[str, int] = field(default_factory=lambda: {"SB": 30, "M444-": 15})


def pick_workload(url: str, cold_needed: int, rng: random.Random) -> Workload:
    """Random existing bags of AREA (by random ids, on the primary key), and the first unused parent number."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            top = conn.execute(text("SELECT max(id) FROM bags")).scalar()
            wanted = cold_needed + WARM_SET
            found: list[str] = []
            while len(found) < wanted:
                ids = rng.sample(range(1, top + 1), min(top, wanted * 15))
                found += conn.execute(text("SELECT qr_id FROM bags WHERE id = ANY(:ids) AND dispatch_area = :a"),
                                      {"ids": ids, "a": AREA}).scalars()
                found = list(dict.fromkeys(found))
            scalar = lambda sql: conn.execute(text(sql)).scalar()  # noqa: E731
            next_parent = None
            for prefix in ("SB", "M444-"):
                last = last_code_number(scalar, "postgresql", prefix, 5)
                number = 0 if last is None else last + 1
                if number < 100_000:
                    next_parent = (prefix, number)
                    break
            if next_parent is None:
                raise SystemExit("every SB and M444- parent number is used; drop bagtrack_scale_scanning and re-run")
    finally:
        engine.dispose()
    rng.shuffle(found)
    return Workload(cold=found[:cold_needed], warm=found[cold_needed:wanted], next_parent=next_parent)


def forget_cached(qrs: list[str]) -> None:
    """Remove these bags' cache entries, so their first lookup really is a miss."""
    client = redis.Redis.from_url(REDIS)
    keys = [f"bagtrack:scanning:bag:{qr}" for qr in qrs]
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i:i + 1000])
    client.close()


# --- people --------------------------------------------------------------------------------------------------

def dispatcher_token(api: str) -> str:
    """Log the admin in, make sure the bench dispatcher of AREA exists, log it in."""
    with httpx.Client(base_url=api, timeout=10) as client:
        login = client.post("/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        if login.status_code != 200:
            raise SystemExit(f"admin login failed: {login.status_code} {login.text} (set BAGTRACK_ADMIN_USERNAME/"
                             "PASSWORD to the admin of bagtrack_scale_auth)")
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        username = f"bench_{AREA}"
        created = client.post("/users", headers=admin, json={
            "username": username, "email": f"{username}@example.com", "password": DISPATCHER_PASSWORD,
            "role": "dispatcher", "dispatch_area": AREA})
        if created.status_code not in (201, 409):
            raise SystemExit(f"POST /users (dispatcher) answered {created.status_code} {created.text}")
        login = client.post("/auth/login", json={"username": username, "password": DISPATCHER_PASSWORD})
        if login.status_code != 200:
            raise SystemExit(f"dispatcher login failed: {login.status_code} {login.text}")
        print(f"dispatcher {username} ({AREA}): {'created' if created.status_code == 201 else 'already there'}")
        return login.json()["access_token"]


# --- open-loop load ------------------------------------------------------------------------------------------

@dataclass
class Recorder:
    name: str
    rate: float
    latencies: list[float] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    lag: float = 0.0
    first: float = 0.0
    last: float = 0.0

    def fail(self, kind: str, example: str = "") -> None:
        self.failures[kind] += 1
        self.examples.setdefault(kind, example[:300])


async def timed(session: aiohttp.ClientSession, rec: Recorder, scheduled: float, method: str, url: str,
                after: asyncio.Future | None = None, **kwargs) -> bool:
    """One request sent at `scheduled` (once `after` succeeded); latency counts from then, 2 s later it timed out."""
    loop = asyncio.get_running_loop()
    rec.sent += 1
    rec.lag = max(rec.lag, loop.time() - scheduled)
    try:
        async with asyncio.timeout_at(scheduled + TIMEOUT):
            if after is not None and not await asyncio.shield(after):
                rec.fail("no parent", "its parent scan failed")
                return False
            async with session.request(method, url, **kwargs) as response:
                body = await response.read()
    except TimeoutError:
        rec.fail("timeout")
        return False
    except aiohttp.ClientError as exc:
        rec.fail("error", repr(exc))
        return False
    rec.last = max(rec.last, loop.time())
    if not 200 <= response.status < 300:
        rec.fail(str(response.status), body.decode(errors="replace"))
        return False
    rec.latencies.append(loop.time() - scheduled)
    return True


async def lookups(session, api: str, qrs: list[str], rec: Recorder, start: float, pick) -> None:
    tasks = []
    for i in range(int(rec.rate * SECONDS)):
        at = start + i / rec.rate
        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
        tasks.append(asyncio.create_task(timed(session, rec, at, "GET", f"{api}/bags/{pick(qrs, i)}")))
    await asyncio.gather(*tasks)


async def child_scans(session, api: str, work: Workload, run: str, parents: Recorder, children: Recorder,
                      start: float) -> None:
    """Fill fresh parents: each parent scanned half a slot before its first child, children at the scan rate."""
    prefix, number = work.next_parent
    per_parent = work.capacity[prefix]
    done: dict[int, asyncio.Future] = {}
    tasks = []

    async def scan_parent(p: int, at: float, qr: str) -> None:
        done[p].set_result(await timed(session, parents, at, "POST", f"{api}/scans/parent",
                                       json={"qr_id": qr, "scan_id": uuid.uuid4().hex}))

    for j in range(int(children.rate * SECONDS)):
        at = start + j / children.rate
        p, k = divmod(j, per_parent)
        parent_qr = f"{prefix}{number + p:05d}"
        if k == 0:
            done[p] = asyncio.get_running_loop().create_future()
            await asyncio.sleep(max(0.0, at - 0.5 / children.rate - asyncio.get_running_loop().time()))
            tasks.append(asyncio.create_task(scan_parent(p, at - 0.5 / children.rate, parent_qr)))
        await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
        tasks.append(asyncio.create_task(timed(
            session, children, at, "POST", f"{api}/scans/child", after=done[p],
            json={"parent_qr": parent_qr, "child_qr": f"BN{run}{j:06d}", "scan_id": uuid.uuid4().hex})))
    await asyncio.gather(*tasks)
    work.next_parent = (prefix, number + len(done))
    if number + len(done) >= 100_000:
        raise SystemExit(f"{prefix} parent numbers ran out during the run")


async def phase(api: str, token: str, work: Workload, name: str, run: str) -> list[Recorder]:
    """LOOKUP_RATE lookups/s (first-touch or repeated) alongside SCAN_RATE child scans/s for SECONDS."""
    connector = aiohttp.TCPConnector(limit=500, ttl_dns_cache=300)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        cold = name == "first touch"
        look = Recorder(f"GET /bags/{{qr}} {name}", LOOKUP_RATE)
        parents = Recorder("POST /scans/parent (new)", SCAN_RATE / work.capacity[work.next_parent[0]])
        children = Recorder("POST /scans/child (new)", SCAN_RATE)
        start = asyncio.get_running_loop().time() + 0.2
        for rec in (look, parents, children):
            rec.first = start
        pick = (lambda qrs, i: qrs[i]) if cold else (lambda qrs, i: random.choice(qrs))
        await asyncio.gather(lookups(session, api, work.cold if cold else work.warm, look, start, pick),
                             child_scans(session, api, work, run, parents, children, start))
        return [look, parents, children]


async def warm_up(api: str, token: str, qrs: list[str]) -> Counter:
    """Look every QR up once (10 at a time), so the next lookups of them are cache hits."""
    statuses: Counter = Counter()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        queue = list(qrs)

        async def worker():
            while queue:
                async with session.get(f"{api}/bags/{queue.pop()}", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    statuses[r.status] += 1

        await asyncio.gather(*(worker() for _ in range(10)))
    return statuses


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))] * 1000


def report_row(phase_name: str, rec: Recorder) -> str:
    ok = len(rec.latencies)
    span = max(rec.last - rec.first, SECONDS)
    non2xx = sum(v for k, v in rec.failures.items() if k.isdigit())
    return (f"{phase_name:<12} {rec.name:<34} {rec.rate:>6.1f} {rec.sent:>6} {ok:>6} {ok / span:>8.1f} "
            f"{pct(rec.latencies, 50):>7.1f} {pct(rec.latencies, 95):>7.1f} {pct(rec.latencies, 99):>7.1f} "
            f"{max(rec.latencies, default=float('nan')) * 1000:>7.1f} {non2xx:>7} {rec.failures['timeout']:>8} "
            f"{rec.failures['error'] + rec.failures['no parent']:>6} {rec.lag * 1000:>7.1f}")


def wrk_lookups(gateway: str, token: str, qrs: list[str], work_dir: Path) -> str:
    script, qr_file = work_dir / "lookups.lua", work_dir / "qrs.txt"
    script.write_text(LUA)
    qr_file.write_text("\n".join(qrs) + "\n")
    r = run_wrk(gateway + "/api/v1/bags/", connections=10, seconds=WRK_SECONDS, script=script,
                env={"BENCH_TOKEN": token, "BENCH_QRS": str(qr_file)})
    if r is None:
        return "wrk failed"
    return (f"{r['rps']:,.0f} req/s, p50 {r['p50']:.2f} ms, p95 {r['p95']:.2f} ms, p99 {r['p99']:.2f} ms, "
            f"max {r['max']:.2f} ms, non-2xx {r['non2xx']}, socket errors {r['errors']}")


def rss_mb(pid: int) -> str:
    try:
        line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS"))
        return f"{int(line.split()[1]) / 1024:.0f} MB"
    except (OSError, StopIteration):
        return "?"


# --- main ----------------------------------------------------------------------------------------------------

def explain() -> int:
    """EXPLAIN (ANALYZE, BUFFERS) of each query tests/scanning/test_scale.py checks, on the benchmark database."""
    from tests.scanning.test_scale import compile_sql, run_sql, sample_values, service_queries

    engine = create_engine(derive_database_url(PG, "scanning", ROOT / "var"), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            print(f"bags: {conn.execute(text('SELECT count(*) FROM bags')).scalar():,}")
        sample = sample_values(engine)
        for name, statement, _ in service_queries(sample):
            sql = compile_sql(statement)
            run_sql(engine, sql)  # once to warm the buffers, as a running service would have them
            plan = run_sql(engine, "EXPLAIN (ANALYZE, BUFFERS) " + sql)
            print(f"\n### {name}\n{sql}\n" + "\n".join(row[0] for row in plan))
    finally:
        engine.dispose()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of the service's queries")
    if parser.parse_args().explain:
        return explain()
    if not shutil.which("wrk"):
        print("wrk is not installed: run `make tools` (scripts/ensure-tools.sh)", file=sys.stderr)
        return 2
    if not (reachable(5432) and reachable(6379)):
        print("this benchmark needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379", file=sys.stderr)
        return 2
    work_dir = Path(tempfile.mkdtemp(prefix="bagtrack-bench-scanning-"))
    env = {"BAGTRACK_VAR_DIR": str(work_dir), "BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1],
           "DATABASE_URL": PG, "REDIS_URL": REDIS, "ACCESS_LOG": "false", "LOG_LEVEL": "WARNING"}
    stack = Stack(ports={name: free_port() for name in PORT_NAMES}, env=env, log_dir=work_dir / "log")
    scanning_url = derive_database_url(PG, "scanning", work_dir)
    rng = random.Random()
    run = uuid.uuid4().hex[:6].upper()
    try:
        stack.migrate()
        bag_count, seeded = ensure_seeded(scanning_url)  # before the services start: the seeder must write alone
        work = pick_workload(scanning_url, int(LOOKUP_RATE * SECONDS), rng)
        forget_cached(work.cold)
        stack.start()
        stack.wait_ready(timeout=60)
        api = stack.url() + "/api/v1"
        token = dispatcher_token(api)
        print(f"bagtrack scanning at scale — PostgreSQL {scanning_url.rsplit('/', 1)[1]} ({bag_count:,} bags, "
              f"{seeded}) + Redis {REDIS}; through the gateway on loopback; {os.cpu_count()} cores", flush=True)
        warm_statuses = asyncio.run(warm_up(api, token, work.warm))
        print(f"warmed {len(work.warm)} bags of {AREA} into the cache: {dict(warm_statuses)}")
        print(f"\nopen loop, {SECONDS:.0f} s per phase: {LOOKUP_RATE:.0f} lookups/s of {AREA} bags alongside "
              f"{SCAN_RATE:.0f} child scans/s into fresh parents (each parent scanned first); latency from the "
              f"scheduled send, {TIMEOUT:.0f} s = timeout")
        print(f"{'phase':<12} {'operation':<34} {'rate/s':>6} {'sent':>6} {'ok':>6} {'got/s':>8} {'p50 ms':>7} "
              f"{'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'non-2xx':>7} {'timeouts':>8} {'errors':>6} {'lag ms':>7}")
        failures: dict[str, str] = {}
        for name in ("first touch", "repeated"):
            for rec in asyncio.run(phase(api, token, work, name, run + ("A" if name == "first touch" else "B"))):
                print(report_row(name, rec), flush=True)
                failures.update({f"{rec.name} {k}": v for k, v in rec.examples.items()})
        for what, example in failures.items():
            print(f"  first failure of {what}: {example}")
        asyncio.run(warm_up(api, token, work.warm))
        print(f"\nclosed loop (for comparison only): wrk -t1 -c10 -d{WRK_SECONDS}s GET /bags/{{qr}} over the "
              f"{len(work.warm)} cached bags: {wrk_lookups(stack.url(), token, work.warm, work_dir)}")
        print(f"scanning service RSS after the run: {rss_mb(stack.procs['scanning'].pid)}; "
              f"gateway: {rss_mb(stack.procs['gateway'].pid)}")
        dead = stack.dead()
        if dead:
            print(f"processes that died: {dead}; logs in {work_dir / 'log'}")
            return 1
    finally:
        stack.stop()
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
