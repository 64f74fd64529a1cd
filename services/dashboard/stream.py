"""The live dashboard: one poller for the whole system, one bus, one reader per replica, many subscribers.

    scanning /internal/scans ─┐                    ┌─ replica A: reader ─▶ subscribers (filtered by area)
                              ├─ poller (leader) ─▶ bus ┤
    billing /internal/bills/events ┘   (Redis Stream)   └─ replica B: reader ─▶ subscribers

- **One poller per system.** Every replica runs the poll job, but only the holder of a short lease (a Redis key
  renewed each tick; compare-and-renew in one Lua call) asks the sources what is new. A hundred open dashboards,
  on any number of replicas, cost scanning and billing one feed call each per tick plus one stats refresh per
  changed part, the same as one dashboard.
- **The bus is a bounded replay buffer.** Events go to a Redis Stream (XADD MAXLEN ~ N), so their ids order every
  event across replicas and `Last-Event-ID` resumes on any replica (XRANGE after that id). An id older than the
  buffer holds gets a `reset` event: the client reloads its state (a fresh `stats` snapshot follows anyway).
  Without Redis (`make run`'s embedded default: one process) the bus is in memory with the same contract.
- **Subscribers never call a source.** A `stats` event tells a replica which parts changed; each subscriber's
  answer is rendered from the dashboard's held parts (the same `stats_body` GET /dashboard/stats answers), so the
  poller's one refresh serves them all.
- **Tickets.** `EventSource` cannot send `Authorization`, so a signed-in page asks `POST /dashboard/stream/ticket`
  (with its bearer token) for a ticket: 32 random bytes, valid 30 s, usable once (taken with GETDEL), carrying the
  caller's identity and their token's expiry. A fetch-based client may instead send `Authorization` directly.
  Either way the stream ends (an `expired` event) when the token it was opened with expires.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from services.dashboard import keys
from services.dashboard.clients import get_json, source_client
from services.dashboard.service import sees_all_areas
from shared import drain
from shared.resp import RedisError, ReplyError, RespClient
from shared.security import Principal

log = logging.getLogger("bagtrack.dashboard.stream")

EventId = tuple[int, int]  # a Redis Stream id "<ms>-<seq>", parsed
Event = dict[str, Any]

# Renew the lease only if we still hold it (a lease that lapsed and was taken must not be stolen back).
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"


def parse_id(raw: str | bytes | None) -> EventId | None:
    """A stream id from `Last-Event-ID` (or Redis); None when it is not one."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, sep, seq = text.strip().partition("-")
    if not (ms.isdigit() and seq.isdigit() and sep) or len(text) > 40:
        return None
    return int(ms), int(seq)


def format_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


