"""The one list of bagtrack's services, with where each listens on loopback by default.

Everything that needs the list (settings' upstream URLs, migrations, the local stack, the gateway's routes, the
load generator) reads it here.
"""
from __future__ import annotations

SERVICES = ("auth", "scanning", "billing", "dashboard")
GATEWAY_PORT = 8080
GATEWAY_OPS_PORT = 8081  # the gateway's /ready and /metrics (never published); locally BAGTRACK_PORT + 1
SERVICES_PORT_BASE = 8000  # auth 8001, scanning 8002, billing 8003, dashboard 8004


def local_ports(base: int = SERVICES_PORT_BASE, gateway: int = GATEWAY_PORT) -> dict[str, int]:
    """Port per process of the local stack: the services from `base + 1` in list order, then the gateway."""
    ports = {name: base + i for i, name in enumerate(SERVICES, start=1)}
    ports["gateway"] = gateway
    return ports


def default_url(service: str) -> str:
    """Where a service answers when nothing else is configured (the local stack's address)."""
    return f"http://127.0.0.1:{local_ports()[service]}"
