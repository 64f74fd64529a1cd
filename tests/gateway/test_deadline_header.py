"""Only the gateway sets a request's budget (shared/deadline.py): a client's X-Request-Budget-Ms is dropped and the
upstream receives what is left of the gateway's own."""
from __future__ import annotations

import httpx


def test_the_gateway_drops_a_clients_budget_and_sends_its_own(start_gateway, auth):
    gateway = start_gateway(GATEWAY_REQUEST_BUDGET="4")
    echo = httpx.get(gateway.url + "/api/v1/bags/SB00001", headers={**auth, "X-Request-Budget-Ms": "999999"}).json()
    sent = [int(v) for k, v in echo["headers"] if k == "x-request-budget-ms"]
    assert len(sent) == 1 and 3000 < sent[0] <= 4000, sent
