"""A stand-in for billing's `GET /bills/parents/{qr}`, served on loopback from a thread (until billing exists)."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from aiohttp import web

from tests.support import free_port


@dataclass
class FakeBilling:
    bills: dict[str, str] = field(default_factory=dict)  # parent QR -> bill id
    failing: bool = False  # answer 500 to everything
    calls: list[str] = field(default_factory=list)
    url: str = ""

    def reset(self) -> None:
        self.bills.clear()
        self.calls.clear()
        self.failing = False

    async def _parent(self, request: web.Request) -> web.Response:
        qr = request.match_info["qr"]
        self.calls.append(qr)
        if self.failing:
            return web.json_response({"detail": "database down"}, status=500)
        return web.json_response({"parent_qr": qr, "bill_id": self.bills.get(qr)})

    def start(self) -> "FakeBilling":
        app = web.Application()
        app.router.add_get("/bills/parents/{qr}", self._parent)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            runner = web.AppRunner(app)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=serve, daemon=True, name="fake-billing").start()
        ready.wait(5)
        return self
