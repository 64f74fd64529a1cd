"""The committed contracts (contracts/*.json) are what the code serves and keep the previous release's callers
working; and the checker's rules, each shown firing on a small pair of contracts (scripts/contracts.py)."""
from __future__ import annotations

import copy
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from scripts import contracts
from scripts.contracts import breaking_changes, check, drift, load_dir
from services.auth.keys import SigningKey
from services.auth.schemas import Jwks


@pytest.fixture(scope="module")
def code() -> dict:
    return contracts.generate()


# --- the committed contracts -------------------------------------------------------------------------------------

def test_committed_contracts_are_what_the_code_serves(code):
    problems = drift(code, load_dir(contracts.ROOT))
    assert not problems, "\n".join(problems) + "\n\nrun `make contracts` and commit contracts/"


def test_the_current_contracts_keep_the_previous_release_working():
    current = load_dir(contracts.ROOT)
    previous = load_dir(contracts.ROOT / "previous")
    assert previous, "contracts/previous/ holds the previous release's contracts (docs/contracts.md)"
    problems = [f"{name}: {line}" for name, contract in previous.items()
                for line in breaking_changes(contract, current.get(name, {"paths": {}}))]
    assert not problems, "\n".join(problems)


# Every call one service of this repo makes to another (services/billing/marks.py, services/dashboard/keys.py and
# stream.py, shared/security.py fetch_jwks): each must be under a contract, or a provider could break it unseen.
CALLS = [
    ("auth", "get", "/auth/jwks"),
    ("scanning", "put", "/internal/parents/{qr_id}/bill"),
    ("scanning", "delete", "/internal/parents/{qr_id}/bill"),
    ("scanning", "post", "/internal/parents/counts"),
    ("scanning", "get", "/internal/parents/marks"),
    ("scanning", "get", "/internal/stats"),
    ("scanning", "get", "/internal/trends"),
    ("scanning", "get", "/internal/scans"),
    ("scanning", "get", "/internal/bags/{qr_id}/lookup"),
    ("billing", "get", "/internal/bills/stats"),
    ("billing", "get", "/internal/bills/trends"),
    ("billing", "get", "/internal/bills/events"),
    ("billing", "get", "/internal/bills/lookup/{bill_id}"),
    ("billing", "get", "/internal/parents/{qr_id}/bill"),
]


@pytest.mark.parametrize("service, method, path", CALLS)
def test_every_call_between_services_is_under_a_contract(code, service, method, path):
    assert method in code[service]["paths"].get(path, {}), f"{method.upper()} {path} of {service}"


def test_the_public_routes_are_not_part_of_any_contract(code):
    """Only what services ask of each other: the public API goes through the gateway and its own review."""
    assert set(code) == {"auth", "scanning", "billing"}  # the dashboard serves nobody but the gateway
    assert list(code["auth"]["paths"]) == ["/auth/jwks"]
    assert all(path.startswith("/internal/") for name in ("scanning", "billing") for path in code[name]["paths"])


def test_published_keys_pass_the_jwks_model_unchanged():
    """The JWKS route now has a response model (so auth's contract comes from the code): what verifiers
    receive must be exactly what the key ring publishes."""
    published = {"keys": [SigningKey(Ed25519PrivateKey.generate()).public_jwk]}
    assert Jwks.model_validate(published).model_dump(mode="json") == published


def test_check_reports_drift_and_breaks_with_the_way_out(tmp_path, code):
    contracts.write(code, tmp_path)
    contracts.write(code, tmp_path / "previous")
    assert check(tmp_path, code) == []

    committed = json.loads((tmp_path / "scanning.json").read_text())
    del committed["paths"]["/internal/stats"]
    (tmp_path / "scanning.json").write_text(contracts.dump(committed))
    (tmp_path / "billing.json").unlink()
    problems = check(tmp_path, code)
    assert any(p.startswith("scanning: contracts/scanning.json differs from the code:")
               and '+    "/internal/stats": {' in p for p in problems), problems
    assert "billing: contracts/billing.json is missing" in problems
    assert "scanning: breaks the previous release: GET /internal/stats: removed" in problems
    assert any(p.startswith("billing: breaks the previous release: GET /internal/bills/stats: removed")
               for p in problems)


