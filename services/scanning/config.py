"""Scanning service settings (env prefix SCANNING_)."""
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCANNING_")

    service_name = "scanning"
