"""Issue 8 at the gateway: header limits (431 / 401) before anything else, the token memo keyed by the token,
and only the public API's routes forwarded (and documented)."""
from __future__ import annotations

import asyncio
import socket
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.routes import PUBLIC_API, resolve
from shared.errors import ProblemError
from shared.security import TokenVerifier
from tests.tokens import AUDIENCE, ISSUER


def probes_seen(fake_upstream) -> list[str]:
    return httpx.get(fake_upstream.url + "/control/probes", timeout=5).json()


def assert_431(response) -> None:
    assert response.status_code == 431, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["connection"] == "close"
    problem = response.json()
    assert problem["type"] == "urn:bagtrack:problem:request-header-fields-too-large"
    assert problem["request_id"] == response.headers["x-request-id"]


def test_the_probe_header_reaches_the_fake_upstream(client, auth, fake_upstream):
    probe = uuid.uuid4().hex
    assert client.get("/api/v1/bags", headers={**auth, "X-Probe": probe}).status_code == 200
    assert probe in probes_seen(fake_upstream)  # so its absence below means something


@pytest.mark.parametrize("method, path", [("GET", "/api/v1/bags"), ("POST", "/api/v1/auth/login")],
                         ids=["token-route", "public-route"])
def test_a_9_kib_header_is_431_and_never_forwarded(client, auth, fake_upstream, method, path):
    probe = uuid.uuid4().hex
    response = client.request(method, path, headers={**auth, "X-Probe": probe, "X-Big": "a" * 9 * 1024})
    assert_431(response)
    assert probe not in probes_seen(fake_upstream)


def test_a_header_just_under_8_kib_passes(client, auth):
    value = "a" * (8 * 1024 - len("x-big"))
    response = client.get("/api/v1/bags", headers={**auth, "X-Big": value})
    assert response.status_code == 200
    assert dict(response.json()["headers"])["x-big"] == value


def test_40_kib_of_headers_in_total_is_431_and_never_forwarded(client, auth, fake_upstream):
    probe = uuid.uuid4().hex
    many = {f"X-Pad-{i}": "b" * 4000 for i in range(10)}  # each well under 8 KiB; ~40 KiB together
    response = client.get("/api/v1/bags", headers={**auth, "X-Probe": probe, **many})
    assert_431(response)
    assert probe not in probes_seen(fake_upstream)


def test_a_431_closes_the_connection(gateway, auth):
    host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"GET /api/v1/bags HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 9000}\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):  # the server closes: recv returns b"" instead of blocking
            received += chunk
    assert received.startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize("authorization", [
    pytest.param(lambda key: "Bearer" + " " * 5 * 1024 + key.mint(), id="valid-token-padded"),
    pytest.param(lambda key: "Bearer " + "a" * 5 * 1024, id="long-token"),
])
def test_an_authorization_of_5_kib_is_401(client, signing_key, fake_upstream, authorization):
    probe = uuid.uuid4().hex
    response = client.get("/api/v1/bags", headers={"Authorization": authorization(signing_key), "X-Probe": probe})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "urn:bagtrack:problem:unauthorized"
    assert probe not in probes_seen(fake_upstream)


def test_a_padded_bearer_under_the_limit_still_passes(client, signing_key):
    token = signing_key.mint()
    response = client.get("/api/v1/bags", headers={"Authorization": "Bearer" + " " * 3000 + token})
    assert response.status_code == 200


# -- the verifier's memo (in process: the memo is the verifier's own state) ---------------------------------------

def _verifier(signing_key) -> TokenVerifier:
    async def jwks():
        return {"keys": [signing_key.jwk()]}
    return TokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_source=jwks)


def test_the_memo_key_of_a_padded_bearer_header_is_the_token(signing_key):
    verifier = _verifier(signing_key)
    token = signing_key.mint()
    padded = "Bearer" + " " * 1_000_000 + token + " \t "
    principal = asyncio.run(verifier.authenticate(padded))
    assert list(verifier._memo) == [token]
    # The plain header is the same memo entry.
    assert asyncio.run(verifier.authenticate(f"Bearer {token}")) == principal
    assert list(verifier._memo) == [token]


