"""A `make up` fleet for the scale tests: real replicas behind the two real nginx processes, on PostgreSQL + Redis,
on a block of free loopback ports, with its own databases, Redis database and state directory."""
from __future__ import annotations

import os
import random
import socket
from contextlib import closing
from pathlib import Path

import pytest
import redis

from scripts.fleet import Fleet, Layout, nginx_binary, FleetError, parse_scale, plan
from tests.support import IN_CI, REDIS_URL, drop_pg_databases, pg_database_url, require_postgres, require_redis

ADMIN = ("fleetchief", "Fl33t!chief")
FLEET_REDIS_URL = REDIS_URL.rsplit("/", 1)[0] + "/13"
# The smoke in `make test` scales the two tiers that matter; `make test-scale` runs the long versions, every tier
# at 2 replicas.
LONG = os.environ.get("BAGTRACK_SCALE_LONG") == "1"


def require_nginx() -> None:
    try:
        nginx_binary()
    except FleetError as exc:
        if IN_CI:
            pytest.fail(f"{exc} (CI=true: the scale tests must run)")
        pytest.skip(str(exc))


def _free(port: int) -> bool:
    with closing(socket.socket()) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_block(size: int = 70) -> int:
    """A base port with `size` free ports from it (and one more for the edge, just below)."""
    # Below the kernel's ephemeral range: a port in it can be taken at any moment as the local end of some
    # outgoing connection, and a replica restarted onto its old port would then fail to bind.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    top = max(12000, min(60000, low) - size - 100)
    for _ in range(200):
        base = random.randrange(10000, top, 100)
        if all(_free(p) for p in range(base - 1, base + size)):
            return base
    raise RuntimeError("no block of free loopback ports")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    require_postgres()
    require_redis()
    require_nginx()
    prefix = f"bt_fleet_{os.getpid()}"
    client = redis.Redis.from_url(FLEET_REDIS_URL)
    for key in client.scan_iter(match="bagtrack:*"):
        client.delete(key)
    base = free_block()
    environ = {"DATABASE_URL": pg_database_url(prefix), "REDIS_URL": FLEET_REDIS_URL}
    state_dir: Path = tmp_path_factory.mktemp("fleet")
    # The smoke: the two busiest tiers at 2 (the others at 1, to start in time); the long run: make up's default.
    scale = parse_scale("" if LONG else "auth=1 billing=1 dashboard=1 gateway=2 scanning=2")
    if os.environ.get("BAGTRACK_SCALE_PGBOUNCER") == "1":  # make test-scale PGBOUNCER=1: the same tests behind it
        environ["PGBOUNCER"] = "1"
    running = plan(scale, environ, Layout(edge=base - 1, base=base), state_dir)
    running.env.update({"BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1],
                        "LOG_LEVEL": "INFO", "DASHBOARD_STREAM_HEARTBEAT": "1"})
    try:
        running.up()
        yield running
    finally:
        running.down(say=lambda _line: None)
        drop_pg_databases(prefix)
