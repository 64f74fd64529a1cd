"""What the gateway hop costs: req/s and p50/p95/p99 of /health, a cheap public route (GET /auth/jwks: the
pure cost of the hop) and an authenticated route (GET /auth/me: token check + a database read), direct to
the auth service vs through the gateway, in one run on this machine.

    make bench                         # PostgreSQL + Redis on loopback when reachable, else SQLite
    BENCH_SECONDS=10 BENCH_CONNECTIONS=10,50 .venv/bin/python bench/gateway_hop.py

Load: wrk (one thread) on the same 2-core box, closed loop with a fixed number of connections, bounded
by time. Run bench/limits/limits.sh in the same sitting and compare ratios, not absolute numbers.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import WRK_REPORT, reachable, run_wrk  # noqa: E402
from scripts.stack import PORT_NAMES, Stack  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "10,50").split(",")]
ADMIN = ("benchadmin", "B3nch!admin")
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/bagtrack_bench"

LUA = """
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
""" + WRK_REPORT


def wrk(url: str, connections: int, script: Path, token: str = "") -> dict:
    result = run_wrk(url, connections=connections, seconds=SECONDS, script=script, env={"BENCH_TOKEN": token})
    if result is None:
        raise RuntimeError(f"wrk gave no result for {url}")
    return result


def main() -> int:
    if not shutil.which("wrk"):
        print("wrk is not installed: run `make tools` (scripts/ensure-tools.sh)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bagtrack-bench-"))
    env = {"BAGTRACK_VAR_DIR": str(work), "BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1],
           "ACCESS_LOG": "false", "LOG_LEVEL": "WARNING"}
    if reachable(5432) and reachable(6379):
        env.update(DATABASE_URL=PG, REDIS_URL="redis://127.0.0.1:6379/13")
    storage = "PostgreSQL + Redis" if "DATABASE_URL" in env else "SQLite + in-process cache"
    ports = {name: 18400 + i for i, name in enumerate(PORT_NAMES)}
    stack = Stack(ports=ports, env=env, log_dir=work / "log")
    stack.migrate()
    stack.start()
    try:
        stack.wait_ready(timeout=60)
        token = httpx.post(stack.url() + "/api/v1/auth/login", json=dict(zip(("username", "password"), ADMIN)),
                           timeout=10).json()["access_token"]
        script = work / "bench.lua"
        script.write_text(LUA)
        auth, gateway = stack.url("auth"), stack.url("gateway")
        cases = [
            ("/health", "auth direct", auth + "/health", ""),
            ("/health", "gateway", gateway + "/health", ""),
            ("GET /auth/jwks (hop only)", "auth direct", auth + "/auth/jwks", ""),
            ("GET /auth/jwks (hop only)", "via gateway", gateway + "/api/v1/auth/jwks", ""),
            ("GET /auth/me (token + DB read)", "auth direct", auth + "/auth/me", token),
            ("GET /auth/me (token + DB read)", "via gateway", gateway + "/api/v1/auth/me", token),
        ]
        print(f"bagtrack gateway hop — {storage}; wrk -t1, {SECONDS}s per row, loopback, {os.cpu_count()} cores")
        print(f"{'route':<32} {'path':<12} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'non-2xx':>8} {'errors':>7}")
        for connections in CONNECTIONS:
            for route, path, url, bearer in cases:
                r = wrk(url, connections, script, bearer)
                print(f"{route:<32} {path:<12} {connections:>5} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p95']:>8.2f} "
                      f"{r['p99']:>8.2f} {r['max']:>8.2f} {r['non2xx']:>8} {r['errors']:>7}", flush=True)
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
