"""What one service asks of another, committed: every /internal route and auth's JWKS (docs/contracts.md).

    python -m scripts.contracts write   # contracts/<service>.json from the code (make contracts)
    python -m scripts.contracts check   # exit 1 on drift, or when the current contract breaks the previous one

Services deploy one at a time, so for a while a service runs one release ahead of its callers (or behind them).
A caller written against the previous release must keep working: contracts/previous/<service>.json is the
contract that release served, and `check` refuses a current contract that breaks it (the rules are in
`breaking_changes`). The pytest suite runs the same checks (tests/contracts/test_contracts.py), so CI fails on
either.

A contract is a normalised subset of the service's own OpenAPI document: for each route, its parameters, request
body and responses by status code, schemas with every $ref inlined and documentation (titles, descriptions)
dropped, keys sorted. A docstring edit is not a contract change; a type, a field or a status code is.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from shared.topology import SERVICES

ROOT = Path(__file__).resolve().parent.parent / "contracts"
INTERNAL_PREFIX = "/internal/"
# Public routes that other services call too: every verifier (the gateway's, each service's) reads auth's keys.
CALLED_PUBLIC_ROUTES = {"auth": ("/auth/jwks",)}
METHODS = ("get", "put", "post", "delete", "patch")
# Words for the reader, not the machine: changing them changes no caller's outcome.
DOC_KEYS = frozenset({"title", "description", "summary", "operationId", "tags", "example", "examples"})
SUBSCHEMA_KEYWORDS = ("items", "additionalProperties", "not")
SUBSCHEMA_LIST_KEYWORDS = ("anyOf", "oneOf", "allOf", "prefixItems")
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
EXACT_KEYWORDS = ("pattern", "format")  # no cheap way to tell a wider pattern from a narrower one: any change counts

Contract = dict[str, Any]


# --- building contracts from the code ----------------------------------------------------------------------------

def is_contract_route(service: str, path: str) -> bool:
    return path.startswith(INTERNAL_PREFIX) or path in CALLED_PUBLIC_ROUTES.get(service, ())


def build(service: str) -> Contract:
    """The service's contract, from the app its own factory builds (nothing connects: apps open their database
    and clients only in the lifespan)."""
    return contract_of(service, importlib.import_module(f"services.{service}.app").create_app())


def contract_of(service: str, app: FastAPI) -> Contract:
    """The contract routes of `app`, from its OpenAPI document."""
    document = app.openapi()
    components = document.get("components", {}).get("schemas", {})
    paths = {path: {method: _operation(operation, components) for method, operation in operations.items()
                    if method in METHODS}
             for path, operations in document["paths"].items() if is_contract_route(service, path)}
    return {"service": service, "paths": paths}


def generate() -> dict[str, Contract]:
    """Every provider's contract, by service: those with no route another service calls have none."""
    contracts = {name: build(name) for name in SERVICES}
    return {name: contract for name, contract in contracts.items() if contract["paths"]}


def _operation(operation: dict, components: dict) -> dict:
    parameters = sorted(({"in": p["in"], "name": p["name"], "required": p.get("required", False),
                          "schema": _inline(p.get("schema", {}), components)}
                         for p in operation.get("parameters", [])), key=lambda p: (p["in"], p["name"]))
    out: dict[str, Any] = {
        "parameters": parameters,
        "responses": {status: {media: _answered_whole(schema) if status.startswith("2") else schema
                               for media, schema in _content(response, components).items()}
                      for status, response in operation.get("responses", {}).items()},
    }
    if "requestBody" in operation:
        body = operation["requestBody"]
        out["requestBody"] = {"required": body.get("required", False), "content": _content(body, components)}
    return out


def _content(entry: dict, components: dict) -> dict:
    """{media type: schema} of a request body or a response (a 204's is empty)."""
    return {media: _inline(spec.get("schema", {}), components) for media, spec in entry.get("content", {}).items()}


