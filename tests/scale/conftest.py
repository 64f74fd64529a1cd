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
# The smoke in `make test` scales the two tiers that matter; `make test-scale` runs the long versions.
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
    for _ in range(200):
        base = random.randrange(20000, 60000, 100)
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
    running = plan(parse_scale("gateway=2 scanning=2"), environ, Layout(edge=base - 1, base=base), state_dir)
    running.env.update({"BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1],
                        "LOG_LEVEL": "INFO", "DASHBOARD_STREAM_HEARTBEAT": "1"})
    try:
        running.up()
        yield running
    finally:
        running.down(say=lambda _line: None)
        drop_pg_databases(prefix)
