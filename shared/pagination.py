"""Keyset (cursor) pagination shared by every list endpoint: `?limit=&cursor=` → `{items, next_cursor}`."""
from __future__ import annotations

import base64
import json
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from shared.errors import ProblemError

T = TypeVar("T")

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
    if not isinstance(values, list) or not values:
        raise ProblemError("cursor is not valid; pass next_cursor from the previous page", slug="bad-cursor")
    return values
