"""Gateway settings (env prefix GATEWAY_; upstream URLs and shared knobs keep their bare names)."""
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class GatewaySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    service_name = "gateway"

    scanning_url: str = Field("http://127.0.0.1:8002", validation_alias=AliasChoices("SCANNING_URL"))
    billing_url: str = Field("http://127.0.0.1:8003", validation_alias=AliasChoices("BILLING_URL"))
    dashboard_url: str = Field("http://127.0.0.1:8004", validation_alias=AliasChoices("DASHBOARD_URL"))

    max_body_bytes: int = Field(1024 * 1024, gt=0)
    connect_timeout: float = Field(1.0, gt=0, le=30)
    max_connections: int = Field(200, ge=1, le=10_000)  # per upstream
    breaker_fail_max: int = Field(5, ge=1)
    breaker_reset_timeout: float = Field(10.0, gt=0)
    verified_tokens_max: int = Field(50_000, ge=0)  # 0 disables remembering verified tokens

    def upstream_urls(self) -> dict[str, str]:
        """Base URL per upstream name, as the route table names them."""
        return {"auth": self.auth_url, "scanning": self.scanning_url,
                "billing": self.billing_url, "dashboard": self.dashboard_url}
