"""Client addresses through the real processes on loopback (scripts/stack.py, as `make run` starts them).

The gateway is the edge there and trusts nobody; each service trusts loopback 127.0.0.1, where the gateway
connects from. Linux routes all of 127/8 to lo, so a client can connect from 127.0.0.2, 127.0.0.3, ...: one
source address per test client. What the services believe is read off auth's per-IP login limit
(AUTH_LOGIN_LIMIT_PER_IP, small here): a budget is spent, or not, under the address auth resolved.
"""
from __future__ import annotations

import itertools
from typing import Iterator

import httpx
import pytest

from scripts.stack import Stack
from tests.e2e.conftest import running_stack

pytestmark = pytest.mark.e2e

LIMIT = 3  # login attempts per address and window (60 s)
_forged = (f"198.51.100.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """Its own system: SQLite and in-process counters (a fresh budget for every address), a small per-IP limit."""
    var_dir = tmp_path_factory.mktemp("client-address")
    env = {"BAGTRACK_VAR_DIR": str(var_dir), "DATABASE_URL": "", "REDIS_URL": "", "LOG_LEVEL": "WARNING",
           "AUTH_LOGIN_LIMIT_PER_IP": str(LIMIT)}
    with running_stack(env, var_dir, ready_timeout=25) as system:
        yield system


def login_from(stack: Stack, source: str, forwarded_for: str | None = None, *, via: str = "gateway") -> int:
    """The status of one failed login sent from local address `source`, to the gateway or straight to a service."""
    path = "/api/v1/auth/login" if via == "gateway" else "/auth/login"
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
        response = client.post(stack.url(via) + path, json={"username": "nobody", "password": "wrong"},
                               headers=headers)
    assert response.status_code in (401, 429), response.text
    return response.status_code


def spend_budget(stack: Stack, source: str, *, via: str = "gateway") -> None:
    """Use up `source`'s login budget, each attempt forging a different X-Forwarded-For (none may count)."""
    statuses = [login_from(stack, source, next(_forged), via=via) for _ in range(LIMIT)]
    assert statuses == [401] * LIMIT
    assert login_from(stack, source, next(_forged), via=via) == 429


def test_forging_x_forwarded_for_through_the_gateway_does_not_reset_a_clients_login_budget(stack):
    spend_budget(stack, "127.0.0.2")
    assert login_from(stack, "127.0.0.2") == 429


def test_two_clients_behind_one_gateway_have_separate_login_budgets(stack):
    spend_budget(stack, "127.0.0.3")
    assert login_from(stack, "127.0.0.4") == 401
    assert login_from(stack, "127.0.0.4", "127.0.0.3") == 401  # naming the spent one neither borrows nor spends it


def test_a_service_resolves_the_very_address_the_gateway_saw(stack):
    spend_budget(stack, "127.0.0.5")
    # The gateway's own hop (from 127.0.0.1, trusted by auth) naming 127.0.0.5 lands on that spent budget.
    assert login_from(stack, "127.0.0.1", "127.0.0.5", via="auth") == 429


def test_a_local_process_cannot_name_another_client_to_the_gateway(stack):
    """Under `make run` the gateway is the edge: even a peer on 127.0.0.1 is the client, whatever it forges."""
    spend_budget(stack, "127.0.0.1")


def test_a_service_contacted_directly_from_an_untrusted_address_ignores_forged_headers(stack):
    spend_budget(stack, "127.0.0.6", via="auth")
    assert login_from(stack, "127.0.0.7", "127.0.0.6", via="auth") == 401