class MemoryBus:
    """The bus of one process: a bounded deque and a condition (the embedded default, no Redis)."""

    backend = "memory"

    def __init__(self, maxlen: int) -> None:
        self._events: deque[tuple[EventId, Event]] = deque(maxlen=maxlen)
        self._changed = asyncio.Condition()
        self._last: EventId = (0, 0)
        self._trimmed: EventId = (0, 0)  # the newest event the bound has pushed out
        self._tickets: dict[str, tuple[float, bytes]] = {}
        self._leases: dict[str, tuple[float, str]] = {}
        self._values: dict[str, str] = {}

    async def publish(self, event: Event) -> EventId:
        ms = int(time.time() * 1000)
        event_id = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        self._last = event_id
        if len(self._events) == self._events.maxlen:
            self._trimmed = self._events[0][0]
        self._events.append((event_id, event))
        async with self._changed:
            self._changed.notify_all()
        return event_id

    async def last_id(self) -> EventId:
        return self._last

    async def read_after(self, after: EventId, block: float) -> list[tuple[EventId, Event]]:
        if self._last <= after:
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), block)
                except TimeoutError:
                    return []
        return [(i, e) for i, e in self._events if i > after]

    async def since(self, after: EventId) -> list[tuple[EventId, Event]] | None:
        """Events after `after`, or None when some of them are no longer held (or `after` is not ours)."""
        if after < self._trimmed or after > self._last:
            return None
        return [(i, e) for i, e in self._events if i > after]

    async def lead(self, name: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        held = self._leases.get(name)
        if held is None or held[0] <= now or held[1] == owner:
            self._leases[name] = (now + ttl, owner)
            return True
        return False

    async def put_ticket(self, ticket: str, value: bytes, ttl: float) -> None:
        now = time.monotonic()
        self._tickets = {k: v for k, v in self._tickets.items() if v[0] > now}
        self._tickets[ticket] = (now + ttl, value)

    async def take_ticket(self, ticket: str) -> bytes | None:
        item = self._tickets.pop(ticket, None)
        return item[1] if item is not None and item[0] > time.monotonic() else None

    async def get_value(self, name: str) -> str | None:
        return self._values.get(name)

    async def set_value(self, name: str, value: str) -> None:
        self._values[name] = value

    async def aclose(self) -> None:
        return None


class RedisBus:
    """The bus shared by every replica: a Redis Stream, a lease key, tickets (GETDEL), cursors.

    The blocking read has its own connection: the shared one pipelines every other command, and an XREAD BLOCK
    on it would hold them all up."""

    backend = "redis"

    def __init__(self, url: str, *, maxlen: int, prefix: str = "bagtrack:dashboard:stream:") -> None:
        self._client = RespClient(url, timeout=0.5)
        self._blocking_url = url
        self._blocking: RespClient | None = None
        self._maxlen = maxlen
        self._prefix = prefix
        self._events = prefix + "events"

    async def publish(self, event: Event) -> EventId:
        raw = await self._client.call("XADD", self._events, "MAXLEN", "~", self._maxlen, "*",
                                      "e", json.dumps(event, separators=(",", ":")))
        return parse_id(raw)

    async def last_id(self) -> EventId:
        reply = await self._client.call("XREVRANGE", self._events, "+", "-", "COUNT", 1)
        return parse_id(reply[0][0]) if reply else (0, 0)

    async def read_after(self, after: EventId, block: float) -> list[tuple[EventId, Event]]:
        if self._blocking is None:
            self._blocking = RespClient(self._blocking_url, timeout=block + 2.0)
        reply = await self._blocking.call("XREAD", "COUNT", 500, "BLOCK", max(1, int(block * 1000)),
                                          "STREAMS", self._events, format_id(after))
        return _entries(reply[0][1]) if reply else []

    async def since(self, after: EventId) -> list[tuple[EventId, Event]] | None:
        """Events after `after`, or None when MAXLEN may have trimmed some of them, or `after` is not one of this
        stream's ids. (Redis does not record the newest id a trim removed, so an `after` older than the oldest
        entry held, once anything was trimmed, counts as lost: the cost of a wrong guess is one `reset`.)"""
        try:
            info = await self._client.call("XINFO", "STREAM", self._events)
        except ReplyError:  # no stream yet: nothing was ever published
            return None if after != (0, 0) else []
        fields = dict(zip(info[::2], info[1::2]))
        first = parse_id(fields.get(b"recorded-first-entry-id")) or (0, 0)
        last = parse_id(fields.get(b"last-generated-id")) or (0, 0)
        trimmed = int(fields.get(b"entries-added") or 0) > int(fields.get(b"length") or 0)
        if after > last or (trimmed and after < first):
            return None
        reply = await self._client.call("XRANGE", self._events, "(" + format_id(after), "+", "COUNT", self._maxlen)
        return _entries(reply)

    async def lead(self, name: str, owner: str, ttl: float) -> bool:
        key, ms = self._prefix + "lease:" + name, max(1, int(ttl * 1000))
        if await self._client.call("SET", key, owner, "PX", ms, "NX") == "OK":
            return True
        return bool(await self._client.call("EVAL", _RENEW, 1, key, owner, ms))

    async def put_ticket(self, ticket: str, value: bytes, ttl: float) -> None:
        await self._client.call("SET", self._prefix + "ticket:" + ticket, value, "PX", max(1, int(ttl * 1000)))

    async def take_ticket(self, ticket: str) -> bytes | None:
        return await self._client.call("GETDEL", self._prefix + "ticket:" + ticket)

    async def get_value(self, name: str) -> str | None:
        raw = await self._client.call("GET", self._prefix + name)
        return raw.decode() if raw is not None else None

    async def set_value(self, name: str, value: str) -> None:
        await self._client.call("SET", self._prefix + name, value, "PX", 86_400_000)

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._blocking is not None:
            await self._blocking.aclose()


def _entries(raw: list) -> list[tuple[EventId, Event]]:
    out = []
    for raw_id, fields in raw:
        values = dict(zip(fields[::2], fields[1::2]))
        out.append((parse_id(raw_id), json.loads(values[b"e"])))
    return out


Bus = MemoryBus | RedisBus


# --- who sees what -------------------------------------------------------------------------------------------

def visible(principal: Principal, event: Event) -> bool:
    """Whether an event concerns this subscriber: dispatchers see their own area only; bills (which have no area)
    only billers and admins."""
    kind = event.get("type")
    if kind == "scan":
        return sees_all_areas(principal) or event["data"].get("dispatch_area") == principal.dispatch_area
    if kind == "bill":
        return sees_all_areas(principal)
    if kind == "stats":
        if sees_all_areas(principal):
            return True
        return principal.dispatch_area in event.get("areas", ())
    return False


# --- tickets -------------------------------------------------------------------------------------------------

def _ticket_key(ticket: str) -> str:
    # Stored by digest: whoever can read Redis cannot replay a ticket from the key names.
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue_ticket(bus: Bus, principal: Principal, expires: float, ttl: float) -> str:
    ticket = secrets.token_urlsafe(32)
    value = json.dumps({"user_id": principal.user_id, "username": principal.username, "role": principal.role,
                        "area": principal.dispatch_area, "exp": expires}).encode()
    await bus.put_ticket(_ticket_key(ticket), value, ttl)
    return ticket


async def redeem_ticket(bus: Bus, ticket: str) -> tuple[Principal, float] | None:
    """The identity a ticket was issued to and its token's expiry; None when unknown, used or expired."""
    if not ticket or len(ticket) > 100:
        return None
    raw = await bus.take_ticket(_ticket_key(ticket))
    if raw is None:
        return None
    data = json.loads(raw)
    if data["exp"] <= time.time():
        return None
    return Principal(data["user_id"], data["username"], data["role"], data["area"]), data["exp"]


# --- the replica's fan-out -----------------------------------------------------------------------------------

@dataclass(eq=False)
class Subscriber:
    principal: Principal
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=256))
    overflowed: bool = False
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # the replica drains: end with a retry hint


