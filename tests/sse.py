"""A Server-Sent Events client for the tests that read the dashboard's stream through the gateway."""
from __future__ import annotations

import json
import queue
import threading
import time

import httpx


class EventReader:
    """An SSE client on a thread: every event (and heartbeat comment) lands in a queue as it arrives."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: queue.Queue = queue.Queue()
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self._opened = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, args=(url, headers or {}), daemon=True)
        self._thread.start()
        assert self._opened.wait(10), "the stream did not open"

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=30)) as response:
                self._response, self.status, self.headers = response, response.status_code, response.headers
                self._opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        self.events.put({"event": "comment", "at": time.monotonic()})
                    elif line == "":
                        if fields:
                            data = fields.get("data")
                            self.events.put({"event": fields.get("event", "message"), "id": fields.get("id"),
                                             "data": json.loads(data) if data else None, "at": time.monotonic()})
                        fields = {}
                    else:
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value.startswith(" ") else value
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test
        finally:
            self._opened.set()
            self.events.put({"event": "closed", "at": time.monotonic()})

    def next(self, kind: str, timeout: float = 5.0, where=lambda event: True) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} event within {timeout} s")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event["event"] == kind and where(event):
                return event
            if event["event"] == "closed":
                raise AssertionError(f"the stream closed before a {kind} event")

    def drain(self) -> list[dict]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        self._thread.join(5)
