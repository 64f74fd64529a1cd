"""Who the client is: one rule for the gateway and every service, each hop trusting only its own proxies.

A request reaches a service through nginx (or an ingress controller) and the gateway, and each hop says who
its caller was in X-Forwarded-For. A hop believes that header only when the peer connected to it is a proxy
it was configured to trust (`trusted_proxies`, env <PREFIX>_TRUSTED_PROXIES: GATEWAY_, AUTH_, SCANNING_, ...);
otherwise anyone could name any client and spend, or escape, another client's per-IP limits. uvicorn's own
proxy-header handling is off everywhere (--no-proxy-headers), so this module is the only rule.
"""
from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Callable, Iterable

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Where the local gateway connects from under `make run` (scripts/stack.py: every process on 127.0.0.1).
LOOPBACK = "127.0.0.1, ::1"
_SCHEMES = frozenset({"http", "https"})


def parse_trusted(value: str) -> tuple[Network, ...]:
    """The networks of a comma-separated list of IPs and CIDRs (IPv4 or IPv6); empty means nobody.

    Anything else, "*" included, is refused rather than skipped: a process that will not start says what is
    wrong, while a silently dropped entry would believe (or ignore) the wrong peers in production."""
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"trusted proxies: {item!r} is not an IP address or a CIDR "
                             f"(name the proxies; '*' is not accepted)") from None
    return tuple(networks)


def trusted_proxies(settings) -> Callable[[IPAddress], bool]:
    """Whether an address is one of this process's trusted proxies, from its `trusted_proxies` setting.

    Unset, the `make run` defaults apply: the gateway is the edge there and trusts nobody; a service trusts
    loopback, where the local gateway connects from. Any local process can still reach a service directly and
    name any client: the services are internal, and in compose and Kubernetes only their own network reaches
    them (deploy/docker-compose.yml networks, deploy/k8s/networkpolicy.yaml)."""
    configured = settings.trusted_proxies
    if configured is None:
        configured = "" if settings.service_name == "gateway" else LOOPBACK
    return trust_checker(parse_trusted(configured))


def trust_checker(networks: Iterable[Network]) -> Callable[[IPAddress], bool]:
    """A membership test over `networks`, remembered per address: a process sees few distinct peers."""
    networks = tuple(networks)

    @lru_cache(maxsize=1024)
    def trusted(address: IPAddress) -> bool:
        return any(address in network for network in networks)

    return trusted


def parse_address(text: str) -> IPAddress | None:
    """One X-Forwarded-For entry as an address ("203.0.113.7", "203.0.113.7:5123", "[2001:db8::1]:443"), or
    None when it is not one ("unknown", an obfuscated name, garbage). IPv4-mapped IPv6 counts as IPv4, so one
    client never has two rate-limit keys."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has two or more colons
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def resolve_client(peer: str, forwarded_for: str | None, trusted: Callable[[IPAddress], bool]) -> str:
    """The client address of a request from `peer` carrying `forwarded_for` (X-Forwarded-For, all values).

    An untrusted peer is the client, whatever it claims. A trusted peer's list is walked right to left (each
    proxy appends the address it saw, so only the right end is vouched for), past trusted proxies, to the
    first untrusted address. A malformed entry stops the walk: everything left of it is unvouched for, so the
    last good address is the client. If every entry is trusted, the left-most is."""
    peer_address = parse_address(peer)
    if peer_address is None or not trusted(peer_address) or not forwarded_for:
        return peer
    client = peer_address
    for entry in reversed(forwarded_for.split(",")):
        address = parse_address(entry)
        if address is None:
            break
        client = address
        if not trusted(address):
            break
    return str(client)


class ClientAddressMiddleware:
    """Pure ASGI, outermost: puts the resolved client into scope["client"] (and a trusted proxy's
    X-Forwarded-Proto into scope["scheme"]) before anything else reads them."""

    def __init__(self, app, *, trusted: Callable[[IPAddress], bool]) -> None:
        self.app, self.trusted = app, trusted

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("client"):
            self._resolve(scope)
        await self.app(scope, receive, send)

    def _resolve(self, scope) -> None:
        peer, port = scope["client"]
        peer_address = parse_address(peer)
        if peer_address is None or not self.trusted(peer_address):
            return
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto" and (proto := value.decode("latin-1").strip().lower()) in _SCHEMES:
                scope["scheme"] = proto
        if forwarded:
            client = resolve_client(peer, ",".join(forwarded), self.trusted)
            if client != peer:
                scope["client"] = (client, 0)  # the client's own port is not known here
