"""Schemathesis over the gateway's merged OpenAPI document, through the real system, as each role: no 5xx.

The whole system runs as real processes (tests/e2e/conftest.running_stack) on PostgreSQL + Redis, in databases and a
Redis DB of its own. One admin (the bootstrap one), one biller and one dispatcher are created through the API and log
in once each (their tokens are reused, and refreshed when old, so the fuzz never trips the login limits on them); the
dispatcher scans a few parents and children first, and path and query parameters are sometimes swapped for those
codes and those users' ids, so lookups hit real rows as well as junk. Every operation of `<gateway>/openapi.json` is
then fuzzed (schemathesis: examples, coverage and fuzzing phases, valid and invalid data) once per role and once
without a token; any 5xx fails with the request and the traceback the stack logged for it.

Bounded by default (BAGTRACK_SCHEMATHESIS_EXAMPLES per operation, small); `make test-fuzz` sets it high. With CI=true
the run is derandomized (the same cases every run). A failing case is printed as a curl command; the stack's logs are
under the printed var dir.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.e2e.conftest import running_stack
from tests.support import IN_CI, drop_pg_databases, pg_database_url, require_postgres, require_redis

pytestmark = pytest.mark.e2e

# Not 14 (tests/e2e) nor 15 (the in-process suites): the counters and caches of this stack stay its own.
SCHEMA_REDIS_URL = "redis://127.0.0.1:6379/13"
EXAMPLES = int(os.environ.get("BAGTRACK_SCHEMATHESIS_EXAMPLES", "5"))
# For exploring, not asserted by default: BAGTRACK_SCHEMATHESIS_CHECKS=all makes every schemathesis check (status codes,
# content types, response schemas, negative data rejected, ...) fail the run too; a comma-separated list of check names
# (e.g. response_schema_conformance,negative_data_rejection) adds just those to not_a_server_error.
EXTRA_CHECKS = [name.strip() for name in os.environ.get("BAGTRACK_SCHEMATHESIS_CHECKS", "").split(",") if name.strip()]
TAG = uuid.uuid4().hex[:6]  # usernames the fuzz cannot guess, so it never counts wrong passwords against them
ADMIN = (f"fzadmin{TAG}", "Fz!adm1n-" + TAG)
PASSWORD = "Fz!sh1ft-" + TAG
AREA = "jaipur"
# Anonymous first and admin last: the admin's PATCH/DELETE /users may deactivate or remove the other accounts.
ROLES = ("anonymous", "dispatcher", "biller", "admin")
REFRESH_AFTER = 600.0  # seconds; access tokens live AUTH_ACCESS_TOKEN_TTL (3600 here)


class Tokens:
    """One login per account; refreshed (refresh token, else login) once older than REFRESH_AFTER."""

    def __init__(self, gateway: str, username: str, password: str) -> None:
        self.api = gateway + "/api/v1"
        self.username, self.password = username, password
        self._lock = threading.Lock()
        self._login()

    def _post(self, path: str, body: dict) -> httpx.Response:
        for _ in range(10):
            response = httpx.post(self.api + path, json=body, timeout=30)
            if response.status_code != 429:
                return response
            time.sleep(min(float(response.headers.get("retry-after", "1")), 10))
        return response

    def _login(self) -> None:
        response = self._post("/auth/login", {"username": self.username, "password": self.password})
        assert response.status_code == 200, f"login {self.username}: {response.status_code} {response.text}"
        self._take(response.json())

    def _take(self, pair: dict) -> None:
        self.access, self.refresh, self.obtained = pair["access_token"], pair["refresh_token"], time.monotonic()

    def headers(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self.obtained > REFRESH_AFTER:
                response = self._post("/auth/refresh", {"refresh_token": self.refresh})
                self._take(response.json()) if response.status_code == 200 else self._login()
            return {"Authorization": f"Bearer {self.access}"}


class System:
    """The running stack, its accounts and the rows seeded for the fuzz to find."""

    def __init__(self, stack, var_dir: Path) -> None:
        self.stack, self.var_dir, self.url = stack, var_dir, stack.url()
        self.api = self.url + "/api/v1"
        self.tokens: dict[str, Tokens] = {"admin": Tokens(self.url, *ADMIN)}
        self.user_ids: list[int] = [1]
        for role in ("biller", "dispatcher"):
            name = f"fz{role[:4]}{TAG}"
            body = {"username": name, "email": f"{name}@example.com", "password": PASSWORD, "role": role}
            if role == "dispatcher":
                body["dispatch_area"] = AREA
            created = httpx.post(self.api + "/users", json=body, headers=self.tokens["admin"].headers(), timeout=30)
            assert created.status_code == 201, created.text
            self.user_ids.append(created.json()["id"])
            self.tokens[role] = Tokens(self.url, name, PASSWORD)
        me = httpx.get(self.api + "/auth/me", headers=self.tokens["admin"].headers(), timeout=30)
        self.user_ids[0] = me.json()["id"]
        self.parents = ["SB00001", "SB00002", "M444-00001"]
        self.children = ["CB000001", "CB000002", "CB000003", "SB00002-C1"]
        self.seed()

    def seed(self) -> None:
        """Parents with children (idempotent: rerun before each role, since the fuzz deletes and unlinks)."""
        headers = self.tokens["dispatcher"].headers()
        with httpx.Client(base_url=self.api, headers=headers, timeout=30) as client:
            for parent in self.parents:
                response = client.post("/scans/parent", json={"qr_id": parent})
                assert response.status_code == 200, response.text
            for i, child in enumerate(self.children):
                parent = self.parents[i % 2]
                response = client.post("/scans/child", json={"parent_qr": parent, "child_qr": child})
                assert response.status_code in (200, 409), response.text

    def headers(self, role: str) -> dict[str, str]:
        return {} if role == "anonymous" else self.tokens[role].headers()

    def errors_for(self, request_id: str | None) -> str:
        """What every process logged at error level for one request id (JSON lines under var_dir/log)."""
        found = []
        for log in sorted((self.var_dir / "log").glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if request_id and request_id not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("request_id") == request_id and entry.get("level") in ("error", "critical"):
                    found.append(f"--- {log.name}: {entry.get('msg')}\n{entry.get('exc', '')}")
        return "\n".join(found) or f"(nothing logged at error level for request id {request_id}; see {self.var_dir}/log)"


@pytest.fixture(scope="module")
def fuzz_system(tmp_path_factory):
    require_postgres()
    require_redis()
    prefix = f"bt_test_{os.getpid()}_schema"
    var_dir = tmp_path_factory.mktemp("schemathesis")
    client = redis.Redis.from_url(SCHEMA_REDIS_URL)
    for key in client.scan_iter(match="bagtrack:*"):
        client.delete(key)
    env = {"BAGTRACK_VAR_DIR": str(var_dir), "DATABASE_URL": pg_database_url(prefix), "REDIS_URL": SCHEMA_REDIS_URL,
           "BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1], "LOG_LEVEL": "INFO",
           "UPSTREAM_TIMEOUT": "5", "AUTH_ACCESS_TOKEN_TTL": "3600",
           # Cheap hashes: the fuzz posts many logins and users; the hash cost is not what is under test here.
           "AUTH_ARGON2_TIME_COST": "1", "AUTH_ARGON2_MEMORY_KIB": "1024",
           # One user per role sends every case as fast as it can: the gateway's per-user limits would answer most
           # of them 429 and the handlers would go unfuzzed (the limits have their own tests).
           "GATEWAY_RATE_READ_BURST": "1000000", "GATEWAY_RATE_WRITE_BURST": "1000000",
           "GATEWAY_RATE_ANONYMOUS_BURST": "1000000"}
    try:
        with running_stack(env, var_dir, ready_timeout=90) as stack:
            yield System(stack, var_dir)
    finally:
        drop_pg_databases(prefix)


@pytest.fixture(scope="module", params=ROLES)
def role(request, fuzz_system):
    fuzz_system.seed()
    return request.param


def _real_values(system: System) -> dict[str, list]:
    codes = system.parents + system.children
    return {"qr_id": codes, "parent_qr": system.parents, "child_qr": system.children, "qr": codes,
            "user_id": system.user_ids, "dispatch_area": [AREA], "role": ["admin", "biller", "dispatcher"]}


def _sometimes_real(values: dict[str, list]):
    """A `map_case` hook: in about half of the valid cases, each known path or query parameter becomes a value that
    exists. Chosen from the case's own content, so a case replays the same; invalid cases are left as generated (a
    real code would make them valid)."""
    def map_case(context, case):
        if case.meta is not None and case.meta.generation.mode.is_negative:
            return case
        rng = random.Random(repr((case.path_parameters, case.query)))
        if rng.random() < 0.5:
            return case
        for name in ("path_parameters", "query"):
            parameters = getattr(case, name)
            if parameters and any(key in values for key in parameters):
                setattr(case, name, {key: rng.choice(values[key]) if key in values else value
                                     for key, value in parameters.items()})
        return case
    return map_case


@pytest.fixture(scope="module")
def api_schema(fuzz_system, role):
    schema = schemathesis.openapi.from_url(fuzz_system.url + "/openapi.json", timeout=30)
    schema.config.update(base_url=fuzz_system.url)
    schema.hook("map_case")(_sometimes_real(_real_values(fuzz_system)))
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


def _checks():
    if EXTRA_CHECKS == ["all"]:
        return None  # schemathesis's default: every check
    return [not_a_server_error, *(getattr(schemathesis.checks, name) for name in EXTRA_CHECKS)]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=IN_CI, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example, HealthCheck.function_scoped_fixture])
@schema.parametrize()
def test_no_request_through_the_gateway_yields_a_5xx(case, role, fuzz_system):
    request_id = f"fz-{role}-{uuid.uuid4().hex}"
    headers = {**fuzz_system.headers(role), "X-Request-ID": request_id}
    if case.path == "/api/v1/dashboard/stream" and not (case.query or {}).get("ticket"):
        # Opened with the role's token, the event stream would run until the token expires: a (made-up) ticket
        # ends it at once. The stream itself is tested in tests/e2e/test_dashboard_live.py.
        case.query = {**(case.query or {}), "ticket": "fuzz-made-up-ticket"}
    response = case.call(headers=headers, timeout=30)
    if response.status_code >= 500:
        pytest.fail(f"{role}: {case.method} {case.formatted_path} -> {response.status_code}\n"
                    f"{case.as_curl_command(headers=headers)}\nresponse: {response.text[:500]}\n"
                    f"logged:\n{fuzz_system.errors_for(request_id)}")
    case.validate_response(response, checks=_checks(), headers=headers,
                           transport_kwargs={"base_url": fuzz_system.url, "headers": headers, "timeout": 30})
