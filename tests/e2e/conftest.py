"""The whole system as real processes (migrations, four services, gateway) on loopback, per backend."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis

from scripts.stack import SERVICES, Stack
from tests.support import free_port

ADMIN = ("chief", "Ch1ef!admin")
E2E_REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture(scope="session")
def stack(backend):
    var_dir = Path(backend.var_dir) / "e2e"
    env = {"BAGTRACK_VAR_DIR": str(var_dir), "BAGTRACK_ADMIN_USERNAME": ADMIN[0],
           "BAGTRACK_ADMIN_PASSWORD": ADMIN[1], "LOG_LEVEL": "INFO", "UPSTREAM_TIMEOUT": "5"}
    if backend.database_url:
        env["DATABASE_URL"] = backend.database_url + "_e2e"
        env["REDIS_URL"] = E2E_REDIS_URL
        client = redis.Redis.from_url(E2E_REDIS_URL)
        for key in client.scan_iter(match="bagtrack:*"):
            client.delete(key)
    ports = {name: free_port() for name in (*SERVICES, "gateway")}
    system = Stack(ports=ports, env=env, log_dir=var_dir / "log")
    system.migrate()
    system.start()
    try:
        system.wait_ready(timeout=60)
        yield system
    finally:
        system.stop()


@pytest.fixture
def gw(stack):
    with httpx.Client(base_url=stack.url() + "/api/v1", timeout=10) as client:
        yield client
