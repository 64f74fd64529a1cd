"""Which concurrency model for the write path: sync psycopg2 in a thread pool, or an async driver?

    .venv/bin/python bench/concurrency_model.py        (BENCH_SECONDS=5 BENCH_CONNECTIONS=50)

Runs `bench/concurrency_model_app.py` three ways — sync psycopg2 (threads sized to the pool), asyncpg and
psycopg 3 (async), all through SQLAlchemy — and drives a child scan at each with wrk (one thread, closed loop,
bounded in time): once as ONE statement in autocommit, once as a transaction of separate statements. Prints
req/s, p50/p99 and the server's CPU per request (from /proc), the figure that decides how many scans a core
carries. PostgreSQL on 127.0.0.1:5432 (database bagtrack_bench_model, recreated each run).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import WRK_REPORT, free_port  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DB = "bagtrack_bench_model"
LUA = """
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"parent":"SB%06d","child":"C%d-%d"}', math.random(1, 100000), math.random(1, 999999999), n)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
""" + WRK_REPORT


def reset_tables() -> None:
    admin = create_engine(SERVER, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DB}).scalar():
            conn.execute(text(f'CREATE DATABASE "{DB}"'))
    admin.dispose()
    engine = create_engine(make_url(SERVER).set(database=DB), poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(text("""
            DROP TABLE IF EXISTS bench_scans, bench_children, bench_parents;
            CREATE TABLE bench_parents (id serial PRIMARY KEY, qr text UNIQUE, child_count int NOT NULL DEFAULT 0,
                                        capacity int NOT NULL DEFAULT 30);
            CREATE TABLE bench_children (id serial PRIMARY KEY, qr text UNIQUE, parent_id int);
            CREATE TABLE bench_scans (id bigserial PRIMARY KEY, parent_qr text, child_qr text,
                                      at timestamptz DEFAULT now());
            INSERT INTO bench_parents (qr) SELECT 'SB' || lpad(g::text, 6, '0') FROM generate_series(1, 100000) g;
            ANALYZE bench_parents;"""))
    engine.dispose()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(model: str, route: str, script: Path) -> str:
    reset_tables()
    port = free_port()
    env = {**os.environ, "BENCH_MODEL": model, "BENCH_DB": f"postgresql://postgres@127.0.0.1:5432/{DB}",
           "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.concurrency_model_app:app", "--port", str(port),
                               "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
                              cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/{route}"
        for _ in range(100):
            try:
                httpx.post(url, json={"parent": "SB000001", "child": f"warm-{time.time()}"}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        before = cpu_seconds(server.pid)
        out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "5s", "-s", str(script),
                              url], capture_output=True, text=True, timeout=SECONDS + 30).stdout
        used = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(10)
    line = next((l for l in out.splitlines() if l.startswith("RESULT")), None)
    if line is None:
        return f"| {model} | /{route} | wrk printed no result |"
    reqs, micros, p50, _p95, p99, _worst, non2xx, errors = line.split()[1:]
    rps = int(reqs) / (int(micros) / 1e6)
    return (f"| {model} | /{route} | {rps:,.0f} | {float(p50):.1f} | {float(p99):.1f} | "
            f"{used / int(reqs) * 1000:.2f} | {int(non2xx) + int(errors)} |")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "scan.lua"
        script.write_text(LUA)
        print(f"child scan, wrk -t1 -c{CONNECTIONS} -d{SECONDS}s, PostgreSQL 127.0.0.1:5432, pool 20")
        print("| model | route | req/s | p50 ms | p99 ms | server CPU ms/req | errors |")
        print("|---|---|---|---|---|---|---|")
        for model in ("sync", "asyncpg", "psycopg"):
            for route in ("one", "many"):
                print(measure(model, route, script), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
