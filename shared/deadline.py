"""Request deadlines: the time a request may still take, set only by the gateway and passed downstream.

The gateway gives every forwarded request (event streams excepted) a total budget (GATEWAY_REQUEST_BUDGET) and
sends what is left of it in `X-Request-Budget-Ms` (relative milliseconds: no clocks to agree on); a client's own
value is dropped at the gateway. A service's middleware turns the header into a deadline for the request's task
(`deadline_var`), and what the request does after that respects it:
- shared.db: a connection is not even checked out once the deadline has passed (503 deadline-exceeded), and a
  statement on the direct path runs with asyncpg's `timeout=` set to what is left — on expiry asyncpg cancels it
  in PostgreSQL (the cancel protocol: no extra round trip while things go well) and the request answers 503;
- shared.http: a call to another service carries the rest of the budget and waits no longer than it, and is not
  retried once nothing is left.
Multi-statement transactions are checked when they start (statement_timeout bounds each of their statements).
"""
from __future__ import annotations

import time
from contextvars import ContextVar

from shared.errors import ServiceUnavailable

HEADER = "X-Request-Budget-Ms"
RAW_HEADER = HEADER.lower().encode()
MAX_BUDGET_MS = 600_000

deadline_var: ContextVar[float | None] = ContextVar("bagtrack_deadline", default=None)


class DeadlineExceeded(ServiceUnavailable):
    """503: the request's budget ran out before (or while) this work ran; whoever asked has given up."""

    slug = "deadline-exceeded"

    def __init__(self, detail: str = "the request's time budget ran out") -> None:
        super().__init__(detail, retry_after=1)


def start(budget: float) -> None:
    """Give the current request `budget` seconds from now (the gateway)."""
    deadline_var.set(time.monotonic() + budget)


def from_headers(headers) -> None:
    """The deadline a caller sent (raw ASGI headers); a missing or malformed value means none."""
    for name, value in headers:
        if name == RAW_HEADER:
            try:
                ms = int(value)
            except ValueError:
                return
            if 0 <= ms <= MAX_BUDGET_MS:
                deadline_var.set(time.monotonic() + ms / 1000)
            return


def remaining() -> float | None:
    """Seconds left for the current request, or None when it has no deadline."""
    deadline = deadline_var.get()
    return None if deadline is None else deadline - time.monotonic()


def header_value(left: float) -> str:
    return str(max(0, int(left * 1000)))