def test_the_command_line_check_passes_on_this_checkout(capsys):
    assert contracts.main(["check"]) == 0
    assert "contracts ok: auth, billing, scanning" in capsys.readouterr().out


# --- what a contract holds ---------------------------------------------------------------------------------------

def _demo_app(doc: str) -> FastAPI:
    class Owner(BaseModel):
        name: str = Field(description=f"who {doc}")

    class Thing(BaseModel):
        id: int
        owner: Owner
        hint: str | None = None  # has a default: still always answered

    router = APIRouter(prefix="/internal")

    @router.get("/things/{thing_id}", response_model=Thing, summary=doc)
    async def get_thing(thing_id: int):
        raise NotImplementedError

    app = FastAPI(title=doc)
    app.include_router(router)

    @app.get("/things", response_model=list[Thing])  # public: no contract
    async def list_things():
        raise NotImplementedError

    return app


def test_a_contract_is_the_shape_not_the_words():
    first = contracts.contract_of("demo", _demo_app("first wording"))
    assert contracts.dump(first) == contracts.dump(contracts.contract_of("demo", _demo_app("second wording")))
    assert list(first["paths"]) == ["/internal/things/{thing_id}"]
    text = contracts.dump(first)
    assert "$ref" not in text and "wording" not in text
    body = first["paths"]["/internal/things/{thing_id}"]["get"]["responses"]["200"]["application/json"]
    assert body["required"] == ["hint", "id", "owner"] and body["properties"]["owner"]["required"] == ["name"]


# --- the checker's rules, on a small contract --------------------------------------------------------------------

PATH = "/internal/things/{thing_id}"
WHERE = f"PUT {PATH}"
PROBLEM = {"type": "object", "properties": {"detail": {"type": "string"}}}


