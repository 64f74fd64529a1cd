"""A bounded fuzz over every route of every service, in-process on each backend, as each role: no input yields a 5xx.

Requests are built from each app's own OpenAPI document: in each case every path parameter, most query parameters
and every body field get a hostile value (NUL, lone surrogates, huge and negative numbers, wrong types, long
strings, traversal and SQL-looking text). Deterministic (a fixed seed per service), bounded per route;
`make test-fuzz` runs the same with many more cases.
"""
from __future__ import annotations

import json
import os
import random
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from services.auth.app import create_app as auth_app
from services.auth.config import Settings as AuthSettings
from services.billing.app import create_app as billing_app
from services.billing.config import Settings as BillingSettings
from services.dashboard.app import create_app as dashboard_app
from services.dashboard.config import Settings as DashboardSettings
from services.scanning.app import create_app as scanning_app
from services.scanning.config import Settings as ScanningSettings
from shared import migrate
from shared.migrate import ensure_database_exists
from tests.support import free_port
from tests.tokens import SigningKey

KEY = SigningKey.generate("fuzz")
ADMIN = ("fuzzadmin", "Fuzz!adm1n")
# Per route and role: 24 in the default suite (~10 s on both backends); `make test-fuzz` runs 400.
CASES_PER_ROUTE = int(os.environ.get("BAGTRACK_FUZZ_CASES", "24"))
HOSTILE = ["nul\u0000byte", "lone\ud800", "\udfff", "", " ", "x" * 5000, "../../etc/passwd", "%00", "' OR 1=1 --",
           "SB00001", "CH-0001", "😀" * 10, "\u202e", "-1", "0", "9" * 40, "null", "true", "{}", "[]"]
WRONG_TYPES = [None, True, -1, 0, 2**63, 1e308, [], {}, ["x"], {"a": "\u0000"}]
ROLES = {"admin": dict(sub="1", username="boss", role="admin", area=None),
         "biller": dict(sub="31", username="bina", role="biller", area=None),
         "dispatcher": dict(sub="11", username="jai", role="dispatcher", area="jaipur")}


def hostile_value(rng: random.Random, schema: dict):
    if rng.random() < 0.6 or schema.get("type") == "string":
        return rng.choice(HOSTILE)
    return rng.choice(WRONG_TYPES)


def body_for(rng: random.Random, schema: dict, components: dict) -> object:
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    properties = schema.get("properties") or {}
    if not properties:
        return hostile_value(rng, schema)
    return {name: hostile_value(rng, prop) for name, prop in properties.items()}


def requests_for(doc: dict, rng: random.Random):
    components = doc.get("components", {}).get("schemas", {})
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            params = op.get("parameters", [])
            body_schema = (op.get("requestBody", {}).get("content", {}).get("application/json", {}) or {}).get("schema")
            # An event stream opened with a caller's token never ends by itself (until the token expires): it is
            # always sent with (hostile) query values, i.e. a ticket, which ends it at once; the stream itself is
            # tested in tests/e2e/test_dashboard_live.py.
            stream = "text/event-stream" in op.get("responses", {}).get("200", {}).get("content", {})
            for _ in range(CASES_PER_ROUTE):
                url = path
                query = {}
                for param in params:
                    value = rng.choice(HOSTILE)
                    if param["in"] == "path":
                        url = url.replace("{" + param["name"] + "}", _quoted(value) or "x")
                    elif param["in"] == "query" and (stream or rng.random() < 0.7):
                        query[param["name"]] = value
                body = body_for(rng, body_schema, components) if body_schema else None
                yield method.upper(), url, query, body


def _quoted(value: str) -> str:
    # As a client would send it on the wire: UTF-8 (a lone surrogate as its raw three bytes), percent-encoded.
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def send(client: TestClient, method: str, url: str, query: dict, body, headers: dict):
    content = None if body is None else json.dumps(body, ensure_ascii=True).encode()
    if query:
        url += "?" + "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in query.items())
    return client.request(method, url, content=content,
                          headers={**headers, **({"content-type": "application/json"} if content else {})})


@pytest.fixture(scope="module")
def apps(backend, tmp_path_factory):
    var = tmp_path_factory.mktemp("fuzz")
    # Databases of their own ("<base>_fuzz_<service>"): the junk written here must not meet the other suites.
    shared_url = backend.database_url + "_fuzz" if backend.database_url else None
    common = dict(environment="test", var_dir=var, access_log=False, auth_url=f"http://127.0.0.1:{free_port()}",
                  shared_database_url=shared_url, redis_url=backend.redis_url)
    settings = {
        "auth": AuthSettings(**{**common, "argon2_time_cost": 1, "argon2_memory_kib": 1024,
                                "admin_username": ADMIN[0], "admin_password": ADMIN[1]}),
        "scanning": ScanningSettings(**common),
        "billing": BillingSettings(**common, scanning_url=f"http://127.0.0.1:{free_port()}"),  # nobody: 503s
        "dashboard": DashboardSettings(**common),
    }
    factories = {"auth": auth_app, "scanning": scanning_app, "billing": billing_app, "dashboard": dashboard_app}
    clients = {}
    for name, service_settings in settings.items():
        ensure_database_exists(service_settings.database_url)
        migrate.upgrade(name, service_settings.database_url)
        client = TestClient(factories[name](service_settings), raise_server_exceptions=False)
        client.__enter__()
        if name != "auth":
            client.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        clients[name] = client
    yield clients
    for client in clients.values():
        client.__exit__(None, None, None)


def tokens_for(name: str, client: TestClient) -> dict[str, dict]:
    if name == "auth":  # auth verifies only its own tokens: the bootstrap admin's, and no token at all
        login = client.post("/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        assert login.status_code == 200, login.text
        return {"admin": {"Authorization": f"Bearer {login.json()['access_token']}"}, "anonymous": {}}
    return {role: {"Authorization": f"Bearer {KEY.mint(**claims)}"} for role, claims in ROLES.items()} | {"anonymous": {}}


@pytest.mark.parametrize("name", ["auth", "scanning", "billing", "dashboard"])
def test_no_input_to_any_route_yields_a_5xx(apps, name):
    client = apps[name]
    doc = client.app.openapi()
    rng = random.Random(f"bagtrack-fuzz-{name}")
    failures = []
    for role, headers in tokens_for(name, client).items():
        for method, url, query, body in requests_for(doc, rng):
            response = send(client, method, url, query, body, headers)
            if response.status_code >= 500:
                failures.append(f"{role} {method} {url} {query} {str(body)[:200]} -> {response.status_code}")
    assert not failures, "\n".join(failures[:20])