def _answered_whole(schema: Any) -> Any:
    """A success body with every field of every object required. Pydantic's schema lists a field with a default
    as optional, but success bodies are serialised whole (shared.deps.json_response: model_dump_json(); FastAPI's
    response_model likewise): the field is always there, callers may rely on it, and removing it must count."""
    if not isinstance(schema, dict):
        return schema
    out = {key: _answered_whole(value) if key in ("items", "additionalProperties") else value
           for key, value in schema.items()}
    for key in ("anyOf", "oneOf"):
        if key in schema:
            out[key] = [_answered_whole(branch) for branch in schema[key]]
    if "properties" in schema:
        out["properties"] = {name: _answered_whole(sub) for name, sub in schema["properties"].items()}
        out["required"] = sorted(schema["properties"])
    return out


def _inline(schema: Any, components: dict, seen: tuple[str, ...] = ()) -> Any:
    """The schema with each $ref replaced by its component and DOC_KEYS dropped. A model that contains itself
    cannot be inlined; none does, and one that did would stop `write` here rather than loop."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            raise ValueError(f"schema {name} refers to itself; contracts inline every $ref")
        out.update(_inline(components[name], components, seen + (name,)))
    for key, value in schema.items():
        if key == "$ref" or key in DOC_KEYS:
            continue
        if key == "properties":  # its keys are field names, never keywords
            out[key] = {field: _inline(sub, components, seen) for field, sub in value.items()}
        elif key in SUBSCHEMA_KEYWORDS and isinstance(value, dict):
            out[key] = _inline(value, components, seen)
        elif key in SUBSCHEMA_LIST_KEYWORDS:
            out[key] = [_inline(sub, components, seen) for sub in value]
        elif key == "required":  # a set: the model's field order is not part of the contract
            out[key] = sorted(value)
        else:  # values (enum, const, default, bounds): as they are
            out[key] = value
    return out


def dump(contract: Contract) -> str:
    return json.dumps(contract, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load_dir(folder: Path) -> dict[str, Contract]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def write(contracts: dict[str, Contract], folder: Path = ROOT) -> list[Path]:
    """Write each contract and delete the file of a service that no longer has one."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in set(load_dir(folder)) - set(contracts):
        (folder / f"{stale}.json").unlink()
    written = []
    for name, contract in contracts.items():
        path = folder / f"{name}.json"
        path.write_text(dump(contract))
        written.append(path)
    return written


# --- checks ------------------------------------------------------------------------------------------------------

def drift(code: dict[str, Contract], committed: dict[str, Contract]) -> list[str]:
    """Where the committed contracts are not what the code serves: a route changed without `make contracts`."""
    problems = []
    for name in sorted(set(code) | set(committed)):
        if name not in committed:
            problems.append(f"{name}: contracts/{name}.json is missing")
        elif name not in code:
            problems.append(f"{name}: contracts/{name}.json is committed but {name} serves no contract route now")
        elif dump(code[name]) != dump(committed[name]):
            diff = difflib.unified_diff(dump(committed[name]).splitlines(), dump(code[name]).splitlines(),
                                        f"contracts/{name}.json (committed)", f"{name} (the code)", lineterm="", n=2)
            lines = list(diff)
            shown = "\n".join(lines[:60]) + (f"\n... {len(lines) - 60} more lines" if len(lines) > 60 else "")
            problems.append(f"{name}: contracts/{name}.json differs from the code:\n{shown}")
    return problems


def breaking_changes(previous: Contract, current: Contract) -> list[str]:
    """What a caller written against `previous` would find broken in `current` (empty: compatible).

    Breaking, for a route of `previous`:
    - the path or method is gone (no route matches what the caller sends);
    - a parameter is gone (the caller still sends it; renaming one is removing it), or is newly required, or a
      new required one appears (the caller does not send it);
    - the request body is gone, newly required, or its schema accepts less (see `schema_breaks`, request side);
    - a success (2xx) status code is gone (the caller waits for it); an error status that is gone is no loss;
    - a response body of a status still answered may hold what the previous one never did (response side).
    Not breaking: a new route, a new optional parameter or body field, a new response field, a new status code
    (callers ignore what they do not know: docs/contracts.md).
    """
    problems = []
    for path, methods in previous["paths"].items():
        for method, old in methods.items():
            where = f"{method.upper()} {path}"
            new = current["paths"].get(path, {}).get(method)
            if new is None:
                problems.append(f"{where}: removed")
                continue
            problems += _parameter_breaks(old["parameters"], new["parameters"], where)
            problems += _body_breaks(old.get("requestBody"), new.get("requestBody"), where)
            problems += _response_breaks(old["responses"], new["responses"], where)
    return problems


