"""Routing, header handling, request ids, body limits and streaming through the gateway."""
from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest


def echoed_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.json()["headers"]}


@pytest.mark.parametrize("method, path, upstream_path", [
    ("GET", "/api/v1/auth/me", "/auth/me"),
    ("GET", "/api/v1/users", "/users"),
    ("GET", "/api/v1/users/42", "/users/42"),
    ("POST", "/api/v1/scans/parent", "/scans/parent"),
    ("GET", "/api/v1/bags/SB12345", "/bags/SB12345"),
    ("GET", "/api/v1/bags/export.csv", "/bags/export.csv"),
    ("DELETE", "/api/v1/bags/SB12345/children/C-001", "/bags/SB12345/children/C-001"),
])
def test_prefix_is_stripped(client, auth, method, path, upstream_path):
    response = client.request(method, path, headers=auth)
    assert response.status_code == 200
    assert response.json()["path"] == upstream_path


def test_query_string_is_kept(client, auth):
    query = "limit=50&cursor=abc%3D%3D&q=SB%2012&type=parent"
    response = client.get(f"/api/v1/bags?{query}", headers=auth)
    assert response.json()["query"] == query


def test_method_and_body_are_forwarded(client, auth):
    response = client.patch("/api/v1/users/3", headers=auth, json={"role": "biller"})
    echo = response.json()
    assert echo["method"] == "PATCH"
    assert echo["body"] == '{"role":"biller"}'
    assert echoed_headers(response)["content-type"] == "application/json"


@pytest.mark.parametrize("path", [
    "/api/v1/nothing/here", "/api/v1/usersx", "/api/v1/bags/%2e%2e/users", "/api/v2/bags",
    # not part of the public API (gateway.routes.PUBLIC_API): the area exists, the route does not
    "/api/v1/bags/SB12345/children", "/api/v1/bags/", "/api/v1/users/42/extra", "/api/v1/dashboard/nothing",
])
def test_unknown_area_is_404_problem(client, auth, path):
    response = client.get(path, headers=auth)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_request_id_is_generated_and_sent_both_ways(client, auth):
    response = client.get("/api/v1/bags", headers=auth)
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    assert echoed_headers(response)["x-request-id"] == request_id
    assert response.headers.get_list("x-request-id") == [request_id]  # the upstream's copy is not repeated


def test_callers_request_id_is_kept(client, auth):
    response = client.get("/api/v1/bags", headers={**auth, "X-Request-ID": "scanner-7.abc-123"})
    assert response.headers["x-request-id"] == "scanner-7.abc-123"
    assert echoed_headers(response)["x-request-id"] == "scanner-7.abc-123"


def test_insane_request_id_is_replaced(client, auth):
    response = client.get("/api/v1/bags", headers={**auth, "X-Request-ID": "no spaces allowed <here>"})
    assert response.headers["x-request-id"] != "no spaces allowed <here>"
    assert echoed_headers(response)["x-request-id"] == response.headers["x-request-id"]


def test_hop_by_hop_headers_are_stripped_both_ways(client, auth, fake_upstream):
    headers = {**auth, "Connection": "keep-alive, X-Hop-Secret", "X-Hop-Secret": "1", "Keep-Alive": "timeout=5",
               "TE": "trailers", "Proxy-Authorization": "Basic abc", "X-End-To-End": "kept"}
    response = client.get("/api/v1/bags", headers=headers)
    sent = echoed_headers(response)
    for name in ("connection", "x-hop-secret", "keep-alive", "te", "proxy-authorization"):
        assert name not in sent
    assert sent["x-end-to-end"] == "kept"
    assert sent["host"] == urlsplit(fake_upstream.url).netloc  # not the gateway's host
    assert response.headers["x-upstream"] == "fake"
    assert "proxy-authenticate" not in response.headers


def test_forwarded_headers_are_added(client, auth):
    sent = echoed_headers(client.get("/api/v1/bags", headers=auth))
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-proto"] == "http"


def test_a_forwarded_for_from_an_untrusted_peer_is_replaced_by_the_peer(client, auth):
    sent = echoed_headers(client.get("/api/v1/bags", headers={**auth, "X-Forwarded-For": "203.0.113.9"}))
    assert sent["x-forwarded-for"] == "127.0.0.1"


def test_a_trusted_proxy_names_the_client_and_the_gateway_passes_only_that_on(start_gateway, auth):
    gateway = start_gateway(GATEWAY_TRUSTED_PROXIES="127.0.0.1")
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        response = http.get("/api/v1/bags", headers={**auth, "X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
    assert echoed_headers(response)["x-forwarded-for"] == "203.0.113.9"


def test_body_at_the_limit_passes(client, auth):
    response = client.post("/api/v1/scans/parent", headers=auth, content=b"a" * 4096)
    assert response.status_code == 200
    assert response.json()["body_length"] == 4096


def test_chunked_body_within_the_limit_is_forwarded_whole(client, auth):
    response = client.post("/api/v1/scans/parent", headers=auth, content=iter([b"a" * 1000] * 3))
    assert response.json()["body_length"] == 3000


def test_oversize_content_length_is_413(client, auth):
    response = client.post("/api/v1/scans/parent", headers=auth, content=b"a" * 4097)
    assert response.status_code == 413
    assert response.json()["type"] == "urn:bagtrack:problem:payload-too-large"


def test_oversize_content_length_is_refused_before_the_body_is_sent(gateway, auth):
    # Declares 10 MB and sends none of it: the answer must come anyway, so the body was never awaited.
    host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"POST /api/v1/scans/parent HTTP/1.1\r\nHost: x\r\nAuthorization: {auth['Authorization']}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_oversize_chunked_body_is_413(client, auth):
    response = client.post("/api/v1/scans/parent", headers=auth, content=iter([b"a" * 1000] * 8))
    assert response.status_code == 413


def test_large_response_streams_through_whole(client, auth):
    size = 5 * 1024 * 1024 + 17
    received = 0
    with client.stream("GET", f"/api/v1/bags/big?size={size}", headers=auth) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        for chunk in response.iter_raw():
            received += len(chunk)
    assert received == size


def test_response_is_streamed_not_buffered(client, auth, fake_upstream):
    # The upstream holds its second chunk back until released; the first one must reach us before that.
    with client.stream("GET", "/api/v1/bags/drip", headers=auth) as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"first chunk\n"
        httpx.post(fake_upstream.url + "/control/release")
        assert b"".join(chunks) == b"second chunk\n"



@pytest.mark.parametrize("body, field, keyed", [
    (b'{"qr_id": "SB00001", "scan_id": "a1b2"}', "scan_id", True),
    (b'{"qr_id": "SB00001"}', "scan_id", False),
    (b'{"qr_id": "SB00001", "scan_id": null}', "scan_id", False),
    (b'{"qr_id": "SB00001", "scan_id": ""}', "scan_id", False),
    (b'{"qr_id": "scan_id"}', "scan_id", False),  # the name as a value is not a key
    (b'{"scan_id": "a1b2"', "scan_id", False),  # unparsable: the service answers it 422
    (b'["scan_id"]', "scan_id", False),
    (b'{"scan_id": "a1b2"}', None, False),  # a route without a body key
    (None, "scan_id", False),
])
def test_a_scan_carrying_its_scan_id_counts_as_keyed(body, field, keyed):
    from gateway.proxy import carries_key
    from gateway.routes import resolve

    assert carries_key(body, field) is keyed
    assert resolve("POST", "/scans/child").body_key == "scan_id"
    assert resolve("POST", "/bills").body_key is None
