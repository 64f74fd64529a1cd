"""The gateway's own endpoints: /health, /ready (degraded vs strict), /metrics."""
from __future__ import annotations

import time

import httpx


def test_health_answers_without_io(client):
    started = time.perf_counter()
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert time.perf_counter() - started < 1.0


def test_ready_reports_every_upstream_and_stays_200_when_degraded(client):
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"  # billing points at a port with nothing listening
    assert set(body["upstreams"]) == {"auth", "scanning", "billing", "dashboard"}
    assert body["upstreams"]["scanning"] == {"ready": True, "detail": "ok", "breaker": "closed"}
    billing = body["upstreams"]["billing"]
    assert billing["ready"] is False and billing["detail"] and billing["breaker"] in ("closed", "open", "half-open")


def test_strict_ready_is_503_when_an_upstream_is_not_ready(client):
    response = client.get("/ready?strict=true")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert "retry-after" in response.headers


def test_strict_ready_is_200_when_every_upstream_is_ready(start_gateway, fake_upstream):
    gateway = start_gateway(BILLING_URL=fake_upstream.url)
    response = httpx.get(gateway.url + "/ready?strict=true")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_metrics_use_route_templates_not_raw_ids(client, auth):
    client.get("/api/v1/bags/SB99999", headers=auth)
    client.get("/api/v1/nowhere/QR77777", headers=auth)
    client.get("/health")
    text = client.get("/metrics").text
    assert 'route="/api/v1/bags/{qr_id}"' in text
    assert 'route="/health"' in text and 'route="unmatched"' in text
    assert "SB99999" not in text and "QR77777" not in text
    assert 'bagtrack_circuit_breaker_open{service="gateway",upstream="billing"}' in text


def test_non_api_paths_get_problem_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
