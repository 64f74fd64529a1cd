"""Settings every service shares; each service subclasses ServiceSettings with its own env prefix."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from shared.errors import InvalidInput
from shared.topology import default_url

# Values that mean "somebody forgot to set this"; refused in production (auth's signing key, the first admin).
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "changethis", "change_this", "secret", "password", "admin", "default", "xxx", "todo"}
)


DEFAULT_AREAS = "lucknow,indore,jaipur,hisar,sri_ganganagar,sangaria,bathinda,raipur,ranchi,akola"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class CommonSettings(BaseSettings):
    """What the gateway and every service read. Process-specific settings carry a prefix (AUTH_, GATEWAY_...)."""

    model_config = SettingsConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)

    service_name: ClassVar[str] = "service"

    environment: Literal["development", "test", "production"] = Field("development", validation_alias=_env("BAGTRACK_ENV"))
    var_dir: Path = Field(Path("var"), validation_alias=_env("BAGTRACK_VAR_DIR"))
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    access_log: bool = Field(True, validation_alias=_env("ACCESS_LOG"))
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    ready_timeout: float = Field(1.0, gt=0, le=10)

    auth_url: str = Field(default_url("auth"), validation_alias=_env("AUTH_URL"))
    jwt_issuer: str = Field("bagtrack-auth", validation_alias=_env("JWT_ISSUER"))
    jwt_audience: str = Field("bagtrack", validation_alias=_env("JWT_AUDIENCE"))
    jwks_cache_seconds: float = Field(600, gt=0, validation_alias=_env("JWKS_CACHE_SECONDS"))
    # A token with a key id the verifier does not hold refetches the JWKS, at most once per this many seconds.
    # The same value everywhere: auth's AUTH_KEY_ACTIVATION_DELAY must exceed it (services/auth/config.py).
    jwks_min_refresh: float = Field(5, gt=0, le=60, validation_alias=_env("JWKS_MIN_REFRESH"))
    upstream_timeout: float = Field(5.0, gt=0, le=120, validation_alias=_env("UPSTREAM_TIMEOUT"))
    # Every client to another service (shared.http.ResilientClient): connect budget, pool, breaker.
    connect_timeout: float = Field(1.0, gt=0, le=30)
    # Replace the pool of kept-alive connections to each upstream this often (shared.http; 0: never), so a
    # per-connection balancer (a Kubernetes Service) spreads them over new replicas. deploy/k8s sets 10 s.
    upstream_connection_max_age: float = Field(0.0, ge=0, le=3600,
                                               validation_alias=_env("UPSTREAM_CONNECTION_MAX_AGE"))
    max_connections: int = Field(200, ge=1, le=10_000)  # per upstream
    # Retries to another service (shared.http): safe calls and keyed writes, once, after a broken connection or a
    # balancer's 502 — within a budget of this fraction of calls (with this many saved up), after a random
    # pause of up to `jitter` seconds.
    upstream_retry_ratio: float = Field(0.2, ge=0, le=1, validation_alias=_env("UPSTREAM_RETRY_RATIO"))
    upstream_retry_burst: int = Field(100, ge=0, le=10_000, validation_alias=_env("UPSTREAM_RETRY_BURST"))
    upstream_retry_jitter: float = Field(0.02, ge=0, le=1, validation_alias=_env("UPSTREAM_RETRY_JITTER"))
    # The breaker (shared.breaker): opens when >= breaker_failure_rate of >= breaker_min_calls calls in the last
    # breaker_window seconds failed; after breaker_reset_timeout s, breaker_probes trial calls decide.
    breaker_window: float = Field(10.0, ge=1, le=300)
    breaker_min_calls: int = Field(20, ge=1)
    breaker_failure_rate: float = Field(0.5, gt=0, le=1)
    breaker_reset_timeout: float = Field(10.0, gt=0)
    breaker_probes: int = Field(3, ge=1)
    verified_tokens_max: int = Field(50_000, ge=0)  # 0 disables remembering verified tokens
    dispatch_areas: str = Field(DEFAULT_AREAS, validation_alias=_env("DISPATCH_AREAS"))
    # The warehouse's clock: "today" and "a day" (billing's end-of-day summary, the dashboard's today) are its
    # local days. An IANA zone name, checked at start-up.
    timezone: str = Field("Asia/Kolkata", validation_alias=_env("BAGTRACK_TIMEZONE"))
    # Peers whose X-Forwarded-For is believed (shared.proxies): IPs and CIDRs, comma-separated, per process
    # (GATEWAY_TRUSTED_PROXIES, AUTH_TRUSTED_PROXIES, ...). Unset: the gateway trusts nobody, a service loopback.
    trusted_proxies: str | None = None

    def breaker_options(self) -> dict:
        """Keyword arguments for shared.breaker.CircuitBreaker."""
        return dict(window=self.breaker_window, min_calls=self.breaker_min_calls,
                    failure_rate=self.breaker_failure_rate, reset_timeout=self.breaker_reset_timeout,
                    probes=self.breaker_probes)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"BAGTRACK_TIMEZONE {value!r} is not a known time zone (e.g. Asia/Kolkata)") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def areas(self) -> tuple[str, ...]:
        """The configured dispatch areas, lower-case."""
        return tuple(a.strip().lower() for a in self.dispatch_areas.split(",") if a.strip())

    def known_area(self, area: str) -> str:
        """`area` trimmed and lower-cased; a 422 naming the choices when it is not a configured area."""
        area = area.strip().lower()
        if area not in self.areas:
            raise InvalidInput(f"unknown dispatch_area {area!r}; choose one of: {', '.join(self.areas)}")
        return area


class ServiceSettings(CommonSettings):
    """A service with its own database (and pool)."""

    # DATABASE_URL names a server (and a base database name); each service gets its own database on it,
    # "<name>_<service>", unless <SERVICE>_DATABASE_URL names one outright. Neither set: SQLite under var/.
    # Stored with the sync driver (migrations, seeding, tests); the service itself serves through the async
    # driver of the same database (shared.db.async_url).
    shared_database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    database_url: str | None = None
    database_read_url: str | None = None
    # With a read replica: reads it may answer go there only while its measured lag is at most this (seconds);
    # a code written within it is read from the primary. Lag is measured every db_read_probe_interval seconds.
    db_read_max_lag: float = Field(2.0, gt=0, le=300)
    db_read_probe_interval: float = Field(1.0, gt=0, le=60)
    # One event loop per process: the pool bounds how many statements are in flight at once, and a write holds
    # its connection for one round trip, so a handful of connections carries hundreds of requests a second.
    # No overflow by default: under a burst, overflow connections are opened and closed again per request (a
    # PostgreSQL backend started each time, every statement prepared again), which costs more than the wait.
    db_pool_size: int = Field(10, ge=1, le=100)
    db_max_overflow: int = Field(0, ge=0, le=100)
    db_pool_timeout: float = Field(2.0, gt=0, le=30)
    db_statement_timeout_ms: int = Field(10_000, ge=0)
    # PostgreSQL is reached through pgbouncer in transaction mode: no prepared statement is kept between
    # transactions and statement_timeout is left to pgbouncer's connect_query (shared.db, docs/scale-out.md).
    db_pgbouncer: bool = Field(False, validation_alias=_env("DB_PGBOUNCER"))
    # The service's breaker on its own database (shared.db): open after half of >= db_breaker_min_calls checkouts
    # in 10 s could not connect (or lost the connection); one probe after db_breaker_reset_timeout seconds.
    db_breaker_min_calls: int = Field(5, ge=1)
    db_breaker_reset_timeout: float = Field(5.0, gt=0, le=300)

    @model_validator(mode="after")
    def _resolve_database_url(self) -> "ServiceSettings":
        if not self.database_url:
            self.database_url = derive_database_url(self.shared_database_url, self.service_name, self.var_dir)
        self.database_url = with_psycopg2_driver(self.database_url)
        if self.database_read_url:
            self.database_read_url = with_psycopg2_driver(self.database_read_url)
        return self


def derive_database_url(shared_url: str | None, service: str, var_dir: Path) -> str:
    """The service's own database: on the shared server if one is configured, else a SQLite file."""
    if not shared_url:
        return f"sqlite:///{(Path(var_dir) / f'{service}.db').as_posix()}"
    url = make_url(with_psycopg2_driver(shared_url))
    base = url.database or "bagtrack"
    return url.set(database=f"{base}_{service}").render_as_string(hide_password=False)


def with_psycopg2_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; migrations, seeding and tests run psycopg2 (the
    services swap in asyncpg: shared.db.async_url)."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare):]
    return url
