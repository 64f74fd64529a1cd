"""Billing service settings (env prefix BILLING_)."""
from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings
from shared.topology import default_url


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_")

    service_name = "billing"

    scanning_url: str = Field(default_url("scanning"), validation_alias=AliasChoices("SCANNING_URL"))
    # Budgets of the calls to scanning, each shorter than the gateway's upstream timeout (UPSTREAM_TIMEOUT), so a
    # client of a slow scanning gets billing's own answer (503 for an add, stale counts for a read), never the
    # gateway's 504. A bill read waits at most counts_timeout for fresh counts before answering from stored ones.
    mark_timeout: float = Field(0.8, gt=0, le=10)
    counts_timeout: float = Field(0.2, gt=0, le=10)
    # The outbox of marks to clear is worked every outbox_interval seconds; a failed call waits 2^attempts seconds
    # (at most outbox_max_backoff) before its next try.
    outbox_interval: float = Field(2.0, gt=0, le=300)
    outbox_max_backoff: float = Field(60.0, gt=0, le=3600)
    # The reconciler (services/billing/marks.py): a parent left 'pending' longer than pending_grace seconds (its
    # add died between claiming the slot and finishing) is settled from scanning's mark; marks no bill holds are
    # cleared, each pass looking at those set since the previous one (a replica's first: reconcile_window seconds).
    reconcile_interval: float = Field(30.0, gt=0, le=3600)
    pending_grace: float = Field(30.0, gt=0, le=3600)
    reconcile_window: float = Field(86400.0, gt=0)  # a day: a billing outage shorter than that misses no stray
    idempotency_ttl_hours: int = Field(48, ge=1)

    @model_validator(mode="after")
    def _calls_fit_the_gateway(self) -> "Settings":
        if max(self.mark_timeout, self.counts_timeout) >= self.upstream_timeout:
            raise ValueError("BILLING_MARK_TIMEOUT and BILLING_COUNTS_TIMEOUT must be shorter than UPSTREAM_TIMEOUT")
        if self.pending_grace <= self.mark_timeout * 2:
            raise ValueError("BILLING_PENDING_GRACE must be well above BILLING_MARK_TIMEOUT")
        return self
