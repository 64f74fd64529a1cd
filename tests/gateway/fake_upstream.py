"""A stand-in for every upstream service, run as a real uvicorn process by the gateway tests.

Serves auth's JWKS (from FAKE_JWKS), /ready, and a catch-all that echoes the request; a path ending in
/slow sleeps, /fail answers 500, /sick 503, /big streams ?size= bytes, /drip sends one chunk and waits for /control/release.
Its /openapi.json is a fixed document shaped like the services' (see OPENAPI).
Every X-Probe header value it receives is kept; GET /control/probes lists them (what reached the upstream).
"""
from __future__ import annotations

import asyncio
import json
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_OPERATION = {"responses": {"200": {"description": "OK"}}}
# A public route (token and no token), a service-to-service route and a probe, as the services' documents have them.
OPENAPI = {
    "openapi": "3.1.0", "info": {"title": "fake", "version": "1"},
    "paths": {"/auth/login": {"post": _OPERATION}, "/bags/{qr_id}": {"get": _OPERATION, "delete": _OPERATION},
              "/internal/parents/marks": {"get": _OPERATION}, "/ready": {"get": _OPERATION}},
}


def create_app() -> FastAPI:
    jwks = json.loads(os.environ["FAKE_JWKS"])
    released = asyncio.Event()
    probes: list[str] = []
    app = FastAPI(openapi_url=None)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict:
        return OPENAPI

    @app.middleware("http")
    async def record_probes(request: Request, call_next):
        probes.extend(v for k, v in request.headers.items() if k == "x-probe")
        return await call_next(request)

    @app.get("/control/probes")
    async def seen_probes() -> list[str]:
        return probes

    @app.get("/auth/jwks")
    async def jwks_route() -> dict:
        return jwks

    @app.get("/ready")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.post("/control/release")
    async def release() -> dict:
        released.set()
        return {}

    @app.api_route("/{path:path}", methods=METHODS)
    async def catch_all(request: Request, path: str):
        action = path.rsplit("/", 1)[-1]
        if action == "slow":
            await asyncio.sleep(float(request.query_params.get("seconds", "5")))
        elif action == "fail":
            return JSONResponse({"detail": "upstream exploded"}, status_code=500)
        elif action == "sick":
            return JSONResponse({"detail": "overloaded"}, status_code=503, headers={"Retry-After": "1"})
        elif action == "big":
            return StreamingResponse(_chunks(int(request.query_params["size"])), media_type="text/csv")
        elif action == "drip":
            return StreamingResponse(_drip(released), media_type="text/plain")
        elif action == "stream":  # an event stream whose events come further apart than the upstream timeout
            return StreamingResponse(_events(float(request.query_params.get("gap", "1.5"))),
                                     media_type="text/event-stream")
        body = await request.body()
        echo = {
            "method": request.method,
            "path": request.scope["raw_path"].decode(),
            "query": request.scope["query_string"].decode(),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
            "body_length": len(body),
            "body": body.decode("latin-1"),
        }
        # Headers a proxy must not pass on (hop-by-hop) or must not duplicate (the request id).
        extra = {"X-Upstream": "fake", "Proxy-Authenticate": "Basic realm=fake",
                 "X-Request-ID": request.headers.get("x-request-id", "none")}
        return JSONResponse(echo, headers=extra)

    return app


async def _chunks(size: int):
    block = b"x" * 65536
    while size > 0:
        yield block[:size]
        size -= len(block)


async def _events(gap: float):
    for n in range(3):
        yield f"event: tick\ndata: {n}\n\n".encode()
        await asyncio.sleep(gap)


async def _drip(released: asyncio.Event):
    yield b"first chunk\n"
    await released.wait()
    released.clear()
    yield b"second chunk\n"
