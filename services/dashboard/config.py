"""Dashboard service settings (env prefix DASHBOARD_): where its sources are, how long each kind of part stays
fresh, and the budgets that keep an answer within 100 ms whatever its sources do."""
from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings
from shared.topology import default_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DASHBOARD_")

    service_name = "dashboard"

    scanning_url: str = Field(default_url("scanning"), validation_alias=AliasChoices("SCANNING_URL"))
    billing_url: str = Field(default_url("billing"), validation_alias=AliasChoices("BILLING_URL"))
    # How long a part is fresh (seconds) before a request that reads it starts a refresh in the background.
    ttl_stats: float = Field(30.0, gt=0, le=3600)
    ttl_activity: float = Field(10.0, gt=0, le=20)  # the issue: activity cached at most 20 s
    ttl_trends: float = Field(300.0, gt=0, le=86400)
    ttl_lookup: float = Field(5.0, gt=0, le=300)
    # A part never fetched yet (and a lookup past its ttl) waits this long for its source, then answers without it.
    first_fetch_wait: float = Field(0.08, ge=0, le=1)
    # Budget of one refresh call to a source: a hung source must not pin a refresh (and its lock) for long.
    refresh_timeout: float = Field(2.0, gt=0, le=30)
    # A failed refresh is tried again after this long (not on every request: a dead source is asked about once
    # per key per retry interval across all replicas).
    retry_after_failure: float = Field(2.0, gt=0, le=300)
    # The cross-replica refresh lock on a key (Redis SET NX PX); longer than a refresh can take.
    lock_ttl: float = Field(5.0, gt=0, le=60)
    # How long held values stay in the shared cache: a lookup's for an outage's worth of stale answers; the
    # aggregates' well beyond any outage (and their last good value is in the database anyway).
    keep_lookups: float = Field(600.0, gt=0)
    keep_parts: float = Field(7 * 86400.0, gt=0)
    activity_items: int = Field(50, ge=1, le=200)
    local_parts_max: int = Field(5000, ge=100, le=1_000_000)  # this process's own copies (Redis' fallback)

    # The live stream (services/dashboard/stream.py). The poller (one per system, by lease) asks the sources'
    # feeds this often; a comment line every `stream_heartbeat` s keeps proxies (15 s read timeouts are common)
    # from cutting a quiet stream; the bus keeps about `stream_replay` events for Last-Event-ID.
    stream_poll_interval: float = Field(0.5, gt=0, le=10)
    # Off: this process never follows the feeds (streams then carry heartbeats and snapshots only). For tests that
    # count a source's calls; in a deployment every replica follows (one at a time holds the lease).
    stream_follow: bool = True
    # Stats parts changed by new activity are refreshed (and a `stats` event sent) at most this often.
    stream_stats_interval: float = Field(1.0, gt=0, le=30)
    stream_heartbeat: float = Field(10.0, gt=0, le=60)
    stream_retry: float = Field(2.0, gt=0, le=60)  # the reconnect delay the stream asks browsers for
    stream_ticket_ttl: float = Field(30.0, gt=0, le=300)
    stream_replay: int = Field(1000, ge=10, le=100_000)

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.lock_ttl <= self.refresh_timeout:
            raise ValueError("DASHBOARD_LOCK_TTL must be longer than DASHBOARD_REFRESH_TIMEOUT")
        if "all" in self.areas:  # services/dashboard/parts.py: a key's area field "all" means every area
            raise ValueError("no dispatch area may be named 'all' (the dashboard's part keys use it for every area)")
        return self
