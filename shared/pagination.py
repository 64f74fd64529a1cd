"""Keyset (cursor) pagination shared by every list endpoint: `?limit=&cursor=` → `{items, next_cursor}`."""
from __future__ import annotations

import base64
import json
from typing import Any, Callable, Generic, Sequence, TypeVar

from pydantic import BaseModel

from shared.errors import ProblemError
from shared.input_guard import first_forbidden

T = TypeVar("T")
R = TypeVar("R")

MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> list[Any] | None:
    """The keys of the last row of the previous page; a 400 for anything that is not one of our cursors."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProblemError("cursor is not valid; pass next_cursor from the previous page", slug="bad-cursor") from exc
    if not isinstance(values, list) or not values or first_forbidden(values):
        raise ProblemError("cursor is not valid; pass next_cursor from the previous page", slug="bad-cursor")
    return values


def cursor_position(cursor: str | None, kind: type = int) -> int | str | None:
    """Where the previous page ended: an id (int) or a sort key (str, ≤ 32 characters); 400 for anything else."""
    values = decode_cursor(cursor)
    if values is None:
        return None
    value = values[0]
    if kind is int and isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**62:
        return value
    if kind is str and isinstance(value, str) and len(value) <= 32:
        return value
    raise ProblemError("cursor is not valid; pass next_cursor from the previous page", slug="bad-cursor")


def page_of(rows: Sequence[R], limit: int, *, item: Callable[[R], T], key: Callable[[R], Any]) -> Page[T]:
    """A page from `limit + 1` fetched rows: the extra row only says there is a next page."""
    shown = rows[:limit]
    more = len(rows) > limit
    return Page(items=[item(row) for row in shown], next_cursor=encode_cursor(key(shown[-1])) if more else None)
