"""shared.resp.RespClient against the real Redis, and against servers that misbehave on purpose."""
from __future__ import annotations

import asyncio

import pytest

from shared.resp import RedisError, ReplyError, RespClient
from tests.support import REDIS_URL, free_port, require_redis


@pytest.fixture
def url() -> str:
    require_redis()
    return REDIS_URL


def test_commands_pipelines_and_transactions_get_their_own_replies(url):
    async def main():
        client = RespClient(url)
        try:
            await client.call("DEL", "bt:resp:a", "bt:resp:n")
            assert await client.call("SET", "bt:resp:a", b"\x00binary\r\nvalue", "PX", 5000) == "OK"
            assert await client.call("GET", "bt:resp:a") == b"\x00binary\r\nvalue"
            assert await client.call("GET", "bt:resp:missing") is None
            replies = await client.pipeline([("INCR", "bt:resp:n"), ("INCR", "bt:resp:n"), ("LPUSH", "bt:resp:a", "x")])
            assert replies[:2] == [1, 2] and isinstance(replies[2], ReplyError)  # wrong type: a reply, not a raise
            multi = await client.pipeline([("MULTI",), ("INCR", "bt:resp:n"), ("PTTL", "bt:resp:n"), ("EXEC",)])
            assert multi == ["OK", "QUEUED", "QUEUED", [3, -1]]
            with pytest.raises(ReplyError, match="WRONGTYPE"):
                await client.call("LPUSH", "bt:resp:a", "x")
        finally:
            await client.aclose()

    asyncio.run(main())


def test_concurrent_callers_share_one_connection_and_each_gets_its_answer(url):
    async def main():
        client = RespClient(url)
        try:
            await client.pipeline([("SET", f"bt:resp:k{i}", f"v{i}") for i in range(200)])
            values = await asyncio.gather(*(client.call("GET", f"bt:resp:k{i}") for i in range(200)))
            assert values == [f"v{i}".encode() for i in range(200)]
            big = b"z" * 300_000  # arrives in many packets
            await client.call("SET", "bt:resp:big", big)
            assert await client.call("GET", "bt:resp:big") == big
        finally:
            await client.aclose()

    asyncio.run(main())


def test_nobody_listening_is_a_redis_error_not_a_hang():
    async def main():
        client = RespClient(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
        with pytest.raises(RedisError):
            await client.call("PING")

    asyncio.run(main())


def test_a_server_that_stops_answering_times_out_and_the_next_call_reconnects():
    """A fake Redis that answers PING once per connection, then hangs: every hang costs one timeout, and the
    client never reuses a connection whose replies it can no longer match to commands."""
    connections = []

    async def main():
        async def serve(reader, writer):
            connections.append(writer)
            await reader.readuntil(b"PING\r\n")
            writer.write(b"+PONG\r\n")
            await asyncio.sleep(10)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RespClient(f"redis://127.0.0.1:{port}/0", timeout=0.3)
        try:
            assert await client.call("PING") == "PONG"
            with pytest.raises(RedisError):
                await client.call("PING")
            assert await client.call("PING") == "PONG"  # on a new connection
            assert len(connections) == 2
        finally:
            await client.aclose()
            server.close()

    asyncio.run(main())


def test_something_that_is_not_redis_fails_the_waiting_command():
    async def main():
        async def serve(reader, writer):
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        client = RespClient(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0", timeout=1)
        try:
            with pytest.raises(RedisError):
                await client.call("PING")
        finally:
            await client.aclose()
            server.close()

    asyncio.run(main())


def test_only_redis_urls_are_accepted():
    with pytest.raises(ValueError, match="scheme"):
        RespClient("rediss://127.0.0.1:6380/0")
