"""A lean HTTP/1.1 client for the virtual users: one keep-alive connection per user, one request at a time.

The generator shares the machine with what it measures, so its own CPU is the system's loss: with aiohttp's
client it took ~1 ms of CPU per request here (20% of a core at 200 users); this one writes the request in one
call and reads Content-Length or chunked bodies straight off the socket. Set-up and clean-up (accounts,
logins) still use aiohttp: they are not measured.
"""
from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode, urlsplit


class ConnectionClosed(Exception):
    """The server closed the connection before the whole answer arrived."""


class Wire:
    """One user's connection to the system under test; reconnects after any failure.

    Like a browser (and RFC 9112 §9.3.1), a request that finds its kept-alive connection closed by the server
    before a single byte of the answer arrived is sent again, once, on a new connection: nginx closes idle
    connections when it reloads (a rolling restart), and the request never reached anything. `resent` counts
    them for the report.
    """

    resent = 0  # over all users of this process

    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._host_header = f"{self.host}:{self.port}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._served = 0  # answers read on the current connection

    async def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                      body: dict | None = None, params: dict | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; raises TimeoutError or OSError/ConnectionClosed when no answer came."""
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        payload = json.dumps(body).encode() if body is not None else b""
        head = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + self._host_header,
                b"Content-Length: " + str(len(payload)).encode()]
        if body is not None:
            head.append(b"Content-Type: application/json")
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}".encode())
        message = b"\r\n".join(head) + b"\r\n\r\n" + payload
        try:
            async with asyncio.timeout(self.timeout):
                for attempt in (1, 2):
                    if self._writer is None:
                        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                    reused = self._served > 0
                    try:
                        self._writer.write(message)
                        answer = await self._answer()
                    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                        nothing_read = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                        if not (reused and nothing_read and attempt == 1):
                            raise
                        self.close()
                        Wire.resent += 1
                        continue
                    self._served += 1
                    return answer
        except BaseException:
            self.close()  # an answer half read, or none: this connection cannot carry the next request
            raise

    async def _answer(self) -> tuple[int, bytes]:
        reader = self._reader
        lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name:
                fields[name.strip().lower()] = value.strip()
        if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            data = b"".join(chunks)
        else:
            data = await reader.readexactly(int(fields.get(b"content-length", b"0")))
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, data

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._served = 0
