"""Scanning with its database stopped or its pool saturated (PostgreSQL + Redis, real processes on loopback).

The database sits behind a TCP proxy the test stops and starts: a stopped database answers writes and uncached
reads with 503 + Retry-After in milliseconds (the database breaker), cached lookups keep answering, readiness
stays 200 ("degraded"), and everything comes back by itself when the database does.
"""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from services.scanning.app import create_app
from services.scanning.config import Settings
from shared import migrate
from tests.scanning.conftest import KEY, ScanApi
from tests.support import TcpProxy, free_port


@pytest.fixture
def behind_proxy(backend):
    if backend.database_url is None:
        pytest.skip("stopping the database is a PostgreSQL scenario (SQLite is a file in the process)")
    real = make_url(Settings(shared_database_url=backend.database_url).database_url)
    migrate.upgrade("scanning", real.render_as_string(hide_password=False))
    proxy = TcpProxy(real.host, real.port or 5432).start()

    def start(**overrides) -> TestClient:
        settings = Settings(environment="test", redis_url=backend.redis_url, var_dir=backend.var_dir,
                            access_log=False, auth_url=f"http://127.0.0.1:{free_port()}",
                            database_url=real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
                            **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        client.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        started.append(client)
        return client

    started: list[TestClient] = []
    yield proxy, start
    for client in started:
        client.__exit__(None, None, None)
    proxy.close()


def timed(call):
    began = time.perf_counter()
    response = call()
    return response, time.perf_counter() - began


def test_a_stopped_database_is_a_fast_503_while_cached_lookups_still_answer(behind_proxy):
    proxy, start = behind_proxy
    client = start(db_breaker_min_calls=3, db_breaker_reset_timeout=0.5)
    api = ScanApi(client)
    parent = f"SB{time.time_ns() % 100_000:05d}"
    assert api.parent(parent).status_code == 200
    client.portal.call(client.app.state.cache.clear)  # the scan's tombstone holds off refills for 2 s: skip that
    assert api.bag(parent).status_code == 200  # now cached

    proxy.stop()
    for attempt in range(5):
        response, elapsed = timed(lambda: api.child(parent, f"CH{attempt:06d}"))
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] and response.headers["X-Dependency-Failure"] == "database"
        assert elapsed < 0.5
    assert client.app.state.db.breaker.state == "open"
    response, elapsed = timed(lambda: api.bag("SB99999"))  # not cached: needs the database
    assert response.status_code == 503 and "circuit open" in response.json()["detail"] and elapsed < 0.1
    response, elapsed = timed(lambda: api.bag(parent))
    assert response.status_code == 200 and response.json()["qr_id"] == parent and elapsed < 0.5
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["database_breaker"] in ("open", "half-open")

    proxy.start()
    deadline = time.monotonic() + 10
    while (status := api.child(parent, "CH999999").status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.1)  # recovery: the breaker's probe after its 0.5 s reset timeout
    assert status == 200
    assert client.app.state.db.breaker.state == "closed"


def test_a_saturated_pool_leaves_the_replica_ready(behind_proxy):
    _, start = behind_proxy
    client = start(db_pool_size=1, db_pool_timeout=3, ready_timeout=1)
    engine = client.app.state.db.engine
    held = client.portal.call(engine.raw_connection)  # the pool's only connection, as a long request would
    try:
        response, elapsed = timed(lambda: client.get("/ready"))
        assert response.status_code == 200 and response.json()["status"] == "ready", response.text
        assert elapsed < 1
    finally:
        client.portal.call(held.close)
