"""Scanning service settings (env prefix SCANNING_)."""
from __future__ import annotations

import json
import re
from functools import cached_property

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

# Parent QR formats and how many children each holds (1 kg a child). Settable as JSON.
DEFAULT_PARENT_FORMATS = '[{"pattern": "^SB[0-9]{5}$", "capacity": 30}, {"pattern": "^M444-[0-9]{5}$", "capacity": 15}]'


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCANNING_")

    service_name = "scanning"

    parent_formats: str = DEFAULT_PARENT_FORMATS
    child_pattern: str = "^[A-Z0-9-]{4,20}$"
    unlink_window_seconds: int = Field(3600, ge=0)
    lookup_cache_seconds: float = Field(60, ge=0)
    idempotency_ttl_hours: int = Field(48, ge=1)

    @field_validator("parent_formats")
    @classmethod
    def _formats_parse(cls, value: str) -> str:
        formats = json.loads(value)
        if not formats or not all(isinstance(f.get("capacity"), int) and f["capacity"] > 0 for f in formats):
            raise ValueError("parent_formats must be a JSON list of {pattern, capacity > 0}")
        for f in formats:
            re.compile(f["pattern"])
        return value

    @cached_property
    def parent_rules(self) -> tuple[tuple[re.Pattern, int], ...]:
        return tuple((re.compile(f["pattern"]), f["capacity"]) for f in json.loads(self.parent_formats))

    @cached_property
    def child_rule(self) -> re.Pattern:
        return re.compile(self.child_pattern)
