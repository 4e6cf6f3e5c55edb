"""Parsing the observability side of the config: `telemetry`, `policies.cache`
and each model's optional `cache: true|false`.

Everything here is off or cheap by default: the cache only runs where the YAML
turns it on, tracing only when an OTLP endpoint (or `tracing: true`) is set.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from proxy.config.reader import Problems, Section, join

OTLP_EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    log_format: str = "json"
    log_level: str = "info"
    prometheus: bool = True  # serve GET /metrics
    otlp_endpoint: str | None = None  # OTLP/HTTP traces, e.g. http://collector:4318/v1/traces
    tracing: bool = False  # spans are made (and exported where an endpoint is set)
    capture_content: bool = False  # prompt and completion text in spans
    service_name: str = "gatewise"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """`policies.cache` plus the per-model switches (`models.NAME.cache`)."""

    enabled: bool = False  # the global default; a model's own `cache:` wins
    ttl: float = 300.0
    max_entries: int = 10_000
    scope: str = "key"  # key: per client key (tenants never share); global: everyone
    max_entry_bytes: int = 1_048_576  # a bigger answer is not stored
    models: Mapping[str, bool] = field(default_factory=dict)

    def for_model(self, name: str) -> bool:
        return self.models.get(name, self.enabled)

    @property
    def any(self) -> bool:
        return self.enabled or any(self.models.values())


def parse_telemetry(s: Section) -> TelemetryConfig:
    d = TelemetryConfig()
    endpoint = s.str("otlp_endpoint", None)
    if endpoint is not None:
        if not endpoint.startswith(("http://", "https://")):
            s.problems.add(join(s.path, "otlp_endpoint"),
                           f"must be an http:// or https:// URL, got '{endpoint}'")
            endpoint = None
        elif not _otlp_installed():
            s.problems.add(join(s.path, "otlp_endpoint"),
                           "needs the OTLP exporter: pip install 'gatewise[otlp]'")
    config = TelemetryConfig(
        log_format=s.str("log_format", d.log_format, choices=("json", "text")),
        log_level=s.str("log_level", d.log_level, choices=("debug", "info", "warning", "error")),
        prometheus=s.bool("prometheus", d.prometheus),
        otlp_endpoint=endpoint,
        tracing=s.bool("tracing", endpoint is not None),
        capture_content=s.bool("capture_content", d.capture_content),
        service_name=s.str("service_name", d.service_name),
    )
    s.finish()
    return config


def _otlp_installed() -> bool:
    try:
        return importlib.util.find_spec(OTLP_EXPORTER_MODULE) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def extract_model_cache(raw_models: Any, problems: Problems) -> dict[str, bool]:
    """Take each model's `cache:` out of the raw mapping (so the model parser does
    not see it) and return {model: on/off}."""
    switches: dict[str, bool] = {}
    if not isinstance(raw_models, dict):
        return switches
    for name, entry in raw_models.items():
        if not isinstance(entry, dict) or "cache" not in entry:
            continue
        value = entry.pop("cache")
        if isinstance(value, bool):
            switches[str(name)] = value
        else:
            problems.add(join(join("models", str(name)), "cache"),
                         f"must be true or false, got {value!r}")
    return switches


def parse_cache(raw: Any, path: str, problems: Problems,
                model_switches: Mapping[str, bool]) -> CacheConfig:
    d = CacheConfig()
    s = Section(raw, path, problems)
    present = raw is not None and s.ok
    config = CacheConfig(
        enabled=s.bool("enabled", present),
        ttl=s.duration("ttl", d.ttl) or d.ttl,
        max_entries=s.number("max_entries", d.max_entries, minimum=1, integer=True),
        scope=s.str("scope", d.scope, choices=("key", "global")),
        max_entry_bytes=s.number("max_entry_bytes", d.max_entry_bytes, minimum=1, integer=True),
        models=MappingProxyType(dict(model_switches)),
    )
    s.finish()
    return config
