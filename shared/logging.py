"""JSON log lines that carry the service name and the current request's X-Request-ID."""
from __future__ import annotations

import asyncio
import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class BatchingStreamHandler(logging.StreamHandler):
    """A stream handler that, on an event loop, writes what was logged in the last `every` seconds in one write
    and one flush: an access line per request would otherwise cost a write system call per request (these are
    dear on the machines measured). Warnings and errors, and anything logged off the loop (start-up, threads,
    tools), are written at once, as by a plain StreamHandler."""

    every = 0.05

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or record.levelno >= logging.WARNING:
            self._pending.append(line)
            self._drain()
            return
        self._pending.append(line)
        if len(self._pending) == 1:
            loop.call_later(self.every, self._drain)

    def _drain(self) -> None:
        with self.lock:  # a thread may log (and drain) while the loop's timer drains
            lines, self._pending = self._pending, []
            if not lines:
                return
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:
                pass  # a closed or full stdout must never fail a request

    def flush(self) -> None:
        self._drain()
        super().flush()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger (ours, uvicorn's, SQLAlchemy's) through one JSON handler on stdout."""
    handler = BatchingStreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per outgoing call is noise
    # Our middleware writes the access log (with request id and route); uvicorn's would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
