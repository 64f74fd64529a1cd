"""The whole system as real processes (migrations, four services, gateway) on loopback, per backend."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import uuid

import httpx
import pytest
import redis

from scripts.stack import PORT_NAMES, Stack
from tests.support import free_port

ADMIN = ("chief", "Ch1ef!admin")
PASSWORD = "Sh1ft!work"
E2E_REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture(scope="session")
def stack(backend):
    var_dir = Path(backend.var_dir) / "e2e"
    env = {"BAGTRACK_VAR_DIR": str(var_dir), "BAGTRACK_ADMIN_USERNAME": ADMIN[0],
           "BAGTRACK_ADMIN_PASSWORD": ADMIN[1], "LOG_LEVEL": "INFO", "UPSTREAM_TIMEOUT": "5",
           "AUTH_REFRESH_REUSE_LEEWAY": "1",  # a retried refresh within 1 s is a retry, after it a reuse
           "DASHBOARD_STREAM_HEARTBEAT": "1",  # tests/e2e/test_dashboard_live.py sees heartbeats without waiting 10 s
           "AUTH_LOCKOUT_THRESHOLD": "3"}  # test_web_browser.py locks an account (below the 5 per client) to unlock it
    if backend.database_url:
        env["DATABASE_URL"] = backend.database_url + "_e2e"
        env["REDIS_URL"] = E2E_REDIS_URL
        client = redis.Redis.from_url(E2E_REDIS_URL)
        for key in client.scan_iter(match="bagtrack:*"):
            client.delete(key)
    with running_stack(env, var_dir, ready_timeout=60) as system:
        yield system


@contextmanager
def running_stack(env: dict[str, str], var_dir: Path, *, ready_timeout: float) -> Iterator[Stack]:
    """The whole system as `make run` starts it, on free ports with `env`, migrated and ready; stopped after."""
    system = Stack(ports={name: free_port() for name in PORT_NAMES}, env=env, log_dir=var_dir / "log")
    system.migrate()
    system.start()
    try:
        system.wait_ready(timeout=ready_timeout)
        yield system
    finally:
        system.stop()


@pytest.fixture
def gw(stack):
    with httpx.Client(base_url=stack.url() + "/api/v1", timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def gw_session(stack):
    """A client for module-scoped set-up (users, tokens)."""
    with httpx.Client(base_url=stack.url() + "/api/v1", timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(gw, username, password=PASSWORD) -> httpx.Response:
    return gw.post("/auth/login", json={"username": username, "password": password})


def new_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def admin_token(stack):
    with httpx.Client(base_url=stack.url() + "/api/v1") as client:
        response = login(client, *ADMIN)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def create(gw, admin_token, role, area=None) -> dict:
    name = new_name(role[:4])
    body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD, "role": role}
    if area:
        body["dispatch_area"] = area
    response = gw.post("/users", json=body, headers=bearer(admin_token))
    assert response.status_code == 201, response.text
    return response.json()


