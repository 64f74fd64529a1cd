"""The load generator's own rules: loopback only, what counts as success, how percentiles are read."""
from __future__ import annotations

import pytest

from bench.loadtest.__main__ import loopback_only, main
from bench.loadtest.report import Stats, is_success, percentile


@pytest.mark.parametrize("url", ["http://10.0.0.8:8080", "http://example.com", "http://192.168.1.1"])
def test_it_refuses_anything_but_loopback(url):
    with pytest.raises(SystemExit, match="loopback|resolve"):
        loopback_only(url)


def test_loopback_names_and_addresses_are_accepted():
    for url in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        loopback_only(url)


@pytest.mark.parametrize("outcome,ok", [
    ("200", True), ("204", True), ("403", True), ("404", True), ("409", True), ("422", True),
    ("401", False), ("429", False), ("500", False), ("503", False), ("504", False), ("400", False),
    ("timeout", False), ("ClientConnectorError", False), ("0", False),
])
def test_deliberate_answers_succeed_and_everything_else_fails(outcome, ok):
    assert is_success(outcome) is ok


def test_percentiles_are_nearest_rank_over_every_sample():
    samples = sorted(float(i) for i in range(1, 101))
    assert (percentile(samples, 50), percentile(samples, 95), percentile(samples, 99)) == (50.0, 95.0, 99.0)
    assert percentile([], 95) == 0.0


def test_only_the_measured_window_is_recorded():
    stats = Stats()
    stats.record("GET /x", "200", 0.1)  # during the ramp
    stats.begin()
    stats.record("GET /x", "200", 0.2)
    stats.record("GET /x", "503", 0.3)
    stats.end()
    stats.record("GET /x", "200", 0.4)  # after the window
    assert stats.counts() == (2, 1) and stats.latency["GET /x"] == [0.2, 0.3]


def test_a_run_against_a_remote_address_stops_before_sending_anything(capsys):
    with pytest.raises(SystemExit):
        main(["--url", "http://203.0.113.5:8080", "--users", "1", "--duration", "1"])


def test_the_users_client_reads_sized_and_chunked_answers_and_reconnects_after_a_close():
    import asyncio

    from bench.loadtest.wire import Wire

    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
               b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
               b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
               b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"]
    connections = []

    async def main():
        async def serve(reader, writer):
            connections.append(writer)
            while answers:
                request = await reader.readuntil(b"\r\n\r\n")
                assert request.startswith((b"GET /api/v1/x", b"POST /api/v1/x"))
                length = int(request.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                answer = answers.pop(0)
                writer.write(answer)
                if b"Connection: close" in answer:
                    writer.close()
                    return

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        wire = Wire(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1", timeout=2)
        try:
            got = [await wire.request("GET", "/x"), await wire.request("POST", "/x", body={"a": 1}),
                   await wire.request("GET", "/x", params={"q": "1"}), await wire.request("GET", "/x")]
        finally:
            wire.close()
            server.close()
        return got

    assert asyncio.run(main()) == [(200, b"hello"), (409, b"abcde"), (503, b""), (204, b"")]
    assert len(connections) == 2  # a new connection after the server said "close"


def test_the_shift_mix_has_dispatchers_billers_viewers_and_lookups():
    import argparse

    from bench.loadtest.__main__ import mix, user_kinds
    from bench.loadtest.workload import Biller, Dispatcher, Lookup, Viewer

    args = argparse.Namespace(users=200, dispatchers=0.6, billers=0.1, viewers=0.1, think=1.0, dashboard_every=10.0)
    assert mix(args) == (120, 20, 20, 40)
    kinds = user_kinds(args, ["d"], ["l"], ["b"])
    names = [kind for kind, _, _ in kinds]
    assert (names.count(Dispatcher), names.count(Biller), names.count(Viewer), names.count(Lookup)) == (120, 20, 20, 40)
    viewers = [(pool, think) for kind, pool, think in kinds if kind is Viewer]
    assert {think for _, think in viewers} == {10.0}  # a dashboard reloads every ~10 s, not every second
    assert [pool for pool, _ in viewers].count(["d"]) == 10  # half see one area's dashboard, half every area's
    assert {think for kind, _, think in kinds if kind is not Viewer} == {1.0}
    # Each share takes only what the earlier ones leave; lookups get the rest, possibly none.
    assert mix(argparse.Namespace(users=10, dispatchers=0.95, billers=0.5, viewers=0.5)) == (10, 0, 0, 0)
    assert mix(argparse.Namespace(users=3, dispatchers=0.0, billers=1.0)) == (0, 3, 0, 0)
    assert mix(argparse.Namespace(users=10, dispatchers=0.5, billers=0.0, viewers=1.0)) == (5, 0, 5, 0)


def test_a_biller_loads_finished_parents_completes_a_full_bill_and_starts_the_next():
    """A biller against a fake system: create, add what dispatchers finished, complete when full, create again."""
    import asyncio
    import random

    from bench.loadtest.accounts import Account
    from bench.loadtest.workload import Biller, Shared

    calls = []

    class FakeWire:
        async def request(self, method, path, *, body=None, params=None, headers=None):
            calls.append((method, path))
            if path == "/bills" and method == "POST":
                return 201, b'{"bill_id": "BILL_X_%d", "linked_count": 0}' % len(calls)
            if path.endswith("/bags"):
                n = sum(1 for m, p in calls if p.endswith("/bags") and p.split("/")[2] == path.split("/")[2])
                return 201, b'{"linked_count": %d}' % n
            if path.endswith("/complete"):
                return 200, b'{}'
            return 200, b'{"linked_count": 0}'

    class FakeAccounts:
        run_id = "T"

        async def ensure_fresh(self, account):
            pass

    shared = Shared()
    shared.finished_parents.extend(f"SB{i:05d}" for i in range(100))
    stats = Stats()
    stats.begin()
    loop = asyncio.new_event_loop()
    stop_at = loop.time() + 1e9
    user = Biller(0, Account("b", "biller", None), wire=FakeWire(), accounts=FakeAccounts(), stats=stats,
                  shared=shared, think=0.0001, stop_at=stop_at, rng=random.Random(1))

    async def run_a_while():
        import time
        user.stop_at = time.monotonic() + 0.5
        await user.run()

    loop.run_until_complete(run_a_while())
    loop.close()
    labels = set(stats.latency)
    assert {"POST /bills", "POST /bills/{id}/bags", "POST /bills/{id}/complete"} <= labels
    creates = [i for i, (m, p) in enumerate(calls) if (m, p) == ("POST", "/bills")]
    completes = [i for i, (m, p) in enumerate(calls) if p.endswith("/complete")]
    assert len(creates) >= 2 and completes and completes[0] < creates[1]  # the next bill after completing one
    added = [p for m, p in calls if p.endswith("/bags")]
    assert len(shared.finished_parents) == 100 - len(added)  # each finished parent offered once
