"""Draining: what a process does between "stop" (SIGTERM) and its exit, so a rolling restart loses nothing.

uvicorn's own shutdown stops accepting, closes idle keep-alive connections and waits (up to its graceful timeout)
for requests in flight; only then does the app's lifespan hear of it. Two things cannot wait that long:
- readiness must say "draining" at once (503), so a balancer that still probes stops sending;
- an event stream never finishes by itself: it must be told to end, with a retry hint, or the graceful timeout
  runs out and the connection is cut mid-stream.

`DrainingServer` (every bagtrack process runs on it: `python -m shared.serve` for the services, the gateway's own
entry point) calls `begin()` first, which flips `draining()` and runs the hooks (the dashboard's hub ends its
streams), then hands over to uvicorn's shutdown.
"""
from __future__ import annotations

import logging
from typing import Callable

import uvicorn

log = logging.getLogger("bagtrack.drain")

_state = {"draining": False}
_hooks: list[Callable[[], None]] = []


def draining() -> bool:
    return _state["draining"]


def on_drain(hook: Callable[[], None]) -> Callable[[], None]:
    """Run `hook` (synchronous, quick: e.g. wake waiters) when draining begins; returns a function that removes
    it again (an app's lifespan registers on start-up and removes on shutdown)."""
    _hooks.append(hook)
    return lambda: _hooks.remove(hook) if hook in _hooks else None


def begin() -> None:
    if _state["draining"]:
        return
    _state["draining"] = True
    log.warning("draining: readiness answers 503, open streams are told to reconnect elsewhere")
    for hook in list(_hooks):
        try:
            hook()
        except Exception:  # one hook failing must not keep the others (or the shutdown) from running
            log.exception("drain hook %r failed", hook)


def reset() -> None:
    """Tests only: a process that drained and is reused in-process."""
    _state["draining"] = False


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining before its shutdown (see the module docstring)."""

    async def shutdown(self, sockets=None) -> None:
        begin()
        await super().shutdown(sockets=sockets)
