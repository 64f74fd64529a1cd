"""The live dashboard's moving parts on their own: the bus (in memory and on a real Redis), tickets, the lease,
who sees which event, and one subscriber's stream (replay, reset, heartbeat, expiry)."""
from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest

from services.dashboard.stream import (Feed, Hub, MemoryBus, Poller, RedisBus, event_stream, issue_ticket,
                                       parse_id, redeem_ticket, visible)
from shared.resp import RespClient
from shared.security import Principal
from tests.support import require_redis

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN = Principal(1, "boss", "admin", None)
BILLER = Principal(31, "bina", "biller", None)
JAIPUR = Principal(11, "jai", "dispatcher", "jaipur")
DELHI = Principal(12, "dev", "dispatcher", "delhi")


def scan(area: str, n: int = 1) -> dict:
    return {"type": "scan", "data": {"id": n, "dispatch_area": area, "parent_qr": f"SB{n:05d}"}}


@pytest.fixture(params=["memory", "redis"])
def make_bus(request):
    """A factory of buses of one kind; Redis ones under a private key prefix, deleted afterwards."""
    prefix = f"bagtrack:test-stream:{secrets.token_hex(4)}:"
    if request.param == "redis":
        require_redis()

    def make(maxlen: int = 100):
        return MemoryBus(maxlen) if request.param == "memory" else RedisBus(REDIS_URL, maxlen=maxlen, prefix=prefix)

    yield make
    if request.param == "redis":
        async def clean() -> None:
            client = RespClient(REDIS_URL)
            keys = await client.call("KEYS", prefix + "*")
            if keys:
                await client.call("DEL", *keys)
            await client.aclose()
        asyncio.run(clean())


def run(coro):
    return asyncio.run(coro)


def test_events_come_back_in_order_after_an_id(make_bus):
    async def main():
        bus = make_bus()
        assert await bus.since((0, 0)) == []
        ids = [await bus.publish(scan("jaipur", n)) for n in range(1, 6)]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert await bus.last_id() == ids[-1]
        after = await bus.since(ids[1])
        assert [event["data"]["id"] for _, event in after] == [3, 4, 5]
        assert await bus.since(ids[-1]) == []
        assert [e["data"]["id"] for _, e in await bus.read_after(ids[2], block=0.1)] == [4, 5]
        await bus.aclose()
    run(main())


def test_a_read_blocks_until_something_is_published(make_bus):
    async def main():
        bus, publisher = make_bus(), make_bus()
        head = await bus.last_id()
        reader = asyncio.create_task(bus.read_after(head, block=3.0))
        await asyncio.sleep(0.2)
        assert not reader.done()
        if isinstance(bus, MemoryBus):
            publisher = bus  # one process's bus is the same object
        await publisher.publish(scan("delhi", 7))
        events = await asyncio.wait_for(reader, 2.0)
        assert [e["data"]["id"] for _, e in events] == [7]
        await bus.aclose()
        await publisher.aclose()
    run(main())


def test_an_id_older_than_the_buffer_or_not_ours_is_a_reset(make_bus):
    async def main():
        bus = make_bus(maxlen=3)
        first = await bus.publish(scan("jaipur", 1))
        for n in range(2, 250):  # Redis trims MAXLEN ~ by whole nodes (100 entries): publish well past them
            await bus.publish(scan("jaipur", n))
        assert await bus.since(first) is None
        future = (int(time.time() * 1000) + 60_000, 0)
        assert await bus.since(future) is None
        last = await bus.last_id()
        assert await bus.since(last) == []
        await bus.aclose()
    run(main())


def test_a_ticket_works_once_and_carries_the_identity(make_bus):
    async def main():
        bus = make_bus()
        expires = time.time() + 600
        ticket = await issue_ticket(bus, JAIPUR, expires, ttl=30)
        assert len(ticket) >= 40
        assert await redeem_ticket(bus, ticket) == (JAIPUR, expires)
        assert await redeem_ticket(bus, ticket) is None  # single use
        assert await redeem_ticket(bus, "made-up") is None
        short = await issue_ticket(bus, JAIPUR, expires, ttl=0.05)
        await asyncio.sleep(0.2)
        assert await redeem_ticket(bus, short) is None  # expired unused
        stale = await issue_ticket(bus, JAIPUR, time.time() - 1, ttl=30)
        assert await redeem_ticket(bus, stale) is None  # the token behind it has expired
        await bus.aclose()
    run(main())


