"""Text no service can store: NUL characters and unpaired UTF-16 surrogates, refused with a 422 before any
handler runs — in the path, the query string and every string (keys included) of a JSON body.

PostgreSQL refuses NUL in text, and a lone surrogate cannot be encoded as UTF-8: both used to surface as 500s
from deep inside a driver (`POST /auth/login {"username": "chi\\u0000ef"}`), and a 500 is a bug. One check
here covers every route of every service, present and future; the gateway applies the path and query part
(`%00`) before it forwards anything. Pagination cursors are checked with `forbidden_text` as they are decoded.
"""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from shared.errors import PROBLEM_JSON, problem_body

_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")
MESSAGE = "NUL characters and unpaired surrogates are not allowed"
_JSON_TYPES = (b"application/json", b"application/problem+json")


def forbidden_text(value: str) -> bool:
    """Whether `value` holds a NUL or a lone surrogate (json.loads joins a valid pair into one character)."""
    return _FORBIDDEN.search(value) is not None


def first_forbidden(value: Any, where: tuple = ("body",)) -> tuple | None:
    """The location of the first string (or key) in a decoded JSON value that holds forbidden text."""
    if isinstance(value, str):
        return where if forbidden_text(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if forbidden_text(key):
                return (*where, key.encode("unicode_escape").decode())
            found = first_forbidden(item, (*where, key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = first_forbidden(item, (*where, index))
            if found:
                return found
    return None


def _encoded_forbidden(encoded: bytes) -> bool:
    # A path or query string, percent-decoded: a NUL byte, or a UTF-8 sequence that no text can hold (a lone surrogate's
    # three-byte form, or anything else that is not UTF-8).
    decoded = unquote_to_bytes(encoded.replace(b"+", b" "))
    if b"\x00" in decoded:
        return True
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


class InputGuard:
    """Pure ASGI. `bodies=False` (the gateway) checks only the path and query: bodies pass through unparsed."""

    def __init__(self, app, *, bodies: bool = True) -> None:
        self.app, self.bodies = app, bodies

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
        if forbidden_text(scope["path"]) or _encoded_forbidden(raw_path):
            return await _refuse(send, ("path",))
        if _encoded_forbidden(scope["query_string"]):
            return await _refuse(send, ("query",))
        if not self.bodies or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE") or not _is_json(scope):
            return await self.app(scope, receive, send)
        messages, body = await _read(receive)
        if body is None:  # the client went away
            return
        try:
            found = first_forbidden(json.loads(body)) if body else None
        except (ValueError, RecursionError):
            found = None  # not JSON: the route's own validation answers that
        if found:
            return await _refuse(send, found)
        await self.app(scope, _replay(messages, receive), send)


def _is_json(scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() in _JSON_TYPES
    return False


async def _read(receive) -> tuple[list[dict], bytes | None]:
    messages, chunks = [], []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return messages, None
        messages.append(message)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _replay(messages: list[dict], receive):
    pending = list(messages)

    async def replay() -> dict:
        return pending.pop(0) if pending else await receive()

    return replay


async def _refuse(send, where: tuple) -> None:
    location = ".".join(str(part) for part in where if part != "body") or where[0]
    errors = [{"loc": list(where), "msg": MESSAGE, "type": "forbidden_character"}]
    body = json.dumps(problem_body(422, f"{location}: {MESSAGE}", slug="validation-error", errors=errors)).encode()
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