class Hub:
    """One reader of the bus per replica, handing each event to the subscribers that may see it."""

    def __init__(self, bus: Bus, *, block: float = 5.0) -> None:
        self.bus = bus
        self.block = block
        self.subscribers: set[Subscriber] = set()
        self.closing = False
        self._after: EventId | None = None

    def subscribe(self, principal: Principal) -> Subscriber:
        subscriber = Subscriber(principal)
        if self.closing:
            subscriber.closing.set()
        self.subscribers.add(subscriber)
        return subscriber

    def close_all(self) -> None:
        """The replica is draining (shared.drain): every stream, open or opening, ends with a hint to reconnect
        (to another replica, through the balancer), resuming by Last-Event-ID."""
        self.closing = True
        for subscriber in list(self.subscribers):
            subscriber.closing.set()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def run(self, _app=None) -> None:
        """Read the bus for ever (a background job: cancelled at shutdown); a Redis failure waits a second."""
        while True:
            try:
                if self._after is None:
                    self._after = await self.bus.last_id()
                for event_id, event in await self.bus.read_after(self._after, self.block):
                    self._after = event_id
                    self.deliver(event_id, event)
            except (RedisError, OSError) as exc:
                log.warning("event bus unreachable: %s", exc)
                await asyncio.sleep(1.0)

    def deliver(self, event_id: EventId, event: Event) -> None:
        for subscriber in list(self.subscribers):
            if not visible(subscriber.principal, event):
                continue
            try:
                subscriber.queue.put_nowait((event_id, event))
            except asyncio.QueueFull:
                # A client that cannot keep up is cut off; it reconnects with Last-Event-ID and replays.
                subscriber.overflowed = True


