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
