"""shared.proxies: the trusted list, the right-to-left walk of X-Forwarded-For, the ASGI middleware, the defaults."""
from __future__ import annotations

import asyncio

import pytest

from gateway.config import GatewaySettings
from services.auth.config import Settings as AuthSettings
from shared.proxies import (ClientAddressMiddleware, parse_address, parse_trusted, resolve_client, trust_checker,
                            trusted_proxies)

PROXIES = trust_checker(parse_trusted("10.0.0.0/8, 192.0.2.10, 2001:db8:f::/48"))


def resolve(peer: str, forwarded_for: str | None) -> str:
    return resolve_client(peer, forwarded_for, PROXIES)


def test_a_trusted_proxy_names_the_client():
    assert resolve("10.1.2.3", "203.0.113.7") == "203.0.113.7"


def test_an_untrusted_peer_is_the_client_whatever_it_forges():
    assert resolve("198.51.100.4", "203.0.113.7") == "198.51.100.4"
    assert resolve("198.51.100.4", "10.1.2.3, 192.0.2.10") == "198.51.100.4"


def test_a_trusted_proxy_without_a_header_is_the_client():
    assert resolve("10.1.2.3", None) == "10.1.2.3"
    assert resolve("10.1.2.3", "") == "10.1.2.3"


def test_the_walk_goes_right_to_left_past_trusted_proxies_to_the_first_untrusted_address():
    # The client forged the two left-most entries; only what the proxies appended is vouched for.
    assert resolve("10.1.2.3", "1.1.1.1, 8.8.8.8, 203.0.113.7, 192.0.2.10, 10.9.9.9") == "203.0.113.7"


def test_a_chain_of_trusted_proxies_only_names_its_left_most_entry():
    assert resolve("10.1.2.3", "10.4.4.4, 192.0.2.10") == "10.4.4.4"


@pytest.mark.parametrize("forwarded_for, client", [
    ("203.0.113.7, unknown", "10.1.2.3"),                # malformed right-most entry: the peer is the last good one
    ("203.0.113.7, garbage, 10.5.5.5", "10.5.5.5"),      # the walk stops at the trusted proxy before it
    ("203.0.113.7, 10.5.5.5, , 10.6.6.6", "10.6.6.6"),   # an empty entry is malformed too
    ("999.1.1.1", "10.1.2.3"),
])
def test_a_malformed_entry_stops_the_walk_at_the_last_good_address(forwarded_for, client):
    assert resolve("10.1.2.3", forwarded_for) == client


def test_ipv6_peers_and_entries_are_walked_like_ipv4_ones():
    assert resolve("2001:db8:f::1", "2001:db8:1::7, 2001:db8:f:ab::2") == "2001:db8:1::7"
    assert resolve("2001:db8:1::1", "203.0.113.7") == "2001:db8:1::1"
    assert resolve("10.1.2.3", "[2001:DB8:0:0::7]:4711") == "2001:db8::7"  # normalised: one key per client


@pytest.mark.parametrize("text, address", [
    ("203.0.113.7", "203.0.113.7"), (" 203.0.113.7:5123 ", "203.0.113.7"), ("[2001:db8::1]:443", "2001:db8::1"),
    ("2001:db8::1", "2001:db8::1"), ("::ffff:203.0.113.7", "203.0.113.7"),
    ("unknown", None), ("_hidden", None), ("", None), ("203.0.113.7:x:y", None),
])
def test_an_entry_is_an_address_with_an_optional_port_or_nothing(text, address):
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == address


def test_cidrs_cover_their_range_and_single_addresses_only_themselves():
    assert PROXIES(parse_address("10.255.255.255")) and not PROXIES(parse_address("11.0.0.1"))
    assert PROXIES(parse_address("192.0.2.10")) and not PROXIES(parse_address("192.0.2.11"))
    assert PROXIES(parse_address("2001:db8:f:ffff::1")) and not PROXIES(parse_address("2001:db8:10::1"))


def test_an_empty_list_trusts_nobody():
    assert parse_trusted("") == () and parse_trusted(" , ") == ()
    assert resolve_client("127.0.0.1", "203.0.113.7", trust_checker(())) == "127.0.0.1"


@pytest.mark.parametrize("value", ["*", "10.0.0.0/8, *", "10.0.0.0/33", "gateway", "10.0.0.0/8;192.0.2.1"])
def test_anything_but_ips_and_cidrs_is_refused_with_the_offending_entry(value):
    with pytest.raises(ValueError, match="is not an IP address or a CIDR"):
        parse_trusted(value)


def test_by_default_the_gateway_trusts_nobody_and_a_service_trusts_loopback(monkeypatch, tmp_path):
    for name in ("GATEWAY_TRUSTED_PROXIES", "AUTH_TRUSTED_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    gateway = trusted_proxies(GatewaySettings())
    service = trusted_proxies(AuthSettings(var_dir=tmp_path))
    for loopback in ("127.0.0.1", "::1"):
        assert not gateway(parse_address(loopback)) and service(parse_address(loopback))
    assert not service(parse_address("127.0.0.2"))  # a local process from another loopback address


def test_each_process_reads_its_own_trusted_list(monkeypatch, tmp_path):
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "172.28.1.0/24")
    monkeypatch.setenv("AUTH_TRUSTED_PROXIES", "172.28.2.0/24")
    gateway, auth = trusted_proxies(GatewaySettings()), trusted_proxies(AuthSettings(var_dir=tmp_path))
    assert gateway(parse_address("172.28.1.9")) and not gateway(parse_address("172.28.2.9"))
    assert auth(parse_address("172.28.2.9")) and not auth(parse_address("172.28.1.9"))


def seen_by_the_app(scope: dict) -> dict:
    """The scope an app behind the middleware (trusting PROXIES) is called with."""
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    asyncio.run(ClientAddressMiddleware(app, trusted=PROXIES)(scope, None, None))
    return seen


def http_scope(peer: tuple[str, int] | None, *headers: tuple[bytes, bytes]) -> dict:
    return {"type": "http", "scheme": "http", "client": peer, "headers": list(headers)}


def test_the_middleware_puts_the_resolved_client_and_scheme_into_the_scope():
    seen = seen_by_the_app(http_scope(("10.1.2.3", 5000), (b"x-forwarded-for", b"198.51.100.1"),
                                      (b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")))
    assert seen["client"] == ("203.0.113.7", 0) and seen["scheme"] == "https"


def test_the_middleware_leaves_an_untrusted_peer_and_its_claims_alone():
    seen = seen_by_the_app(http_scope(("198.51.100.4", 5000), (b"x-forwarded-for", b"203.0.113.7"),
                                      (b"x-forwarded-proto", b"https")))
    assert seen["client"] == ("198.51.100.4", 5000) and seen["scheme"] == "http"
    assert seen_by_the_app(http_scope(None, (b"x-forwarded-for", b"203.0.113.7")))["client"] is None
