"""Auth's memory under login storms: base, peak and settled RSS of a real auth process.

    .venv/bin/python bench/auth_memory.py                      # SQLite under a temp dir, in-process cache
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bagtrack_bench REDIS_URL=redis://127.0.0.1:6379/13 \
        .venv/bin/python bench/auth_memory.py
    BENCH_LOGINS=60 BENCH_STORMS=2 .venv/bin/python bench/auth_memory.py

Each login is one argon2id verification with the production parameters (m=19 MiB, t=2, p=1), run in a worker
thread: what a storm costs is the hashing buffers, and whether the allocator gives them back afterwards. The
process is started the way scripts/stack.py starts it (uvicorn, uvloop, httptools, the same process env); its
RSS is read from /proc/<pid>/status: VmRSS now, VmHWM the peak since it started. "Settled" is VmRSS a couple
of seconds after a storm's last answer. The process is stopped at the end, whatever happened.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port  # noqa: E402
from scripts.stack import SERVICES, Stack  # noqa: E402

LOGINS = int(os.environ.get("BENCH_LOGINS", "60"))
STORMS = int(os.environ.get("BENCH_STORMS", "2"))
SETTLE_SECONDS = 2.0
ADMIN = ("memadmin", "M3mory!admin")


@dataclass(frozen=True)
class AuthProcess:
    pid: int
    url: str


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (resident peak since start) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # the kernel reports kB (KiB)
    return fields


@contextmanager
def auth_process(var_dir: Path, env: dict[str, str] | None = None) -> Iterator[AuthProcess]:
    """A real auth process on a free loopback port, migrated and ready, with ADMIN as its first admin; stopped
    on exit. Login rate limits are raised so that a storm measures hashing, not 429s."""
    ports = {name: free_port() for name in (*SERVICES, "gateway")}  # only auth is started
    stack = Stack(ports=ports, log_dir=var_dir / "log", env={
        "BAGTRACK_VAR_DIR": str(var_dir), "BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1],
        "AUTH_LOGIN_FAILURES_PER_CLIENT": "10000", "AUTH_LOGIN_LIMIT_PER_IP": "10000", **(env or {})})
    migrate = subprocess.run([sys.executable, "-m", "shared.migrate", "auth"], cwd=ROOT, env=stack.process_env(),
                             capture_output=True, text=True)
    if migrate.returncode != 0:
        raise RuntimeError(f"auth migration failed:\n{migrate.stdout}{migrate.stderr}")
    stack.start(names=("auth",))
    try:
        stack.wait_ready(timeout=60)
        yield AuthProcess(stack.procs["auth"].pid, stack.url("auth"))
    finally:
        stack.stop()


async def login_storm(url: str, logins: int = LOGINS) -> Counter:
    """`logins` logins of the admin at once (one connection each); how many got each status."""
    limits = httpx.Limits(max_connections=logins, max_keepalive_connections=logins)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def one() -> int:
            return (await client.post("/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})).status_code

        return Counter(await asyncio.gather(*(one() for _ in range(logins))))


def settled_rss(pid: int) -> float:
    """VmRSS once the storm's threads and buffers have had time to be released."""
    time.sleep(SETTLE_SECONDS)
    return memory_mib(pid)["VmRSS"]


def main() -> None:
    env = {name: os.environ[name] for name in ("DATABASE_URL", "REDIS_URL") if name in os.environ}
    with tempfile.TemporaryDirectory(prefix="bagtrack-auth-memory-") as tmp, auth_process(Path(tmp), env) as proc:
        print(f"auth pid {proc.pid} on {proc.url} ({'PostgreSQL' if env else 'SQLite'}); "
              f"{STORMS} storms of {LOGINS} concurrent logins", flush=True)
        print(f"base     VmRSS {memory_mib(proc.pid)['VmRSS']:6.1f} MiB", flush=True)
        for storm in range(1, STORMS + 1):
            started = time.monotonic()
            statuses = asyncio.run(login_storm(proc.url))
            took = time.monotonic() - started
            peak = memory_mib(proc.pid)["VmHWM"]
            print(f"storm {storm}  {dict(statuses)} in {took:.1f} s; peak VmHWM {peak:6.1f} MiB; "
                  f"settled VmRSS {settled_rss(proc.pid):6.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