def _parameter_breaks(old: list[dict], new: list[dict], where: str) -> list[str]:
    problems = []
    before = {(p["in"], p["name"]): p for p in old}
    after = {(p["in"], p["name"]): p for p in new}
    for (place, name), was in before.items():
        label = f"{where} {place} parameter {name!r}"
        now = after.get((place, name))
        if now is None:
            problems.append(f"{label}: removed (callers of the previous release send it)")
            continue
        if now["required"] and not was["required"]:
            problems.append(f"{label}: newly required (callers of the previous release may leave it out)")
        problems += schema_breaks(was["schema"], now["schema"], label, request=True)
    for (place, name), now in after.items():
        if (place, name) not in before and now["required"]:
            problems.append(f"{where} {place} parameter {name!r}: new and required "
                            "(callers of the previous release do not send it)")
    return problems


def _body_breaks(old: dict | None, new: dict | None, where: str) -> list[str]:
    label = f"{where} request body"
    if old is None:
        return [f"{label}: new and required"] if new and new["required"] else []
    if new is None:
        return [f"{label}: no longer read (callers of the previous release send one)"]
    problems = []
    if new["required"] and not old["required"]:
        problems.append(f"{label}: newly required")
    for media, schema in old["content"].items():
        if media not in new["content"]:
            problems.append(f"{label}: {media} no longer accepted")
        else:
            problems += schema_breaks(schema, new["content"][media], label, request=True)
    return problems


def _response_breaks(old: dict, new: dict, where: str) -> list[str]:
    problems = []
    for status, contents in old.items():
        if status not in new:
            if status.startswith("2"):
                problems.append(f"{where} response {status}: removed (callers of the previous release expect it)")
            continue
        for media, schema in contents.items():
            label = f"{where} response {status}"
            if media not in new[status]:
                problems.append(f"{label}: no longer answers {media}")
            else:
                problems += schema_breaks(schema, new[status][media], label, request=False)
    return problems


def schema_breaks(old: dict, new: dict, where: str, *, request: bool) -> list[str]:
    """Why `new` breaks callers that relied on `old`.

    request=True (the caller writes the value): `new` must accept everything `old` accepted. So no type and no
    enum value may go, no bound may tighten (maxLength down, minimum up...), pattern and format may not change or
    appear, a field callers may send may not go (renamed counts as gone), none may become or appear required.
    request=False (the caller reads it): `new` may only produce what `old` promised. So no type (null included)
    and no enum value may appear (a caller may branch on every value it knows), no bound may loosen, pattern and
    format may not change or go, a required field may not go or turn optional. New fields may appear.
    anyOf branches are paired by type (`int | None` is an integer branch and a null branch).
    """
    problems = _type_breaks(old, new, where, request)
    for old_branch in _branches(old):
        new_branch = next((b for b in _branches(new) if _same_kind(old_branch, b)), None)
        if new_branch is not None:
            problems += _branch_breaks(old_branch, new_branch, where, request)
    return problems


def _branches(schema: dict) -> list[dict]:
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if not alternatives:
        return [schema]
    return [branch for alternative in alternatives for branch in _branches(alternative)]


def _types(schema: dict) -> set[str] | None:
    """The JSON types a schema allows; None when any value will do."""
    found: set[str] = set()
    for branch in _branches(schema):
        kind = branch.get("type")
        if kind is None:
            return None
        found.update([kind] if isinstance(kind, str) else kind)
    return found


def _covered(kind: str, types: set[str] | None) -> bool:
    return types is None or kind in types or (kind == "integer" and "number" in types)


def _same_kind(a: dict, b: dict) -> bool:
    ta, tb = _types(a), _types(b)
    return ta is None or tb is None or any(_covered(t, tb) or _covered(u, ta) for t in ta for u in tb)


def _type_breaks(old: dict, new: dict, where: str, request: bool) -> list[str]:
    wide, narrow = (new, old) if request else (old, new)
    wide_types, narrow_types = _types(wide), _types(narrow)
    if wide_types is None:
        return []
    if narrow_types is None or not all(_covered(kind, wide_types) for kind in narrow_types):
        return [f"{where}: type {_shown(_types(old))} became {_shown(_types(new))}"]
    return []