def test_one_poller_leads_and_another_takes_over_when_the_lease_lapses(make_bus):
    async def main():
        bus = make_bus()
        other = bus if isinstance(bus, MemoryBus) else make_bus()
        assert await bus.lead("poller", "a", ttl=0.3)
        assert not await other.lead("poller", "b", ttl=0.3)
        assert await bus.lead("poller", "a", ttl=0.3)  # renewing its own
        await asyncio.sleep(0.45)
        assert await other.lead("poller", "b", ttl=0.3)
        assert not await bus.lead("poller", "a", ttl=0.3)
        await bus.aclose()
        if other is not bus:
            await other.aclose()
    run(main())


def test_who_sees_which_event():
    assert visible(JAIPUR, scan("jaipur")) and not visible(JAIPUR, scan("delhi"))
    assert visible(ADMIN, scan("delhi")) and visible(BILLER, scan("delhi"))
    bill = {"type": "bill", "data": {"id": 1, "bill_id": "BILL_1"}}
    assert visible(BILLER, bill) and visible(ADMIN, bill) and not visible(JAIPUR, bill)
    assert visible(JAIPUR, {"type": "stats", "areas": ["jaipur"]})
    assert not visible(DELHI, {"type": "stats", "areas": ["jaipur"]})
    assert not visible(DELHI, {"type": "stats", "areas": [], "billing": True})
    assert visible(BILLER, {"type": "stats", "areas": [], "billing": True})


def test_parse_id_accepts_only_stream_ids():
    assert parse_id("1700000000000-3") == (1700000000000, 3)
    for bad in ("", "abc", "12", "1-", "-1", "1-2-3", "1" * 50 + "-1", None):
        assert parse_id(bad) is None


async def _collect(agen, count: int, timeout: float = 5.0) -> list[tuple[str, dict | None, str | None]]:
    """The next `count` messages of an SSE byte stream as (event, data, id); comments as ("comment", None, None)."""
    out = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            chunk = (await agen.__anext__()).decode()
            if chunk.startswith(":"):
                out.append(("comment", None, None))
                continue
            fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines() if ": " in line)
            if "retry" in fields:
                out.append(("retry", None, None))
                continue
            out.append((fields.get("event"), json.loads(fields["data"]), fields.get("id")))
    return out


def test_a_dispatcher_stream_shows_their_area_only_with_a_snapshot_first():
    async def main():
        bus = MemoryBus(100)
        hub = Hub(bus, block=0.2)
        reader = asyncio.create_task(hub.run())
        rendered = []

        async def render(principal):
            rendered.append(principal.username)
            return {"for": principal.username, "n": len(rendered)}

        stream = event_stream(hub=hub, principal=JAIPUR, expires=time.time() + 60, last_event_id=None,
                              render_stats=render, heartbeat=5, retry_ms=2000)
        head = await _collect(stream, 2)
        assert head[0][0] == "retry" and head[1][0] == "stats" and head[1][1]["for"] == "jai"
        await asyncio.sleep(0.05)
        await bus.publish(scan("delhi", 1))
        await bus.publish(scan("jaipur", 2))
        await bus.publish({"type": "bill", "data": {"id": 9}})
        await bus.publish({"type": "stats", "areas": ["jaipur"]})
        got = await _collect(stream, 2)
        assert [(kind, data.get("id", data.get("n"))) for kind, data, _ in got] == [("scan", 2), ("stats", 2)]
        assert parse_id(got[0][2]) < parse_id(got[1][2])
        await stream.aclose()
        assert not hub.subscribers  # closing the stream unsubscribes it
        reader.cancel()
    run(main())


