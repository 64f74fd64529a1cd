"""GET /dashboard/stream (Server-Sent Events) and POST /dashboard/stream/ticket: the live dashboard
(services/dashboard/stream.py says how it is built)."""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.dashboard.stream import issue_ticket, parse_id, redeem_ticket, event_stream
from shared.errors import DependencyUnavailable, Unauthorized, problem_responses
from shared.resp import RedisError

router = APIRouter(prefix="/dashboard", tags=["dashboard"])

# Event streams must pass every proxy unbuffered and uncached (nginx honours X-Accel-Buffering per response).
STREAM_HEADERS = {"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"}


@router.post("/stream/ticket", responses=problem_responses(401, 503))
async def stream_ticket(request: Request) -> JSONResponse:
    """A single-use ticket (valid `expires_in` seconds) for opening the event stream from a browser's
    `EventSource`, which cannot send `Authorization`: `GET /dashboard/stream?ticket=…`. The stream it opens ends
    when the access token that asked for it expires."""
    principal, expires = await request.app.state.verifier.authenticate_until(request.headers.get("authorization"))
    live = request.app.state.stream
    try:
        ticket = await issue_ticket(live.bus, principal, expires, live.ticket_ttl)
    except RedisError as exc:
        raise DependencyUnavailable("stream tickets are kept in Redis, which is unreachable: retry shortly",
                                    dependency="redis") from exc
    return JSONResponse({"ticket": ticket, "expires_in": int(live.ticket_ttl)}, headers={"Cache-Control": "no-store"})


@router.get("/stream", responses={200: {"content": {"text/event-stream": {}},
                                        "description": "events: stats, scan, bill, reset, expired"},
                                  **problem_responses(401, 503)})
async def stream(
    request: Request,
    ticket: Annotated[str | None, Query(max_length=100, description="from POST /dashboard/stream/ticket")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> StreamingResponse:
    """Live stats and activity for the caller's scope (a dispatcher: their area; bills for billers and admins).

    Opened with a ticket (browsers) or an `Authorization: Bearer` header (fetch-based clients). Events:
    `stats` (the same body as GET /dashboard/stats; first a snapshot, then whenever it changes), `scan` and
    `bill` (new activity), `reset` (Last-Event-ID is older than the replay buffer: reload), `expired` (the token
    expired: sign in again). A comment line every few seconds keeps proxies from timing the stream out.
    `Last-Event-ID` resumes on any replica."""
    live = request.app.state.stream
    if ticket is not None:
        try:
            redeemed = await redeem_ticket(live.bus, ticket)
        except RedisError as exc:
            raise DependencyUnavailable("stream tickets are kept in Redis, which is unreachable: retry shortly",
                                        dependency="redis") from exc
        if redeemed is None:
            raise Unauthorized("stream ticket unknown, already used or expired: ask for a new one")
        principal, expires = redeemed
    else:
        principal, expires = await request.app.state.verifier.authenticate_until(
            request.headers.get("authorization"))
    if expires <= time.time():
        raise Unauthorized("access token expired")
    body = event_stream(hub=live.hub, principal=principal, expires=expires, last_event_id=parse_id(last_event_id),
                        render_stats=live.render_stats, heartbeat=live.heartbeat, retry_ms=live.retry_ms)
    return StreamingResponse(body, media_type="text/event-stream", headers=STREAM_HEADERS)