def _shown(types: set[str] | None) -> str:
    return "any" if types is None else " | ".join(sorted(types))


def _values(schema: dict) -> list | None:
    if "const" in schema:
        return [schema["const"]]
    return schema.get("enum")


def _branch_breaks(old: dict, new: dict, where: str, request: bool) -> list[str]:
    """One pair of same-typed branches: enum values, bounds, pattern and format, then fields or items."""
    problems = []
    was, now = _values(old), _values(new)
    if request and now is not None:
        lost = [v for v in was if v not in now] if was is not None else None
        if lost is None or lost:
            problems.append(f"{where}: no longer accepts {lost if lost else 'every value'} (now only {now})")
    if not request and was is not None:
        gained = [v for v in now if v not in was] if now is not None else None
        if gained is None or gained:
            problems.append(f"{where}: may now answer {gained if gained else 'any value'} (previously only {was})")
    for keyword in UPPER_BOUNDS + LOWER_BOUNDS:
        before, after = old.get(keyword), new.get(keyword)
        # Request side: a bound may not appear or tighten. Response side: it may not go or loosen.
        limit, other = (after, before) if request else (before, after)
        if limit is not None and (other is None or (other > limit if keyword in UPPER_BOUNDS else other < limit)):
            problems.append(f"{where}: {keyword} {before} became {after}")
    for keyword in EXACT_KEYWORDS:
        before, after = old.get(keyword), new.get(keyword)
        if before != after and (after if request else before) is not None:
            problems.append(f"{where}: {keyword} {before!r} became {after!r}")
    problems += _field_breaks(old, new, where, request)
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        problems += schema_breaks(old["items"], new["items"], f"{where}[]", request=request)
    extra_old, extra_new = old.get("additionalProperties"), new.get("additionalProperties")
    if isinstance(extra_old, dict) and isinstance(extra_new, dict):  # a map's values (dict[str, Model])
        problems += schema_breaks(extra_old, extra_new, f"{where}{{}}", request=request)
    elif request and extra_new is False and extra_old is not False:
        problems.append(f"{where}: no longer accepts fields it does not know")
    return problems


def _field_breaks(old: dict, new: dict, where: str, request: bool) -> list[str]:
    before, after = old.get("properties", {}), new.get("properties", {})
    required_before, required_after = set(old.get("required", ())), set(new.get("required", ()))
    problems = []
    if request:
        for name in sorted(before.keys() - after.keys()):
            problems.append(f"{where}.{name}: removed (callers of the previous release may send it)")
        for name in sorted(required_after - required_before):
            problems.append(f"{where}.{name}: " + ("newly required" if name in before else "new and required"))
    else:
        for name in sorted(required_before):
            if name not in after:
                problems.append(f"{where}.{name}: removed (the previous release always answered it)")
            elif name not in required_after:
                problems.append(f"{where}.{name}: no longer always answered (the previous release guaranteed it)")
    for name in sorted(before.keys() & after.keys()):
        problems += schema_breaks(before[name], after[name], f"{where}.{name}", request=request)
    return problems


def check(root: Path = ROOT, code: dict[str, Contract] | None = None) -> list[str]:
    """Everything `check` reports: drift of root's contracts from `code` (built when not given), then what
    each committed contract breaks of root/previous."""
    committed = load_dir(root)
    problems = drift(generate() if code is None else code, committed)
    for name, previous in load_dir(root / "previous").items():
        current = committed.get(name, {"paths": {}})
        problems += [f"{name}: breaks the previous release: {line}" for line in breaking_changes(previous, current)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.contracts", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("write", "check"),
                        help="write: contracts/*.json from the code; check: drift and breaking changes")
    if parser.parse_args(argv).command == "write":
        for path in write(generate()):
            print(f"wrote {path.relative_to(ROOT.parent)}")
        return 0
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("\nA route changed on purpose: `make contracts` (python -m scripts.contracts write) and commit "
              "contracts/. A breaking change needs the expand/contract steps of docs/contracts.md instead.",
              file=sys.stderr)
        return 1
    print(f"contracts ok: {', '.join(sorted(load_dir(ROOT)))} match the code and keep the previous release's")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
