"""The gateway's own endpoints: /health (both ports), /ready (degraded vs strict) and /metrics (the ops port only)."""
from __future__ import annotations

import time

import httpx


def test_health_answers_without_io(client):
    started = time.perf_counter()
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert time.perf_counter() - started < 1.0


def test_ready_reports_every_upstream_and_stays_200_when_degraded(ops):
    response = ops.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"  # billing points at a port with nothing listening
    assert set(body["upstreams"]) == {"auth", "scanning", "billing", "dashboard"}
    assert body["upstreams"]["scanning"] == {"ready": True, "detail": "ok", "breaker": "closed"}
    billing = body["upstreams"]["billing"]
    assert billing["ready"] is False and billing["detail"] and billing["breaker"] in ("closed", "open", "half-open")


def test_strict_ready_is_503_when_an_upstream_is_not_ready(ops):
    response = ops.get("/ready?strict=true")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert "retry-after" in response.headers


def test_strict_ready_is_200_when_every_upstream_is_ready(start_gateway, fake_upstream):
    gateway = start_gateway(BILLING_URL=fake_upstream.url)
    response = httpx.get(gateway.ops_url + "/ready?strict=true")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_metrics_use_route_templates_not_raw_ids(client, ops, auth):
    client.get("/api/v1/bags/SB99999", headers=auth)
    client.get("/api/v1/nowhere/QR77777", headers=auth)
    client.get("/health")
    text = ops.get("/metrics").text
    assert 'route="/api/v1/bags/{qr_id}"' in text
    assert 'route="/health"' in text and 'route="unmatched"' in text
    assert "SB99999" not in text and "QR77777" not in text
    assert 'bagtrack_circuit_breaker_open{service="gateway",upstream="billing"}' in text


def test_non_api_paths_get_problem_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def not_found(response) -> dict:
    """The problem document of a 404, with its request id checked."""
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["request_id"] == response.headers["x-request-id"]
    return {k: v for k, v in problem.items() if k != "request_id"}


def test_ready_and_metrics_are_404_on_the_public_port_like_any_unknown_route(client):
    unknown = not_found(client.get("/nope"))
    assert not_found(client.get("/ready")) == unknown
    assert not_found(client.get("/metrics")) == not_found(client.get("/ready?strict=true")) == unknown


def test_the_ops_port_serves_health_ready_and_metrics_only(ops):
    assert ops.get("/health").json() == {"status": "ok"}
    assert ops.get("/ready").status_code == 200
    assert "bagtrack_http_requests_total" in ops.get("/metrics").text
    for path in ("/docs", "/openapi.json", "/api/v1/auth/jwks", "/api/v1/bags", "/nope"):
        assert not_found(ops.get(path))["type"] == "urn:bagtrack:problem:not-found", path


def test_the_public_port_still_serves_health_docs_and_the_api(client, auth):
    assert client.get("/health").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/api/v1/bags", headers=auth).status_code == 200