def sse(event: str, data: Any, event_id: EventId | None = None) -> bytes:
    lines = [] if event_id is None else [f"id: {format_id(event_id)}"]
    lines += [f"event: {event}", "data: " + json.dumps(data, separators=(",", ":"), default=str)]
    return ("\n".join(lines) + "\n\n").encode()


async def event_stream(*, hub: Hub, principal: Principal, expires: float, last_event_id: EventId | None,
                       render_stats: Callable[[Principal], Awaitable[dict]], heartbeat: float,
                       retry_ms: int) -> AsyncIterator[bytes]:
    """One subscriber's stream: a retry hint, the replay after Last-Event-ID (or a reset), a stats snapshot, then
    live events, heartbeats while nothing happens, and an `expired` event when the token expires."""
    subscriber = hub.subscribe(principal)
    try:
        # The heartbeat's period, as a comment (other clients ignore it): the web app reopens a stream that has
        # been silent for three periods, the only sign of a connection that died without closing (patchy Wi-Fi).
        yield f"retry: {retry_ms}\n: heartbeat {heartbeat:g}\n\n".encode()
        sent = last_event_id or (0, 0)
        backlog: list[tuple[EventId, Event]] = []
        if last_event_id is not None:
            try:
                replay = await hub.bus.since(last_event_id)
            except RedisError:  # the replay buffer is away: say so, the page reloads its state
                replay = None
            if replay is None:
                yield sse("reset", {"reason": "the events after Last-Event-ID are no longer held"})
            else:
                backlog = [(i, e) for i, e in replay if visible(principal, e)]
        try:
            head = await hub.bus.last_id()
        except RedisError:
            head = sent
        # The snapshot carries the bus position it reflects, so a reconnect resumes from there.
        yield sse("stats", await render_stats(principal), max(head, sent))
        sent = max(head, sent)
        for event_id, event in backlog:
            if event["type"] != "stats":  # the snapshot just sent is newer than any replayed stats
                yield sse(event["type"], event["data"], event_id)
        while True:
            remaining = expires - time.time()
            if remaining <= 0:
                yield sse("expired", {"detail": "the access token this stream was opened with has expired"})
                return
            if subscriber.overflowed:
                return
            if subscriber.closing.is_set():
                yield f"retry: {retry_ms}\n\n".encode() + sse("reconnect", {"detail": "this replica is restarting: "
                                                                            "reconnect with Last-Event-ID"})
                return
            try:
                event_id, event = await _next_event(subscriber, min(heartbeat, remaining))
            except TimeoutError:
                if time.time() < expires and not subscriber.closing.is_set():
                    yield b": keep-alive\n\n"
                continue
            if event_id <= sent:
                continue
            if event["type"] == "stats":
                # Several changes queued: one snapshot answers them all.
                while not subscriber.queue.empty():
                    peek_id, peek = subscriber.queue.get_nowait()
                    if peek["type"] != "stats":
                        yield sse(peek["type"], peek["data"], peek_id)
                    event_id = max(event_id, peek_id)
                yield sse("stats", await render_stats(principal), event_id)
            else:
                yield sse(event["type"], event["data"], event_id)
            sent = event_id
    finally:
        hub.unsubscribe(subscriber)


