"""Held values: a part as the cache, this process and the database hold it, a lookup's 4xx, the last outcome of a
call to a source, and what one request read."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.dashboard.clients import SOURCES


@dataclass(frozen=True)
class Entry:
    """A part as held: the source's answer and its times (epoch seconds, shared by every replica).

    `data` None means nothing good was ever held, only a failed first fetch (so the retry interval holds for it
    too)."""

    data: Any
    as_of: float  # when the source computed it (its own as_of when it gives one)
    refreshed_at: float  # when the dashboard last fetched it
    failed_at: float | None = None
    failure: str | None = None
    restored: bool = False  # read back from the database and not refreshed since

    @property
    def held(self) -> bool:
        return self.data is not None

    @property
    def failed_last(self) -> bool:
        return self.failed_at is not None and self.failed_at >= self.refreshed_at

    def encode(self) -> bytes:
        return json.dumps({"data": self.data, "as_of": self.as_of, "refreshed_at": self.refreshed_at,
                           "failed_at": self.failed_at, "failure": self.failure, "restored": self.restored},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> "Entry | None":
        if raw is None:
            return None
        try:
            item = json.loads(raw)
            return cls(item["data"], float(item["as_of"]), float(item["refreshed_at"]), item.get("failed_at"),
                       item.get("failure"), bool(item.get("restored")))
        except (ValueError, KeyError, TypeError):  # not ours (a tombstone, an older format): as if absent
            return None


@dataclass(frozen=True)
class Absent:
    """A lookup's source answered 4xx (404: no such bag or bill, or one of another area)."""

    status: int
    detail: str


@dataclass(frozen=True)
class Outcome:
    """The last call to a source: when, and whether it answered."""

    at: float
    ok: bool

    def encode(self) -> bytes:
        return json.dumps({"at": self.at, "ok": self.ok}).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> "Outcome | None":
        try:
            item = json.loads(raw) if raw is not None else None
            return None if item is None else cls(float(item["at"]), bool(item["ok"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class Reading:
    """What a request read: each key's value (or a lookup's Absent), and which of the sources asked are down."""

    entries: dict[str, Entry | Absent | None]
    down: dict[str, bool]
    now: float = field(default_factory=time.time)

    def merged(self, other: "Reading") -> "Reading":
        down = {name: self.down.get(name, False) or other.down.get(name, False) for name in {*self.down, *other.down}}
        return Reading({**self.entries, **other.entries}, down, max(self.now, other.now))

    def sources(self) -> dict[str, Any]:
        """The answer's `sources` ({name: up|down}, in SOURCES order) and `down` (the names that are)."""
        names = [name for name in SOURCES if name in self.down]
        return {"sources": {name: "down" if self.down[name] else "up" for name in names},
                "down": [name for name in names if self.down[name]]}


def iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def source_as_of(body: Any, fallback: float) -> float:
    """The source's own `as_of` when its answer carries one (never later than now), else `fallback`."""
    raw = body.get("as_of") if isinstance(body, dict) else None
    if isinstance(raw, str):
        try:
            return min(epoch(datetime.fromisoformat(raw)), time.time())
        except ValueError:
            pass
    return fallback
