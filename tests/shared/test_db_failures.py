"""Each kind of database failure answers its own 503 (PostgreSQL, a real app): a statement past its timeout, a
pool with no free connection. The dead database and the open breaker are in tests/scanning/test_database_down.py."""
from __future__ import annotations

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.scanning.config import Settings
from shared.app import create_service_app
from shared.migrate import ensure_database_exists
from tests.support import free_port

router = APIRouter()


@router.get("/sleep")
async def sleep(request: Request) -> dict:
    async with request.app.state.db.read() as conn:
        await conn.scalar(text("SELECT pg_sleep(2)"))
    return {"slept": True}


@pytest.fixture
def app_on_pg(backend, tmp_path):
    if backend.database_url is None:
        pytest.skip("statement timeouts and the pool are PostgreSQL's here")

    def start(**overrides) -> TestClient:
        settings = Settings(shared_database_url=backend.database_url, var_dir=tmp_path, access_log=False,
                            auth_url=f"http://127.0.0.1:{free_port()}", **overrides)
        if "database_url" not in overrides:
            ensure_database_exists(settings.database_url)
        return TestClient(create_service_app(settings, title="test", routers=[router]), raise_server_exceptions=False)

    return start


def test_a_statement_past_its_timeout_is_a_503_naming_the_database(app_on_pg):
    with app_on_pg(db_statement_timeout_ms=100) as client:
        response = client.get("/sleep")
        assert response.status_code == 503, response.text
        assert response.json()["type"].endswith("database-timeout")
        assert response.headers["Retry-After"] and response.headers["X-Dependency-Failure"] == "database"
        assert client.app.state.db.breaker.state == "closed"  # slow is not unreachable


def test_a_pool_with_no_free_connection_is_a_503_busy_without_blaming_a_dependency(app_on_pg):
    with app_on_pg(db_pool_size=1, db_pool_timeout=0.2) as client:
        held = client.portal.call(client.app.state.db.engine.raw_connection)
        try:
            response = client.get("/sleep")
        finally:
            client.portal.call(held.close)
        assert response.status_code == 503, response.text
        assert response.json()["type"].endswith("database-busy")
        assert response.headers["Retry-After"] == "1" and "X-Dependency-Failure" not in response.headers
        assert client.app.state.db.breaker.state == "closed"


def test_a_database_that_does_not_exist_is_a_503_not_a_500(app_on_pg, backend):
    with app_on_pg(database_url=backend.database_url.rsplit("/", 1)[0] + f"/nothing_here_{free_port()}") as client:
        response = client.get("/sleep")
        assert response.status_code == 503, response.text
        assert response.json()["type"].endswith("database-unavailable")
