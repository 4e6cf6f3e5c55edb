"""Parsing the routing side of the config: retries, breakers, adaptive weights, health checks.

```yaml
policies:
  retry:   {attempts: 2, backoff: 0.25s, max_backoff: 8s, retry_after_cap: 30s,
            deadline: 600s, budget: {ratio: 0.2, min_retries: 10, window: 10s}}
  breaker: {failures: 5, reset_after: 30s, half_open_probes: 1}
models:
  gpt-4o: {strategy: {name: adaptive, weights: {success: 3, latency: 1, cost: 1, health: 2}}}
providers:
  openai: {health_check: {interval: 30s, timeout: 5s, path: /models}}   # or `true`
```

`extract_routing` runs before the provider and model parsers: it takes the
`health_check` keys and `strategy` mappings out of the raw YAML (leaving the
strategy's name), so those parsers see only what they know.
"""

from __future__ import annotations

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
    success: float = 1.0
    latency: float = 1.0
    cost: float = 1.0
    health: float = 1.0


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """GET `base_url + path`, or (with `model`) a one-token chat request to that model."""

    interval: float = 30.0
    timeout: float = 5.0
    path: str = "/models"
    model: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    weights: Mapping[str, AdaptiveWeights] = field(default_factory=dict)  # by model name
    health: Mapping[str, HealthCheck] = field(default_factory=dict)  # by provider name


def extract_routing(raw: dict, problems: Problems) -> tuple[Mapping[str, AdaptiveWeights],
                                                            Mapping[str, HealthCheck]]:
    """Take `strategy:` mappings and `health_check:` out of raw models/providers."""
    weights: dict[str, AdaptiveWeights] = {}
    health: dict[str, HealthCheck] = {}
    models = raw.get("models")
    if isinstance(models, dict):
        for name, model in models.items():
            if isinstance(model, dict) and isinstance(model.get("strategy"), dict):
                path = join(join("models", str(name)), "strategy")
                s = Section(model["strategy"], path, problems)
                strategy = s.str("name", required=True)
                w = s.section("weights")
                d = AdaptiveWeights()
                parsed = AdaptiveWeights(
                    success=float(w.number("success", d.success)),
                    latency=float(w.number("latency", d.latency)),
                    cost=float(w.number("cost", d.cost)),
                    health=float(w.number("health", d.health)))
                w.finish()
                s.finish()
                if w.raw and strategy != "adaptive":
                    problems.add(join(path, "weights"), "only applies to strategy 'adaptive'")
                weights[str(name)] = parsed
                model["strategy"] = strategy  # the model parser checks the name
    providers = raw.get("providers")
    if isinstance(providers, dict):
        for name, provider in providers.items():
            if not isinstance(provider, dict) or "health_check" not in provider:
                continue
            value = provider.pop("health_check")
            path = join(join("providers", str(name)), "health_check")
            check = _health_check(value, path, problems)
            if check is not None:
                health[str(name)] = check
    return MappingProxyType(weights), MappingProxyType(health)


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
    if not check.path.startswith("/"):
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


def parse_routing(policies: Section, weights: Mapping[str, AdaptiveWeights],
                  health: Mapping[str, HealthCheck]) -> RoutingConfig:
    """`policies.retry` and `policies.breaker`, joined with what `extract_routing` found."""
    retry = parse_retry(policies.section("retry"))
    breaker = parse_breaker(policies.section("breaker"))
    return RoutingConfig(retry=retry, breaker=breaker, weights=weights, health=health)