def _base() -> dict:
    body = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40},
        "count": {"type": "integer", "minimum": 1, "maximum": 100},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    }}
    answer = {"type": "object", "required": ["created", "id", "owner", "status", "tags"], "properties": {
        "id": {"type": "integer"},
        "status": {"type": "string", "enum": ["open", "closed"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "created": {"type": "string", "format": "date-time"},
        "owner": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "hint": {"anyOf": [{"type": "string"}, {"type": "null"}]},  # never promised
    }}
    operation = {
        "parameters": [
            {"in": "path", "name": "thing_id", "required": True, "schema": {"type": "string", "maxLength": 64}},
            {"in": "query", "name": "area", "required": False, "schema": {"anyOf": [
                {"type": "string", "maxLength": 64, "pattern": "^[a-z]+$"}, {"type": "null"}]}},
            {"in": "query", "name": "kind", "required": False, "schema": {"type": "string", "enum": ["a", "b"]}},
        ],
        "requestBody": {"required": True, "content": {"application/json": body}},
        "responses": {"200": {"application/json": answer}, "404": {"application/problem+json": PROBLEM}},
    }
    return {"service": "demo", "paths": {PATH: {"put": operation}}}


def _changed(change) -> list[str]:
    """What `breaking_changes` says of the base contract against a copy that `change` edited in place."""
    new = copy.deepcopy(_base())
    change(new["paths"][PATH]["put"], new["paths"])
    return breaking_changes(_base(), new)


def _param(op, name) -> dict:
    return next(p for p in op["parameters"] if p["name"] == name)


def _body(op) -> dict:
    return op["requestBody"]["content"]["application/json"]


def _answer(op) -> dict:
    return op["responses"]["200"]["application/json"]


BREAKING = {
    "route removed": (lambda op, paths: paths.pop(PATH), f"{WHERE}: removed"),
    "method removed": (lambda op, paths: paths[PATH].update(post=paths[PATH].pop("put")), f"{WHERE}: removed"),
    "parameter removed (or renamed)": (lambda op, paths: op["parameters"].remove(_param(op, "kind")),
                                       f"{WHERE} query parameter 'kind': removed"),
    "parameter newly required": (lambda op, paths: _param(op, "area").update(required=True),
                                 f"{WHERE} query parameter 'area': newly required"),
    "new required parameter": (lambda op, paths: op["parameters"].append(
        {"in": "query", "name": "color", "required": True, "schema": {"type": "string"}}),
        f"{WHERE} query parameter 'color': new and required"),
    "parameter type changed": (lambda op, paths: _param(op, "kind").update(schema={"type": "integer"}),
                               f"{WHERE} query parameter 'kind': type string became integer"),
    "parameter enum value removed": (lambda op, paths: _param(op, "kind")["schema"].update(enum=["a"]),
                                     f"{WHERE} query parameter 'kind': no longer accepts ['b']"),
    "parameter enum appears": (lambda op, paths: _param(op, "thing_id")["schema"].update(enum=["x"]),
                               f"{WHERE} path parameter 'thing_id': no longer accepts every value"),
    "parameter bound tightened": (lambda op, paths: _param(op, "thing_id")["schema"].update(maxLength=32),
                                  f"{WHERE} path parameter 'thing_id': maxLength 64 became 32"),
    "parameter pattern changed": (lambda op, paths: _param(op, "area")["schema"]["anyOf"][0].update(pattern="^a"),
                                  f"{WHERE} query parameter 'area': pattern '^[a-z]+$' became '^a'"),
    "parameter no longer nullable": (lambda op, paths: _param(op, "area").update(schema={"type": "string"}),
                                     f"{WHERE} query parameter 'area': type null | string became string"),
    "body field removed (or renamed)": (lambda op, paths: _body(op)["properties"].pop("note"),
                                        f"{WHERE} request body.note: removed"),
    "body field newly required": (lambda op, paths: _body(op)["required"].append("count"),
                                  f"{WHERE} request body.count: newly required"),
    "new required body field": (lambda op, paths: (_body(op)["properties"].update(color={"type": "string"}),
                                                   _body(op)["required"].append("color")),
                                f"{WHERE} request body.color: new and required"),
    "body field type changed": (lambda op, paths: _body(op)["properties"].update(count={"type": "string"}),
                                f"{WHERE} request body.count: type integer became string"),
    "nullable body field type changed": (
        lambda op, paths: _body(op)["properties"]["note"].update(anyOf=[{"type": "integer"}, {"type": "null"}]),
        f"{WHERE} request body.note: type null | string became integer | null"),
    "body field maximum lowered": (lambda op, paths: _body(op)["properties"]["count"].update(maximum=50),
                                   f"{WHERE} request body.count: maximum 100 became 50"),
    "body field minimum raised": (lambda op, paths: _body(op)["properties"]["name"].update(minLength=3),
                                  f"{WHERE} request body.name: minLength 1 became 3"),
    "body no longer read": (lambda op, paths: op.pop("requestBody"),
                            f"{WHERE} request body: no longer read (callers of the previous release send one)"),
    "body media type gone": (lambda op, paths: op["requestBody"].update(content={"text/csv": {}}),
                             f"{WHERE} request body: application/json no longer accepted"),
    "success status removed": (lambda op, paths: op["responses"].update({"201": op["responses"].pop("200")}),
                               f"{WHERE} response 200: removed (callers of the previous release expect it)"),
    "response field removed": (lambda op, paths: _answer(op)["properties"].pop("owner"),
                               f"{WHERE} response 200.owner: removed (the previous release always answered it)"),
    "response field no longer guaranteed": (lambda op, paths: _answer(op)["required"].remove("id"),
                                            f"{WHERE} response 200.id: no longer always answered"),
    "response field type changed": (lambda op, paths: _answer(op)["properties"].update(id={"type": "string"}),
                                    f"{WHERE} response 200.id: type integer became string"),
    "response field may now be null": (
        lambda op, paths: _answer(op)["properties"].update(id={"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        f"{WHERE} response 200.id: type integer became integer | null"),
    "response enum value added": (lambda op, paths: _answer(op)["properties"]["status"]["enum"].append("archived"),
                                  f"{WHERE} response 200.status: may now answer ['archived']"),
    "nested response field removed": (lambda op, paths: _answer(op)["properties"]["owner"]["properties"].clear(),
                                      f"{WHERE} response 200.owner.name: removed"),
    "response items type changed": (
        lambda op, paths: _answer(op)["properties"]["tags"].update(items={"type": "integer"}),
        f"{WHERE} response 200.tags[]: type string became integer"),
    "response format dropped": (lambda op, paths: _answer(op)["properties"]["created"].pop("format"),
                                f"{WHERE} response 200.created: format 'date-time' became None"),
    "response media type gone": (lambda op, paths: op["responses"].update({"200": {"text/csv": {}}}),
                                 f"{WHERE} response 200: no longer answers application/json"),
}


@pytest.mark.parametrize("change, expected", BREAKING.values(), ids=BREAKING.keys())
def test_each_breaking_rule_fires(change, expected):
    problems = _changed(change)
    assert any(p.startswith(expected) for p in problems), problems


ADDITIVE = {
    "new route": lambda op, paths: paths.update({"/internal/other": {"get": {"parameters": [], "responses": {}}}}),
    "new method": lambda op, paths: paths[PATH].update(get={"parameters": [], "responses": {}}),
    "new optional parameter": lambda op, paths: op["parameters"].append(
        {"in": "query", "name": "color", "required": False, "schema": {"type": "string"}}),
    "parameter no longer required": lambda op, paths: _param(op, "thing_id").update(required=False),
    "parameter enum value added": lambda op, paths: _param(op, "kind")["schema"]["enum"].append("c"),
    "parameter enum dropped": lambda op, paths: _param(op, "kind")["schema"].pop("enum"),
    "parameter bound loosened": lambda op, paths: _param(op, "thing_id")["schema"].update(maxLength=128),
    "parameter pattern dropped": lambda op, paths: _param(op, "area")["schema"]["anyOf"][0].pop("pattern"),
    "parameter made nullable": lambda op, paths: _param(op, "kind").update(
        schema={"anyOf": [{"type": "string", "enum": ["a", "b"]}, {"type": "null"}]}),
    "new optional body field": lambda op, paths: _body(op)["properties"].update(color={"type": "string"}),
    "body field no longer required": lambda op, paths: _body(op)["required"].clear(),
    "body field widened to number": lambda op, paths: _body(op)["properties"]["count"].update(type="number"),
    "body bounds loosened": lambda op, paths: _body(op)["properties"]["count"].update(minimum=0, maximum=1000),
    "body accepts unknown fields": lambda op, paths: _body(op).pop("additionalProperties"),
    "body no longer required": lambda op, paths: op["requestBody"].update(required=False),
    "new response field": lambda op, paths: _answer(op)["properties"].update(color={"type": "string"}),
    "response field never promised removed": lambda op, paths: _answer(op)["properties"].pop("hint"),
    "response enum value removed": lambda op, paths: _answer(op)["properties"]["status"].update(enum=["open"]),
    "response field no longer nullable": lambda op, paths: _answer(op)["properties"].update(hint={"type": "string"}),
    "new status code": lambda op, paths: op["responses"].update({"409": {"application/problem+json": PROBLEM}}),
    "error status no longer answered": lambda op, paths: op["responses"].pop("404"),
}


@pytest.mark.parametrize("change", ADDITIVE.values(), ids=ADDITIVE.keys())
def test_additive_changes_pass(change):
    assert _changed(change) == []


def test_a_stricter_body_breaks_callers_that_sent_more():
    """The one rule about the previous side: it accepted unknown fields, the current refuses them."""
    old = _base()
    _body(old["paths"][PATH]["put"]).pop("additionalProperties")
    assert breaking_changes(old, _base()) == [f"{WHERE} request body: no longer accepts fields it does not know"]


def test_a_body_that_appears_required_breaks_callers():
    old = _base()
    old["paths"][PATH]["put"].pop("requestBody")
    assert breaking_changes(old, _base()) == [f"{WHERE} request body: new and required"]


def test_a_parameter_widened_to_number_passes_and_narrowed_back_breaks():
    wide = _base()
    _param(wide["paths"][PATH]["put"], "thing_id")["schema"] = {"type": "number"}
    narrow = _base()
    _param(narrow["paths"][PATH]["put"], "thing_id")["schema"] = {"type": "integer"}
    assert breaking_changes(narrow, wide) == []
    assert breaking_changes(wide, narrow) == [f"{WHERE} path parameter 'thing_id': type number became integer"]
