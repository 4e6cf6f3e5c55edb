"""The config's typed, frozen objects (what the rest of gatewise reads)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

from proxy.config.catalog import ModelInfo
from proxy.config.observe import AlertsConfig, SloConfig
from proxy.config.policies import BudgetsConfig, KeyConfig, StateConfig
from proxy.config.responses import ResponsesConfig
from proxy.config.routing import RoutingConfig
from proxy.config.telemetry import CacheConfig, TelemetryConfig


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine (a name other than localhost may
    resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Timeouts:
    """connect: TCP+TLS; first_token: until the first content of a stream;
    first_token_last: the same for the last candidate a request has (no other
    target or fallback left to try), None for twice `first_token`; idle: between
    two reads of a stream; total: a whole non-streaming call; client_write: how
    long a client may leave a stream's write unaccepted before it is disconnected
    (the upstream closed, what it generated billed)."""

    connect: float = 5.0
    first_token: float = 30.0
    idle: float = 60.0
    total: float = 600.0
    first_token_last: float | None = None
    client_write: float = 30.0

    def first_token_for(self, last: bool) -> float:
        """Cutting the last candidate short leaves the client nothing better, while
        the upstream may bill the generation anyway: it gets more time."""
        if not last:
            return self.first_token
        return self.first_token_last if self.first_token_last is not None \
            else 2 * self.first_token


DEFAULT_MAX_CONNECTIONS = 10_000


@dataclass(frozen=True, slots=True)
class Credential:
    """One key of a provider's pool (`api_keys:`): named for metrics, logs and the
    admin API (its index when the config gives no name), never shown itself."""

    name: str
    key: str = field(repr=False)
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str
    #: the key every request sends; with a pool, its first usable credential (health
    #: checks use it) while each attempt sends the credential the pool picks
    api_key: str | None = field(default=None, repr=False)
    disabled_reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeouts: Timeouts = Timeouts()
    options: Mapping[str, Any] = field(default_factory=dict)
    #: every secret of the whole config (set by GatewayConfig), which an upstream
    #: error must never show, whichever provider echoes it
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)
    responses: str | None = None  # native | translate | None (proxy/config/responses.py)
    #: upstream connections open at once (one pool per provider); a request past it
    #: waits for one, which is gateway time, never an upstream failure
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: `api_keys:` — empty unless the provider lists a pool of credentials
    credentials: tuple[Credential, ...] = ()
    #: pool entries left out because their `${VAR}` is unset (their names)
    unset_credentials: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None


@dataclass(frozen=True, slots=True)
class TargetConfig:
    provider: str
    model: str
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    info: ModelInfo = ModelInfo()  # the model table's entry with this target's overrides
    #: quality score in [0, 1] per task kind (`default`: for any other task)
    quality: Mapping[str, float] = field(default_factory=dict, compare=False)
    tier: str | None = None  # a name route rules can select targets by (`tier:NAME`)
    #: "provider/model": the key of breakers, stats, limits and metrics, read many times
    #: a request, so built once
    label: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", f"{self.provider}/{self.model}")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    targets: tuple[TargetConfig, ...]
    strategy: str = "priority"
    fallbacks: tuple[str, ...] = ()
    context_window_fallbacks: tuple[str, ...] = ()
    drop_unsupported: bool = False


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 4000
    max_body_mb: float = 16.0
    max_messages: int = 10_000
    max_json_depth: int = 64  # arrays and objects nested deeper: 400 at parse
    max_n: int = 128  # choices per request (`n`); each is billed
    max_tools: int = 128  # entries of `tools` (or legacy `functions`)
    #: requests served at once; past it an immediate 503 `server_overloaded`
    max_in_flight: int = 10_000
    #: SIGTERM/SIGINT: how long open requests may finish before streams are ended
    shutdown_timeout: float = 30.0
    #: admin routes and /metrics on their own listener (None: on the main port)
    admin_port: int | None = None
    admin_host: str = "127.0.0.1"
    #: a non-loopback `host` without client keys starts only with this set
    allow_unauthenticated: bool = False

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelConfig]
    timeouts: Timeouts = Timeouts()
    telemetry: TelemetryConfig = TelemetryConfig()
    cache: CacheConfig = CacheConfig()  # policies.cache + per-model `cache:`
    admin_key: str | None = field(default=None, repr=False)
    source: str = "<memory>"
    keys: tuple[KeyConfig, ...] = ()  # client keys (hashes only); empty: no auth
    budgets: BudgetsConfig = BudgetsConfig()
    state: StateConfig = StateConfig()
    routing: RoutingConfig = RoutingConfig()  # retry, breaker, adaptive weights, health checks
    responses: ResponsesConfig = ResponsesConfig()  # stored responses' retention
    slos: tuple[SloConfig, ...] = ()  # models.NAME.slo and targets' slo
    alerts: AlertsConfig = AlertsConfig()
    ui: bool = True  # admin.ui: the /ui page, served whenever admin.key is set
    routes: tuple = ()  # proxy.config.routes.RouteRule, in order: the first match wins
    tasks: frozenset[str] = frozenset()  # every task kind the config names
    #: the config file and the secret files it names (`${file:…}`), as read
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Hand every provider the config's secrets: its translators scrub them from
        every upstream error they build (translators/base.py)."""
        secrets = tuple(self.secrets())
        if any(p.secrets != secrets for p in self.providers.values()):
            object.__setattr__(self, "providers", MappingProxyType(
                {name: replace(p, secrets=secrets) for name, p in self.providers.items()}))

    def secrets(self) -> list[str]:
        """Every credential loaded, so logs and errors can redact them by value."""
        values = [p.api_key for p in self.providers.values() if p.api_key]
        values += [c.key for p in self.providers.values() for c in p.credentials]
        values += [v for p in self.providers.values() for v in p.headers.values()]
        if self.admin_key:
            values.append(self.admin_key)
        values += self.alerts.secrets()  # signing keys, and webhook URLs with tokens
        for url in (self.state.url, self.state.postgres):  # passwords in state URLs
            password = urlsplit(url).password if url else None
            if password:
                values.append(password)
        return [v for v in values if len(v) >= 8]
