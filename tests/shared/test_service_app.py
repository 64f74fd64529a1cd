"""create_service_app(): the defaults every service gets, checked on a real app with a throw-away route."""
from __future__ import annotations

import json
import logging

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from services.scanning.config import Settings
from shared.app import create_service_app
from shared.errors import Conflict
from shared.logging import JsonFormatter, request_id_var
from tests.support import free_port

router = APIRouter()


@router.get("/things/{thing_id}")
async def get_thing(thing_id: int) -> dict:
    if thing_id == 409:
        raise Conflict("thing 409 is taken", other="x")
    if thing_id == 500:
        raise RuntimeError("boom")
    return {"id": thing_id}


def make_app(tmp_path, **overrides):
    settings = Settings(**{"var_dir": tmp_path, "database_url": f"sqlite:///{tmp_path}/s.db", **overrides})
    return create_service_app(settings, title="test", routers=[router])


@pytest.fixture
def client(tmp_path):
    with TestClient(make_app(tmp_path), raise_server_exceptions=False) as c:
        yield c


def test_health_does_no_io_and_ready_pings_the_database(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready == {"status": "ready", "checks": {"database": "ok", "cache": "ok"}, "database_breaker": "closed"}


def test_a_dead_database_is_degraded_not_unready_and_503_only_when_strict(tmp_path):
    dead = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing"
    with TestClient(make_app(tmp_path, database_url=dead)) as c:
        assert c.get("/health").status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["database"].startswith("error")
        strict = c.get("/ready?strict=true")
        assert strict.status_code == 503 and strict.headers["Retry-After"]


def test_a_dead_redis_is_reported_but_does_not_make_the_service_unready(tmp_path):
    with TestClient(make_app(tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")) as c:
        ready = c.get("/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["cache"].startswith("error")


def test_errors_are_problem_documents_with_the_request_id(client):
    for path, status in (("/things/409", 409), ("/things/abc", 422), ("/nowhere", 404), ("/things/500", 500)):
        response = client.get(path, headers={"X-Request-ID": "req-123"})
        body = response.json()
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert body["status"] == status and body["request_id"] == "req-123" and body["type"] and body["title"]
    assert client.get("/things/409").json()["other"] == "x"


def test_request_id_is_generated_when_missing_or_insane(client):
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32
    insane = client.get("/health", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert insane != "bad id with spaces"


def test_metrics_are_labelled_by_route_template_not_raw_path(client):
    for i in (1, 2, 3):
        client.get(f"/things/{i}")
    text = client.get("/metrics").text
    assert 'route="/things/{thing_id}"' in text
    assert 'route="/things/1"' not in text


def test_log_lines_are_json_with_the_request_id():
    record = logging.LogRecord("bagtrack.test", logging.INFO, __file__, 1, "scanned %s", ("SB00001",), None)
    token = request_id_var.set("req-77")
    try:
        line = json.loads(JsonFormatter("scanning").format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "scanned SB00001" and line["request_id"] == "req-77" and line["service"] == "scanning"


def test_readiness_answers_draining_once_a_stop_began(client):
    """shared.drain: SIGTERM (DrainingServer.shutdown) flips readiness before uvicorn waits for what is in flight,
    so a balancer that still probes stops sending; hooks run once."""
    from shared import drain

    ran = []
    forget = drain.on_drain(lambda: ran.append(1))
    try:
        assert client.get("/ready").status_code == 200
        drain.begin()
        drain.begin()
        response = client.get("/ready")
        assert response.status_code == 503 and response.json() == {"status": "draining"}
        assert response.headers["retry-after"] == "2"
        assert client.get("/health").status_code == 200  # liveness: the process is fine, just leaving
        assert ran == [1]
    finally:
        forget()
        drain.reset()
