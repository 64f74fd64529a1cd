"""Gateway settings (env prefix GATEWAY_; upstream URLs and shared knobs keep their bare names)."""
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings
from shared.topology import SERVICES, default_url


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
    # Request headers under /api/v1, checked before authentication and before anything is forwarded:
    # one header (name + value) or all of them together past these is a 431; an Authorization past its own
    # limit is a 401 (an access token is ~500 bytes).
    max_header_bytes: int = Field(8 * 1024, gt=0)
    max_headers_total_bytes: int = Field(32 * 1024, gt=0)
    max_authorization_bytes: int = Field(4 * 1024, gt=0)

    def upstream_urls(self) -> dict[str, str]:
        """Base URL of every service, by name."""
        return {name: getattr(self, f"{name}_url") for name in SERVICES}