async def _next_event(subscriber: Subscriber, timeout: float) -> tuple[EventId, Event]:
    """The subscriber's next event within `timeout` (TimeoutError otherwise, or as soon as it is closing)."""
    if not subscriber.queue.empty():
        return subscriber.queue.get_nowait()
    getting = asyncio.ensure_future(subscriber.queue.get())
    closing = asyncio.ensure_future(subscriber.closing.wait())
    try:
        done, _ = await asyncio.wait((getting, closing), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
        if not getting.done():
            getting.cancel()
    if getting in done:
        return getting.result()
    raise TimeoutError


# --- the poller ----------------------------------------------------------------------------------------------

@dataclass
class Feed:
    """One source's feed the poller follows: where it is, how to read what is new, what to publish.

    Ids are handed out before commit, so a row can become visible after a higher id already was: each tick reads
    the page after `cursor - lookback` (not after `cursor`) and publishes what it has not published yet."""

    name: str  # the cursor's name in the bus
    fetch: Callable[[int | None], Awaitable[dict]]  # after_id -> {items (newest first), latest_id}
    on_new: Callable[[list[dict]], Awaitable[None]]  # publish events for these items (oldest first)
    cursor: int | None = None
    lookback: int = 100
    seen: deque = field(default_factory=lambda: deque(maxlen=2000))
    floor: int = 0  # ids at or below this were settled before this process led: never published by it

    def reset(self) -> None:
        self.cursor, self.floor = None, 0
        self.seen.clear()


class Poller:
    """Whoever holds the lease follows each feed and publishes what is new; the others wait their turn."""

    def __init__(self, bus: Bus, feeds: list[Feed], *, lease: float = 3.0) -> None:
        self.bus = bus
        self.feeds = feeds
        self.lease = lease
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.leading = False

    async def tick(self, _app=None) -> None:
        try:
            self.leading = await self.bus.lead("poller", self.owner, self.lease)
        except RedisError as exc:
            self.leading = False
            log.warning("cannot take the poller lease: %s", exc)
            return
        if not self.leading:
            for feed in self.feeds:
                feed.reset()  # another replica leads: start again from its cursor when this one takes over
            return
        for feed in self.feeds:
            try:
                await self._follow(feed)
            except Exception as exc:  # one source down must not stop the other's events
                log.info("feed %s not followed this tick: %s", feed.name, exc)

    async def _follow(self, feed: Feed) -> None:
        if feed.cursor is None:
            stored = await self.bus.get_value("cursor:" + feed.name)
            if stored and stored.isdigit():
                feed.cursor = feed.floor = int(stored)
        if feed.cursor is None:
            # First tick ever: start from now, replaying nothing old.
            body = await feed.fetch(None)
            feed.cursor = feed.floor = int(body.get("latest_id") or 0)
            await self.bus.set_value("cursor:" + feed.name, str(feed.cursor))
            return
        body = await feed.fetch(max(0, feed.cursor - feed.lookback))
        if int(body.get("latest_id") or 0) < feed.floor:  # the source's data was reset: follow it from now
            feed.reset()
            return
        seen = set(feed.seen)
        items = sorted((item for item in body.get("items", ()) if item["id"] > feed.floor and item["id"] not in seen),
                       key=lambda item: item["id"])
        if not items:
            return
        await feed.on_new(items)
        feed.seen.extend(item["id"] for item in items)
        feed.cursor = max(feed.cursor, items[-1]["id"])
        await self.bus.set_value("cursor:" + feed.name, str(feed.cursor))


# --- wiring (the dashboard app's start-up hook and jobs) ----------------------------------------------------

@dataclass
class Live:
    """What the stream routes need, on app.state.stream."""

    bus: Bus
    hub: Hub
    poller: Poller
    render_stats: Callable[[Principal], Awaitable[dict]]
    heartbeat: float
    retry_ms: int
    ticket_ttl: float
    stats_interval: float = 1.0
    dirty_areas: set = field(default_factory=set)  # areas with new scans since the last stats refresh
    dirty_billing: bool = False
    flushed_at: float = 0.0


def _feed(app, name: str, source: str, path: str, publish: Callable[[list[dict]], Awaitable[None]]) -> Feed:
    async def fetch(after: int | None) -> dict:
        return await get_json(source_client(app, source), path, params={"limit": 200, "after_id": after},
                              timeout=app.state.settings.refresh_timeout)

    return Feed(name, fetch, publish)


def _scan_feed(app) -> Feed:
    async def on_new(items: list[dict]) -> None:
        live = app.state.stream
        for item in items:
            await live.bus.publish({"type": "scan", "data": item})
        live.dirty_areas.update(item["dispatch_area"] for item in items)

    return _feed(app, "scans", "scanning", "/internal/scans", on_new)


def _bill_feed(app) -> Feed:
    async def on_new(items: list[dict]) -> None:
        live = app.state.stream
        for item in items:
            await live.bus.publish({"type": "bill", "data": item})
        live.dirty_billing = True

    return _feed(app, "bills", "billing", "/internal/bills/events", on_new)


async def flush_changes(app) -> None:
    """Refresh the stats parts new activity changed, then say so with one `stats` event; at most once every
    DASHBOARD_STREAM_STATS_INTERVAL, so a busy shift (every area changing every tick) costs the sources one stats
    call per area per interval, not one per scan. Activity parts are left to their ttl: the stream carries the new
    items themselves."""
    live = app.state.stream
    now = time.monotonic()
    if not (live.dirty_areas or live.dirty_billing) or now - live.flushed_at < live.stats_interval:
        return
    areas, billing = sorted(live.dirty_areas), live.dirty_billing
    live.dirty_areas, live.dirty_billing, live.flushed_at = set(), False, now
    # A bill changes billing's counts and scanning's billed-today (each area's part shows it at its next refresh,
    # within its ttl; the all-areas part now).
    wanted = {keys.scan_stats_key(area) for area in areas}
    if areas or billing:
        wanted.add(keys.scan_stats_key(None))
    if billing:
        wanted.add(keys.bill_stats_key())
    await _refresh(app, wanted)
    await live.bus.publish({"type": "stats", "areas": areas, "billing": billing})


async def _refresh(app, wanted: set[str]) -> None:
    """Refresh these parts now, together; a source that fails leaves its parts as they were (marked by the store)."""
    results = await asyncio.gather(*(app.state.dashboard.refresh(key) for key in sorted(wanted)),
                                   return_exceptions=True)
    for key, result in zip(sorted(wanted), results):
        if isinstance(result, Exception):
            log.info("refreshing %s after new activity failed: %s", key, result)


async def build_stream(app) -> None:
    """Start-up hook (after the dashboard's own): the bus, this replica's hub and its poller on app.state.stream."""
    settings = app.state.settings
    bus: Bus = (RedisBus(settings.redis_url, maxlen=settings.stream_replay) if settings.redis_url
                else MemoryBus(settings.stream_replay))
    app.state.stream = Live(bus=bus, hub=Hub(bus), poller=Poller(bus, [_scan_feed(app), _bill_feed(app)]),
                            render_stats=app.state.dashboard.stats_body, heartbeat=settings.stream_heartbeat,
                            retry_ms=int(settings.stream_retry * 1000), ticket_ttl=settings.stream_ticket_ttl,
                            stats_interval=settings.stream_stats_interval)


async def run_hub(app) -> None:
    """Job: this replica's one reader of the bus (runs until shutdown); a drain (SIGTERM) ends the streams."""
    hub = app.state.stream.hub
    forget = drain.on_drain(hub.close_all)
    try:
        await hub.run()
    finally:
        forget()
        await app.state.stream.bus.aclose()


async def poll(app) -> None:
    """Job: follow the sources' feeds if this replica holds the lease, and publish what changed."""
    live = app.state.stream
    if not app.state.settings.stream_follow:
        return
    await live.poller.tick()
    if live.poller.leading:
        await flush_changes(app)