def test_an_overlong_token_is_refused_before_the_memo_is_touched(signing_key):
    verifier = _verifier(signing_key)
    with pytest.raises(ProblemError) as refused:
        asyncio.run(verifier.authenticate("Bearer " + "a" * 5000))
    assert refused.value.status == 401
    assert verifier._memo == {}


# -- what is public ------------------------------------------------------------------------------------------------

def test_service_to_service_route_is_404_from_the_gateway(client, auth, fake_upstream):
    probe = uuid.uuid4().hex
    response = client.get("/api/v1/internal/parents/marks", headers={**auth, "X-Probe": probe})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:bagtrack:problem:not-found"
    assert probe not in probes_seen(fake_upstream)


def test_the_allow_list_has_no_service_to_service_route():
    assert not any(p.startswith("/internal/") for _, p, _ in PUBLIC_API)
    assert resolve("GET", "/internal/parents/marks") is None
    assert resolve("PUT", "/internal/parents/SB00001/bill") is None
    assert resolve("GET", "/bills/summary").template == "/api/v1/bills/summary"  # a literal wins
    assert resolve("GET", "/bills/BILL_1").template == "/api/v1/bills/{bill_id}"
    assert resolve("GET", "/bags/export.csv").template == "/api/v1/bags/export.csv"  # a literal wins
    assert resolve("GET", "/bags/SB00001").template == "/api/v1/bags/{qr_id}"
    assert resolve("PUT", "/bags/SB00001") is None
    assert resolve("GET", "/bags/SB1/children/C1") is None  # children are only DELETEd


def test_service_to_service_route_is_absent_from_openapi(start_gateway, fake_upstream):
    # Every upstream is the fake here; its document (fake_upstream.OPENAPI) lists a public route, a service-to-service one and a probe.
    gateway = start_gateway(BILLING_URL=fake_upstream.url)
    paths = httpx.get(gateway.url + "/openapi.json", timeout=10).json()["paths"]
    assert "/api/v1/internal/parents/marks" not in paths
    assert paths["/api/v1/bags/{qr_id}"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in paths["/api/v1/auth/login"]["post"]
    assert not any(path.endswith("/ready") for path in paths)


def test_a_request_body_that_stalls_is_cut_off_with_408(start_gateway, auth, fake_upstream):
    gateway = start_gateway(GATEWAY_BODY_STALL_TIMEOUT="0.5")
    host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall((f"POST /api/v1/scans/parent HTTP/1.1\r\nHost: x\r\nAuthorization: {auth['Authorization']}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + '{"qr_id": ').encode())
        received = b""
        while chunk := sock.recv(65536):  # the gateway answers and closes; the rest of the body never comes
            received += chunk
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"connection: close" in received.lower()


def rss_kib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_a_1_mb_header_is_431_before_it_is_read_whole_and_50_of_them_leave_the_memory_flat(gateway):
    """The gateway's protocol stops reading a header block at twice the total limit (gateway/server.py): a 1 MB
    header is never buffered whole, however many connections send one."""
    host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
    head = f"GET /api/v1/bags HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 1_000_000}\r\n\r\n".encode()

    def send_one() -> bytes:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(head)  # read (and dropped) after the answer, so the answer is never lost to a reset
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        return received

    for _ in range(5):  # warm up: the allocator's arenas, the metric children
        send_one()
    before = rss_kib(gateway.process.pid)
    answers = [send_one() for _ in range(50)]
    grown = rss_kib(gateway.process.pid) - before
    assert all(a.startswith(b"HTTP/1.1 431 ") and b"connection: close" in a.lower() for a in answers), answers[0][:300]
    assert b'"type": "urn:bagtrack:problem:request-header-fields-too-large"' in answers[0]
    assert grown < 4 * 1024, f"RSS grew by {grown} KiB over 50 1 MB headers"
