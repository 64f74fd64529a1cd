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

    # Per-caller rate limits (gateway/limits.py: GCRA, shared by the gateway replicas through Redis): a sustained
    # rate per second and a burst. Sized so a scanner (~1/s with bursts), a dashboard page, the web app replaying
    # an offline backlog on Retry-After and `make loadtest`'s shared accounts (up to 10 users on one) are never
    # refused, while a script looping as fast as it can is.
    rate_limits: bool = True
    rate_read_per_second: float = Field(50.0, gt=0)
    rate_read_burst: int = Field(150, ge=1)
    rate_write_per_second: float = Field(20.0, gt=0)
    rate_write_burst: int = Field(60, ge=1)
    # Per client address, on the routes that need no token (a whole shift may share one NAT address).
    rate_anonymous_per_second: float = Field(30.0, gt=0)
    rate_anonymous_burst: int = Field(300, ge=1)

    # Every forwarded request's total time budget (event streams excepted), passed downstream in
    # X-Request-Budget-Ms so the services stop work nobody waits for (shared/deadline.py). 0: none.
    request_budget: float = Field(8.0, ge=0, le=600)

    # Bulkheads: requests in flight from this gateway to one upstream, at most; past it, 503 + Retry-After at once
    # (never a queue), so one slow service cannot take the gateway's capacity from the others. Event streams are
    # not counted (they are long by design; max_client_connections bounds them). `bulkheads` overrides per
    # upstream: "billing=50 dashboard=40". Below each upstream pool's max_connections, so the pool never queues.
    bulkhead_max_in_flight: int = Field(150, ge=1)
    bulkheads: str = ""

    def bulkhead_caps(self) -> dict[str, int]:
        """Each upstream's cap: the default, or its override."""
        caps = {name: self.bulkhead_max_in_flight for name in SERVICES}
        for item in self.bulkheads.replace(",", " ").split():
            name, _, value = item.partition("=")
            if name not in caps or not value.isdigit() or int(value) < 1:
                raise ValueError(f"GATEWAY_BULKHEADS item {item!r}: expected <service>=<n>, a service among "
                                 f"{', '.join(SERVICES)}")
            caps[name] = int(value)
        return caps

    def upstream_urls(self) -> dict[str, str]:
        """Base URL of every service, by name."""
        return {name: getattr(self, f"{name}_url") for name in SERVICES}
