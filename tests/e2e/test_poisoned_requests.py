"""What one client sends cannot take a service away from everyone: the gateway's breakers open only on what
says an upstream is sick (connection errors, timeouts, 502/503/504 that name no dependency), never on answers
one client can provoke with its own requests (once, five refresh tokens holding a NUL byte opened auth's
breaker and every login answered 503 for 10 s)."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import ADMIN, bearer, login

pytestmark = pytest.mark.e2e

POISON = "ab\u0000cdefghijk.xyz"


def test_fifty_poisoned_requests_leave_every_service_reachable(stack, gw, admin_token):
    answers = set()
    for _ in range(50):
        answers.add(gw.post("/auth/refresh", json={"refresh_token": POISON}).status_code)
        answers.add(gw.post("/scans/parent", json={"qr_id": "SB77001", "scan_id": "nul\u0000id"},
                            headers=bearer(admin_token)).status_code)
    assert answers == {422}  # refused for what they are (once 500s), never by an open breaker
    assert login(gw, *ADMIN).status_code == 200
    assert gw.get("/auth/me", headers=bearer(admin_token)).status_code == 200
    assert gw.get("/bags", headers=bearer(admin_token)).status_code == 200
    upstreams = gw.get(stack.ops_url() + "/ready").json()["upstreams"]
    assert {name: state["breaker"] for name, state in upstreams.items()} == {name: "closed" for name in upstreams}
