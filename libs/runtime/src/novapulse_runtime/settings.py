"""Process configuration read from the environment.

Every service subclasses :class:`ServiceSettings`. :func:`load_settings` turns a bad or missing value into
one clear line on stderr naming the variable, and exits with status 2.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Annotated, Any, ClassVar, Literal, NoReturn, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from .constants import CONFIG_ERROR_EXIT, WORKER_PORT_OFFSET
from .redisconn import RedisUrlError, parse_cluster_url

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
DatabaseSpans = Literal["auto", "on", "off"]
"""``TRACE_DATABASE_SPANS``: a client span per MongoDB and Redis command ``on``, ``off``, or ``auto`` (on when
spans are exported)."""
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: Any) -> Any:
    """``"10.0.0.0/8, ::1"`` → a tuple of networks (anything else is left for pydantic to check)."""
    if isinstance(value, str):
        return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip())
    return value


Networks = Annotated[tuple[Network, ...], NoDecode, BeforeValidator(parse_networks)]
"""Settings field type: comma-separated CIDRs (``TRUSTED_PROXIES``, allow-lists)."""


TracesSampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
"""The samplers of the OpenTelemetry SDK configuration specification (``OTEL_TRACES_SAMPLER`` values)."""


class ServiceSettings(BaseSettings):
    """Settings every NovaPulse process understands.

    ``REDIS_URL`` and ``MONGO_URL`` are required: the dev stack (``make run``) and the test harness supply
    them; a deployment must name its servers explicitly.
    """

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    uses_database: ClassVar[bool] = True
    """Whether the service owns a MongoDB database. A service without one (the console) sets it False and may
    leave ``MONGO_URL`` unset: the runtime builds no client and adds no ``mongodb`` health check."""

    service_name: str = Field(default="novapulse", min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    """``SERVICE_NAME``: the service (its stream, consumer group, Redis key prefix and metrics label)."""
    redis_url: str = Field(
        pattern=r"^(redis|rediss|unix|redis\+cluster|rediss\+cluster|redis\+sentinel|rediss\+sentinel)://"
    )
    """``REDIS_URL``: streams, rate limits and short-lived keys (``redis://user:password@host:6379/0``; a Redis
    Cluster: ``redis+cluster://user:password@host:port,host:port`` or ``rediss+cluster://``, see
    :mod:`~novapulse_runtime.redisconn`; a primary behind Sentinel:
    ``redis+sentinel://[user:password@]host:port[,host:port...]/<master>[/<db>]`` or ``rediss+sentinel://``,
    see :mod:`~novapulse_runtime.redissentinel`)."""
    redis_sentinel_password: SecretStr = Field(default=SecretStr(""))
    """``REDIS_SENTINEL_PASSWORD``: the Sentinels' own password (their ``requirepass``); empty: none. The data
    nodes' credentials stay in ``REDIS_URL``."""
    outbox_replica_acks: int = Field(default=0, ge=0, le=16)
    """``OUTBOX_REPLICA_ACKS``: replicas that must confirm (``WAIT``) an outbox batch before the relay marks it
    published; 0 (default) does not wait. See ``docs/operations.md`` (Sentinel) for the cost."""
    outbox_replica_timeout_ms: int = Field(default=1000, ge=1, le=4000)
    """``OUTBOX_REPLICA_TIMEOUT_MS``: milliseconds ``WAIT`` waits for those replicas (1-4000: below the Redis
    client's 5 s socket timeout); a batch confirmed by fewer stays unpublished and is retried."""
    mongo_url: str = Field(pattern=r"^mongodb(\+srv)?://")
    """``MONGO_URL``: the MongoDB deployment holding the service's own database."""
    mongo_db: str = Field(default="", max_length=63, pattern=r"^[A-Za-z0-9_-]*$")
    """``MONGO_DB``: the database name; empty means ``novapulse_<service_name>``."""
    queue_concurrency: int = Field(default=16, ge=1, le=10_000)
    """``QUEUE_CONCURRENCY``: events a consumer handles at once."""
    http_host: str = Field(default="0.0.0.0", min_length=1)
    http_port: int = Field(default=8100, ge=0, le=65535)
    """``HTTP_PORT``: the ``api`` (and ``all``) process's port; 0 picks a free one."""
    worker_http_port: int = Field(default=-1, ge=-1, le=65535)
    """``WORKER_HTTP_PORT``: the ``worker`` process's probe and metrics port; -1 means ``HTTP_PORT + 1000``."""
    log_level: LogLevel = "INFO"
    otel_exporter_otlp_endpoint: str = Field(default="", pattern=r"^(https?://.*)?$")
    """``OTEL_EXPORTER_OTLP_ENDPOINT``: OTLP/HTTP collector; empty: spans are not exported."""
    otel_traces_sampler: TracesSampler = "parentbased_always_on"
    """``OTEL_TRACES_SAMPLER``: which traces are recorded, by the names of the OpenTelemetry SDK environment
    variable specification (``parentbased_*`` follow the caller's ``traceparent`` sampled flag and decide only
    for new traces; ``traceidratio`` keeps a ratio of trace ids). Unrecorded spans still carry the context."""
    otel_traces_sampler_arg: float = Field(default=1.0, ge=0.0, le=1.0)
    """``OTEL_TRACES_SAMPLER_ARG``: the ratio (0-1) of new traces the ``*traceidratio`` samplers record."""
    trace_database_spans: DatabaseSpans = "auto"
    """``TRACE_DATABASE_SPANS``: a client span per MongoDB and Redis command — ``on``, ``off``, or ``auto``
    (default: on when spans are exported, ``OTEL_EXPORTER_OTLP_ENDPOINT`` set; see :mod:`.instrumentation`)."""
    trusted_proxies: Networks = ()
    """``TRUSTED_PROXIES``: networks whose ``X-Forwarded-For`` is believed (comma-separated CIDRs)."""
    shutdown_timeout: float = Field(default=25.0, gt=0, le=3600)
    """``SHUTDOWN_TIMEOUT``: seconds in-flight requests and background work get to finish after SIGTERM."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    """``MAX_BODY_BYTES``: the largest request body, in bytes (413 above)."""
    memory_limit_mb: int = Field(default=512, ge=16, le=1_048_576)
    """``MEMORY_LIMIT_MB``: the process's memory budget in MiB (the health report's memory check)."""
    health_check_timeout: float = Field(default=1.0, gt=0, le=30)
    """``HEALTH_CHECK_TIMEOUT``: seconds each health check (MongoDB, Redis ping) may take before it fails."""
    rate_limit_enabled: bool = True
    """``RATE_LIMIT_ENABLED``: route rate limits on (tests of other behaviour turn them off)."""
    rate_limit_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    """``RATE_LIMIT_IPV6_PREFIX``: IPv6 clients are limited per network of this prefix length (bits)."""
    auth_jwks_url: str = Field(default="http://127.0.0.1:8101/api/v1/auth/.well-known/jwks.json", pattern=r"^https?://")
    auth_issuer: str = Field(default="novapulse-auth", min_length=1)
    auth_audience: str = Field(default="novapulse", min_length=1)
    operations_token: SecretStr = Field(default=SecretStr(""))
    events_namespace: str = Field(default="novapulse", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    """``EVENTS_NAMESPACE``: the first segment of every bus stream and key and of the revocation list's key and
    channel (``<namespace>:events:<service>``); tests use a unique one per test. Letters, digits, ``-``,
    ``_`` and ``.``, 1-64 characters (a safe Redis key segment: no ``:``, spaces or glob characters)."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_usable(cls, value: str) -> str:
        from .redissentinel import is_sentinel_url, parse_sentinel_url

        if is_sentinel_url(value):
            parse_sentinel_url(value)  # ValueError: pydantic reports it under REDIS_URL
        try:
            parse_cluster_url(value)
        except RedisUrlError as exc:
            raise ValueError(str(exc).removeprefix("REDIS_URL: ")) from None
        return value

    @field_validator("operations_token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < 32:
            raise ValueError("must be empty (operations routes off) or at least 32 characters")
        return value

    @model_validator(mode="after")
    def _check_ports(self) -> ServiceSettings:
        # Re-checked here because services override the defaults of these fields (losing Field bounds).
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"HTTP_PORT must be 0-65535, got {self.http_port}")
        if self.worker_http_port < 0 and self.http_port and self.http_port + WORKER_PORT_OFFSET > 65535:
            raise ValueError("HTTP_PORT + 1000 (the worker's default port) is over 65535; set WORKER_HTTP_PORT")
        if self.outbox_replica_acks and parse_cluster_url(self.redis_url) is not None:
            # WAIT counts the replicas of the node it runs on; a cluster pipeline sends a keyless command to
            # any node, not necessarily the one holding the stream
            raise ValueError("OUTBOX_REPLICA_ACKS is not supported with a Redis Cluster REDIS_URL; set it to 0")
        return self

    def listen_port(self, role: str) -> int:
        """API and all-in-one processes listen on ``HTTP_PORT``; a worker on ``WORKER_HTTP_PORT``, which
        defaults to ``HTTP_PORT + 1000``."""
        if role != "worker":
            return self.http_port
        if self.worker_http_port >= 0:
            return self.worker_http_port
        return self.http_port + WORKER_PORT_OFFSET if self.http_port else 0

    def database_name(self) -> str:
        """The MongoDB database this service owns (``MONGO_DB``, else ``novapulse_<service>``)."""
        return self.mongo_db or f"novapulse_{self.service_name.replace('-', '_')}"


S = TypeVar("S", bound=ServiceSettings)


def describe_error(exc: ValidationError) -> str:
    """One line naming every offending variable."""
    parts = []
    for err in exc.errors():
        var = "_".join(str(p) for p in err["loc"]).upper() or "?"
        if err["type"] == "missing":
            parts.append(f"{var} is required but not set")
        else:
            parts.append(f"{var}: {err['msg']}")
    return "; ".join(parts)


def fail_config(message: str) -> NoReturn:
    sys.stderr.write(f"configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(CONFIG_ERROR_EXIT)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Read settings of ``cls`` from the environment or exit with one clear line."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        fail_config(describe_error(exc))
    except (SettingsError, ValueError) as exc:
        cause = exc.__cause__ or exc
        fail_config(str(cause).splitlines()[0])
