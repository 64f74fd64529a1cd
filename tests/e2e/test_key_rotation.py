"""A signing-key rotation on the running system, under authenticated traffic: not a single 401.

A stack of its own (short JWKS refetch interval and ring reload, so the rotation activates within seconds), rotated
by the real CLI against the stack's auth database while a thread keeps calling auth and scanning through the
gateway with every token issued so far: the gateway, auth and scanning each meet the new kid at activation.
"""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import jwt
import pytest
import redis

from scripts.stack import ROOT
from services.auth.keys import SigningKey
from tests.e2e.conftest import ADMIN, bearer, login, running_stack
from tests.support import wait_for

pytestmark = pytest.mark.e2e

ROTATION_REDIS_URL = "redis://127.0.0.1:6379/13"  # not the `stack` fixture's: its counters and cache are its own
ACTIVATE_IN = 3  # > JWKS_MIN_REFRESH (1) + ring reload (0.5) + JWKS max-age (0)


@pytest.fixture(scope="module")
def rotating_stack(backend):
    var_dir = Path(backend.var_dir) / "e2e-keys"
    env = {"BAGTRACK_VAR_DIR": str(var_dir), "BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1],
           "LOG_LEVEL": "INFO", "UPSTREAM_TIMEOUT": "5", "JWKS_MIN_REFRESH": "1", "AUTH_KEY_RING_RELOAD_SECONDS": "0.5"}
    if backend.database_url:
        env["DATABASE_URL"] = backend.database_url + "_e2ekeys"
        env["REDIS_URL"] = ROTATION_REDIS_URL
        client = redis.Redis.from_url(ROTATION_REDIS_URL)
        for key in client.scan_iter(match="bagtrack:*"):
            client.delete(key)
    with running_stack(env, var_dir, ready_timeout=60) as system:
        yield system


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


class Traffic:
    """Calls GET /auth/me and GET /bags through the gateway in a paced loop, with each token in `tokens`, recording
    every answer that is not a 200."""

    def __init__(self, base_url: str, tokens: list[str]) -> None:
        self.base_url, self.tokens = base_url, tokens
        self.failures: list[tuple] = []
        self.calls: dict[str, int] = {}  # kid: successful calls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self._stop.is_set():
                for token in list(self.tokens):
                    for path in ("/auth/me", "/bags?limit=1"):
                        response = client.get(path, headers=bearer(token))
                        if response.status_code == 200:
                            self.calls[kid_of(token)] = self.calls.get(kid_of(token), 0) + 1
                        else:
                            self.failures.append((path, kid_of(token), response.status_code, response.text[:300]))
                # Paced like a busy client (~40 requests/s per user), under the gateway's per-user read limit:
                # a loop with no pause is the runaway script the limit is for.
                self._stop.wait(0.05)

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_a_rotation_under_traffic_refuses_no_token(rotating_stack):
    stack = rotating_stack
    dev_key = SigningKey.from_pem((Path(stack.env["BAGTRACK_VAR_DIR"]) / "auth-signing-key.pem").read_bytes())
    with httpx.Client(base_url=stack.url() + "/api/v1", timeout=10) as gw:
        first = login(gw, *ADMIN).json()
        old_kid = kid_of(first["access_token"])
        assert old_kid == dev_key.kid  # the empty ring imported the configured (development) key
        tokens = [first["access_token"]]
        with Traffic(stack.url() + "/api/v1", tokens) as traffic:
            wait_for(lambda: traffic.calls.get(old_kid, 0) >= 10, timeout=10, what="traffic")
            rotation = subprocess.run(
                [sys.executable, "-m", "services.auth.cli", "rotate-key", "--activate-in", str(ACTIVATE_IN)],
                cwd=ROOT, env=stack.process_env(), capture_output=True, text=True, timeout=60)
            assert rotation.returncode == 0, rotation.stderr
            new_kid = rotation.stdout.split()[3].rstrip(":")
            wait_for(lambda: {k["kid"] for k in gw.get("/auth/jwks").json()["keys"]} == {old_kid, new_kid},
                  timeout=5, what="the next key in the JWKS")

            def new_token():
                response = login(gw, *ADMIN)
                assert response.status_code == 200, response.text
                token = response.json()["access_token"]
                tokens[1:] = [token]  # the loop uses each fresh token at once: the first new kid meets cold verifiers
                return token if kid_of(token) == new_kid else None

            new = wait_for(new_token, timeout=ACTIVATE_IN + 10, what="the new key to sign")
            wait_for(lambda: traffic.failures or traffic.calls.get(new_kid, 0) >= 20, timeout=10,
                  what="traffic with the new key")
            assert traffic.failures == []
            refreshed = gw.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
            assert refreshed.status_code == 200, refreshed.text
            assert kid_of(refreshed.json()["access_token"]) == new_kid
            for token in (first["access_token"], new, refreshed.json()["access_token"]):
                assert gw.get("/auth/me", headers=bearer(token)).status_code == 200
                assert gw.get("/bags?limit=1", headers=bearer(token)).status_code == 200
        assert traffic.failures == []
