"""Parsing the routing side of the config: retries, breakers, strategy options, SLOs,
health checks.

```yaml
policies:
  retry:   {attempts: 2, backoff: 0.25s, max_backoff: 8s, retry_after_cap: 30s,
            deadline: 600s, budget: {ratio: 0.2, min_retries: 10, window: 10s}}
  breaker: {failures: 5, reset_after: 30s, half_open_probes: 1}
models:
  gpt-4o: {strategy: {name: adaptive, weights: {success: 3, latency: 1, cost: 1, health: 2,
                                                quality: 2}}}
  chat:   {strategy: {name: affinity, key_from: "header:x-session-id", load_factor: 1.25}}
providers:
  openai: {health_check: {interval: 30s, timeout: 5s}}   # or `true`; `path` per type
```

`extract_routing` runs before the provider and model parsers: it takes the
`health_check` keys and `strategy` mappings out of the raw YAML (leaving the
strategy's name), so those parsers see only what they know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from proxy.config.reader import Problems, Section, join


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """attempts: extra tries of targets already tried (failover to an untried target is
    free of this count; 0 by default, so a lone target's error reaches the client as it
    was); deadline: one per request over every attempt (None: timeouts.total);
    budget: retries (every attempt after a request's first) ≤ max(min_retries,
    ratio × requests) over the last `window` seconds, gateway-wide;
    quota_cooldown / auth_cooldown: how long a target whose account is out of quota
    (or whose credential was refused) is left alone, by every request; it also
    bounds the cool-down a rate limit's Retry-After can ask for."""

    attempts: int = 0
    backoff: float = 0.25
    max_backoff: float = 8.0
    retry_after_cap: float = 30.0
    deadline: float | None = None
    quota_cooldown: float = 600.0
    auth_cooldown: float = 600.0
    budget_ratio: float = 0.2
    budget_min_retries: int = 10
    budget_window: float = 10.0


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    enabled: bool = True
    failures: int = 5
    reset_after: float = 30.0
    half_open_probes: int = 1


@dataclass(frozen=True, slots=True)
class AdaptiveWeights:
    """The composite of `adaptive`: reliability (success, health), latency, cost and the
    targets' quality score for the request's task kind."""

    success: float = 1.0
    latency: float = 1.0
    cost: float = 1.0
    health: float = 1.0
    quality: float = 1.0


#: the `c` of consistent hashing with bounded loads: a target takes at most c x its
#: fair share of the requests in flight
DEFAULT_LOAD_FACTOR = 1.25
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
#: headers no rule or session key may read: they carry credentials
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key",
                            "cookie"})


