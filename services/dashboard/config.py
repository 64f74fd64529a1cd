"""Dashboard service settings (env prefix DASHBOARD_)."""
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DASHBOARD_")

    service_name = "dashboard"
