"""Gateway settings (env prefix GATEWAY_; upstream URLs and shared knobs keep their bare names)."""
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings
from shared.topology import GATEWAY_OPS_PORT, SERVICES, default_url


class GatewaySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    service_name = "gateway"

    scanning_url: str = Field(default_url("scanning"), validation_alias=AliasChoices("SCANNING_URL"))
    billing_url: str = Field(default_url("billing"), validation_alias=AliasChoices("BILLING_URL"))
    dashboard_url: str = Field(default_url("dashboard"), validation_alias=AliasChoices("DASHBOARD_URL"))

    max_body_bytes: int = Field(1024 * 1024, gt=0)
    # A request body of which nothing arrives for this long is cut off with 408 (slow clients; streamed responses
    # are not affected: this is about reading the request).
    body_stall_timeout: float = Field(30.0, gt=0, le=600)
    # An event stream (gateway/routes.py STREAMS) is cut when nothing, not even its heartbeat (every 10 s), came
    # from the upstream for this long; other routes wait at most the upstream timeout for each chunk.
    stream_read_timeout: float = Field(60.0, gt=0, le=3600)
    # Request headers under /api/v1, checked before authentication and before anything is forwarded:
    # one header (name + value) or all of them together past these is a 431; an Authorization past its own
    # limit is a 401 (an access token is ~500 bytes).
    max_header_bytes: int = Field(8 * 1024, gt=0)
    max_headers_total_bytes: int = Field(32 * 1024, gt=0)
    max_authorization_bytes: int = Field(4 * 1024, gt=0)

    # Enforced by the gateway's own HTTP protocol (gateway/server.py), before the app sees a request.
    # Headers not complete this long after a connection opens (or after a later request's first byte) are a 408.
    header_timeout: float = Field(10.0, gt=0, le=600)
    # Open client connections on the public port (keep-alive clients and open event streams alike); past it a new
    # connection gets 503 at once. Named apart from `max_connections`, which is the pool to each upstream.
    max_client_connections: int = Field(4096, ge=1)
    # /ready and /metrics are answered only here, never on the public port; in a container this listens on
    # 0.0.0.0 for the kubelet and Prometheus, and is never published.
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(GATEWAY_OPS_PORT, ge=0, le=65535)

    def upstream_urls(self) -> dict[str, str]:
        """Base URL of every service, by name."""
        return {name: getattr(self, f"{name}_url") for name in SERVICES}