def test_last_event_id_replays_what_was_missed_and_an_old_one_resets():
    async def main():
        bus = MemoryBus(5)
        hub = Hub(bus, block=0.2)
        first = await bus.publish(scan("jaipur", 1))
        second = await bus.publish(scan("jaipur", 2))
        await bus.publish(scan("delhi", 3))
        await bus.publish(scan("jaipur", 4))

        async def render(principal):
            return {}

        resumed = event_stream(hub=hub, principal=JAIPUR, expires=time.time() + 60, last_event_id=second,
                               render_stats=render, heartbeat=5, retry_ms=2000)
        got = await _collect(resumed, 3)
        assert [g[0] for g in got] == ["retry", "stats", "scan"] and got[2][1]["id"] == 4
        await resumed.aclose()
        for n in range(5, 12):
            await bus.publish(scan("jaipur", n))
        old = event_stream(hub=hub, principal=JAIPUR, expires=time.time() + 60, last_event_id=first,
                           render_stats=render, heartbeat=5, retry_ms=2000)
        got = await _collect(old, 3)
        assert [g[0] for g in got] == ["retry", "reset", "stats"]
        await old.aclose()
    run(main())


def test_heartbeats_while_quiet_and_the_stream_ends_when_the_token_expires():
    async def main():
        hub = Hub(MemoryBus(10), block=0.2)

        async def render(principal):
            return {}

        stream = event_stream(hub=hub, principal=ADMIN, expires=time.time() + 0.7, last_event_id=None,
                              render_stats=render, heartbeat=0.2, retry_ms=2000)
        got = await _collect(stream, 5)
        assert [g[0] for g in got[:4]] == ["retry", "stats", "comment", "comment"]
        rest = [chunk async for chunk in stream]
        assert b"event: expired" in b"".join(rest) or got[-1][0] == "expired"
    run(main())


def test_the_poller_publishes_new_items_once_from_where_it_left_off():
    async def main():
        bus = MemoryBus(100)
        rows = [{"id": 1, "dispatch_area": "jaipur"}]
        calls = []

        async def fetch(after):
            calls.append(after)
            newer = [r for r in rows if after is None or r["id"] > after]
            return {"items": sorted(newer, key=lambda r: -r["id"]), "latest_id": max(r["id"] for r in rows)}

        published = []

        async def on_new(items):
            published.extend(item["id"] for item in items)

        leader = Poller(bus, [Feed("scans", fetch, on_new, lookback=10)])
        follower = Poller(bus, [Feed("scans", fetch, on_new, lookback=10)])
        await leader.tick()
        assert published == []  # the first tick starts from now: nothing old is replayed
        rows += [{"id": 2, "dispatch_area": "jaipur"}, {"id": 4, "dispatch_area": "delhi"}]
        await follower.tick()  # not the leader: asks nothing
        await leader.tick()
        await leader.tick()
        assert published == [2, 4] and leader.leading and not follower.leading
        rows.append({"id": 3, "dispatch_area": "delhi"})  # id 3 committed after id 4 was seen
        await leader.tick()
        assert published == [2, 4, 3]  # published late, once
        await leader.tick()
        assert published == [2, 4, 3]
        assert calls[0] is None and all(after == 0 for after in calls[1:])  # the window reaches back `lookback`
    run(main())


def test_a_draining_replica_ends_every_stream_with_a_retry_hint():
    """Hub.close_all (run by shared.drain on SIGTERM): open streams get `retry:` and a `reconnect` event and end;
    one opened while draining ends at once, after its snapshot."""
    async def render(_principal) -> dict:
        return {"parts": {}}

    async def main() -> tuple[list[bytes], list[bytes]]:
        hub = Hub(MemoryBus(10))
        who = Principal(1, "d", "dispatcher", "jaipur")

        async def read() -> list[bytes]:
            return [chunk async for chunk in event_stream(hub=hub, principal=who, expires=time.time() + 60,
                                                          last_event_id=None, render_stats=render, heartbeat=5,
                                                          retry_ms=1500)]

        open_one = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        hub.close_all()
        first = await asyncio.wait_for(open_one, 2)
        late = await asyncio.wait_for(read(), 2)
        return first, late

    for chunks in asyncio.run(main()):
        text = b"".join(chunks).decode()
        assert text.startswith("retry: 1500") and "event: stats" in text
        assert text.rstrip().endswith("}") and "event: reconnect" in text.split("event: stats")[1]
        assert "retry: 1500" in text.split("event: stats")[1]
