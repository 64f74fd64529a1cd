"""Request deadlines (shared/deadline.py): a service stops work its caller has given up on — a statement past the
budget is cancelled in PostgreSQL itself, no connection is taken once it has run out — and only the gateway sets
the budget (a client's value is dropped: tests/gateway/test_deadline_header.py)."""
from __future__ import annotations

import time

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, pool, text

from services.scanning.config import Settings
from shared.app import create_service_app
from shared.migrate import ensure_database_exists
from tests.support import free_port

router = APIRouter()
SLEEP = "SELECT pg_sleep(:s) /* deadline-test */"


@router.get("/sleep")
async def sleep(request: Request, seconds: float = 2.0) -> dict:
    async with request.app.state.db.read() as conn:
        await conn.scalar(text(SLEEP), {"s": seconds})
    return {"slept": seconds}


@pytest.fixture
def service(backend, tmp_path):
    if backend.database_url is None:
        pytest.skip("statement cancellation is PostgreSQL's (the direct asyncpg path)")
    settings = Settings(shared_database_url=backend.database_url, var_dir=tmp_path, access_log=False,
                        auth_url=f"http://127.0.0.1:{free_port()}")
    ensure_database_exists(settings.database_url)
    with TestClient(create_service_app(settings, title="test", routers=[router]),
                    raise_server_exceptions=False) as client:
        yield client, settings.database_url


def _still_running(url: str) -> int:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%deadline-test%' "
                                     "AND state = 'active' AND pid <> pg_backend_pid()")).scalar()
    finally:
        engine.dispose()


def test_a_statement_past_the_budget_is_cancelled_in_postgresql(service):
    client, url = service
    started = time.perf_counter()
    response = client.get("/sleep", params={"seconds": 3}, headers={"X-Request-Budget-Ms": "300"})
    took = time.perf_counter() - started
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith("deadline-exceeded")
    assert took < 1.5, took  # the budget, not the 3 s statement
    time.sleep(0.2)
    assert _still_running(url) == 0  # cancelled in the server, not only abandoned by the client
    # The connection it ran on is fine for the next request.
    assert client.get("/sleep", params={"seconds": 0.01}).json() == {"slept": 0.01}


def test_a_spent_budget_takes_no_connection_and_no_budget_means_none(service):
    client, _ = service
    engine = client.app.state.db.engine.sync_engine
    checkouts = []

    def counted(*_args) -> None:
        checkouts.append(1)

    event.listen(engine, "checkout", counted)
    try:
        response = client.get("/sleep", params={"seconds": 0.01}, headers={"X-Request-Budget-Ms": "0"})
        assert response.status_code == 503 and response.json()["type"].endswith("deadline-exceeded")
        assert checkouts == []
        assert client.get("/sleep", params={"seconds": 0.01}).status_code == 200
        assert checkouts == [1]  # the counting works: a request with budget left does check out
    finally:
        event.remove(engine, "checkout", counted)
    assert client.get("/sleep", params={"seconds": 0.2}).status_code == 200  # no header: no deadline
    assert client.get("/sleep", params={"seconds": 0.01}, headers={"X-Request-Budget-Ms": "junk"}).status_code == 200