@dataclass(frozen=True, slots=True)
class AffinityConfig:
    """Where a session's key comes from: `user` (the request's `user` field), `key` (the
    client key's name) or `header` (then `header` names it)."""

    source: str = "user"
    header: str | None = None
    load_factor: float = DEFAULT_LOAD_FACTOR

    @property
    def key_from(self) -> str:
        return f"header:{self.header}" if self.source == "header" else self.source


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """A strategy and its options, as a model or a route rule names it."""

    name: str
    weights: AdaptiveWeights = AdaptiveWeights()
    affinity: AffinityConfig = AffinityConfig()


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The provider type's cheap documented request (its models list), `GET base_url +
    path` when a path is given, or (with `model`) a one-token chat request to that model."""

    interval: float = 30.0
    timeout: float = 5.0
    path: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    weights: Mapping[str, AdaptiveWeights] = field(default_factory=dict)  # by model name
    health: Mapping[str, HealthCheck] = field(default_factory=dict)  # by provider name
    affinity: Mapping[str, AffinityConfig] = field(default_factory=dict)  # by model name


class Extracted:
    """What `extract_routing` took out of the raw models and providers."""

    def __init__(self) -> None:
        self.weights: dict[str, AdaptiveWeights] = {}
        self.health: dict[str, HealthCheck] = {}
        self.affinity: dict[str, AffinityConfig] = {}


def parse_strategy(value: Any, path: str, problems: Problems) -> StrategySpec | None:
    """`name` or `{name, weights}` (adaptive) or `{name, key_from, load_factor}` (affinity).
    The name itself is checked by whoever knows the strategies."""
    if isinstance(value, str):
        return StrategySpec(value) if value else None
    s = Section(value, path, problems)
    if not s.ok:
        return None
    name = s.str("name", required=True)
    w = s.section("weights")
    d = AdaptiveWeights()
    weights = AdaptiveWeights(*(float(w.number(k, getattr(d, k)))
                                for k in ("success", "latency", "cost", "health", "quality")))
    w.finish()
    if w.raw and name != "adaptive":
        problems.add(join(path, "weights"), "only applies to strategy 'adaptive'")
    affinity = AffinityConfig()
    if s.has("key_from") or s.has("load_factor"):
        if name != "affinity":
            problems.add(path, "key_from and load_factor only apply to strategy 'affinity'")
        affinity = _affinity(s, path, problems)
    s.finish()
    return StrategySpec(name, weights, affinity) if name else None


def _affinity(s: Section, path: str, problems: Problems) -> AffinityConfig:
    key_from = s.str("key_from", "user")
    factor = s.number("load_factor", DEFAULT_LOAD_FACTOR, minimum=1)
    source, _, header = key_from.partition(":")
    if source == "header" and _HEADER_NAME.match(header):
        if header.lower() in SECRET_HEADERS:
            problems.add(join(path, "key_from"), f"'{header}' carries credentials: use key_from: "
                                                 "key to keep sessions per client key")
        return AffinityConfig("header", header.lower(), float(factor))
    if key_from not in ("user", "key"):
        problems.add(join(path, "key_from"), "must be user, key or header:NAME (a header "
                                             f"name), got {key_from!r}")
        return AffinityConfig(load_factor=float(factor))
    return AffinityConfig(key_from, None, float(factor))


def extract_routing(raw: dict, problems: Problems) -> Extracted:
    """Take `strategy:` mappings and `health_check:` out of raw models/providers."""
    found = Extracted()
    models = raw.get("models")
    if isinstance(models, dict):
        for name, model in models.items():
            if not isinstance(model, dict):
                continue
            path = join("models", str(name))
            if isinstance(model.get("strategy"), dict):
                spec = parse_strategy(model["strategy"], join(path, "strategy"), problems)
                if spec is not None:
                    found.weights[str(name)] = spec.weights
                    found.affinity[str(name)] = spec.affinity
                # the model parser checks the name
                model["strategy"] = spec.name if spec is not None else None
    providers = raw.get("providers")
    if isinstance(providers, dict):
        for name, provider in providers.items():
            if not isinstance(provider, dict) or "health_check" not in provider:
                continue
            value = provider.pop("health_check")
            path = join(join("providers", str(name)), "health_check")
            check = _health_check(value, path, problems)
            if check is not None:
                found.health[str(name)] = check
    return found


def _health_check(value: Any, path: str, problems: Problems) -> HealthCheck | None:
    if value is False or value is None:
        return None
    if value is True:
        return HealthCheck()
    s = Section(value, path, problems)
    d = HealthCheck()
    enabled = s.bool("enabled", True)
    check = HealthCheck(interval=_positive(s, "interval", d.interval),
                        timeout=_positive(s, "timeout", d.timeout),
                        path=s.str("path", d.path), model=s.str("model", None))
    s.finish()
    if check.path is not None and not check.path.startswith("/"):
        problems.add(join(path, "path"), "must start with '/'")
    return check if enabled and s.ok else None


def _positive(s: Section, key: str, default: float) -> float:
    value = s.duration(key, default)
    if value is not None and value <= 0:
        s.problems.add(join(s.path, key), "must be greater than zero")
        return default
    return default if value is None else value


def parse_retry(s: Section) -> RetryConfig:
    d = RetryConfig()
    budget = s.section("budget")
    config = RetryConfig(
        attempts=s.number("attempts", d.attempts, minimum=0, integer=True),
        backoff=s.duration("backoff", d.backoff),
        max_backoff=s.duration("max_backoff", d.max_backoff),
        retry_after_cap=s.duration("retry_after_cap", d.retry_after_cap),
        deadline=s.duration("deadline", None),
        quota_cooldown=s.duration("quota_cooldown", d.quota_cooldown),
        auth_cooldown=s.duration("auth_cooldown", d.auth_cooldown),
        budget_ratio=float(budget.number("ratio", d.budget_ratio)),
        budget_min_retries=budget.number("min_retries", d.budget_min_retries, integer=True),
        budget_window=_positive(budget, "window", d.budget_window),
    )
    budget.finish()
    s.finish()
    if config.deadline is not None and config.deadline <= 0:
        s.problems.add(join(s.path, "deadline"), "must be greater than zero")
    return config


def parse_breaker(s: Section) -> BreakerConfig:
    d = BreakerConfig()
    config = BreakerConfig(
        enabled=s.bool("enabled", d.enabled),
        failures=s.number("failures", d.failures, minimum=1, integer=True),
        reset_after=_positive(s, "reset_after", d.reset_after),
        half_open_probes=s.number("half_open_probes", d.half_open_probes, minimum=1,
                                  integer=True),
    )
    s.finish()
    return config


def parse_routing(policies: Section, found: Extracted) -> RoutingConfig:
    """`policies.retry` and `policies.breaker`, joined with what `extract_routing` found."""
    retry = parse_retry(policies.section("retry"))
    breaker = parse_breaker(policies.section("breaker"))
    return RoutingConfig(retry=retry, breaker=breaker,
                         weights=MappingProxyType(found.weights),
                         health=MappingProxyType(found.health),
                         affinity=MappingProxyType(found.affinity))
