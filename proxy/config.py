"""The YAML config, validated into frozen typed objects.

`load_config(path)` raises `ConfigError` with every problem found, each naming
the field path. Providers whose `${KEY}` is unset are kept but disabled, with
the variable's name, so their models can answer 503 saying why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

from proxy.config_reader import MissingEnv, Problems, Section, interpolate, join
from translators import PROVIDER_TYPES

STRATEGIES = ("priority", "round_robin", "weighted", "least_busy", "lowest_latency",
              "cheapest", "adaptive")
_NOT_YET = "is not supported by this version of gatewise"


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Timeouts:
    """connect: TCP+TLS; first_token: until the first content of a stream;
    idle: between two reads of a stream; total: a whole non-streaming call."""

    connect: float = 5.0
    first_token: float = 30.0
    idle: float = 60.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    disabled_reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeouts: Timeouts = Timeouts()
    options: Mapping[str, Any] = field(default_factory=dict)

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

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


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

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    log_format: str = "json"
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, ModelConfig]
    timeouts: Timeouts = Timeouts()
    telemetry: TelemetryConfig = TelemetryConfig()
    admin_key: str | None = field(default=None, repr=False)
    source: str = "<memory>"

    def secrets(self) -> list[str]:
        """Every credential loaded, so logs and errors can redact them by value."""
        values = [p.api_key for p in self.providers.values() if p.api_key]
        values += [v for p in self.providers.values() for v in p.headers.values()]
        if self.admin_key:
            values.append(self.admin_key)
        return [v for v in values if len(v) >= 8]


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from None
    config = parse_config(text, env if env is not None else os.environ, source=str(path))
    return config


def parse_config(text: str, env: Mapping[str, str], source: str = "<memory>") -> GatewayConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{source}:{where}: invalid YAML: {problem}"]) from None
    problems = Problems()
    if raw is None:
        raw = {}
    raw = interpolate(raw, env, problems)
    root = Section(raw, "", problems)
    if not root.ok:
        raise ConfigError([f"{source}: the config must be a YAML mapping"])
    server = _server(root.section("server"))
    timeouts = _timeouts(root.section("policies").raw.get("timeouts"), "policies.timeouts",
                         problems, Timeouts())
    _policies(root.section("policies"))
    providers = _providers(root.section("providers"), timeouts)
    models = _models(root.section("models"), providers)
    telemetry = _telemetry(root.section("telemetry"))
    admin = root.section("admin")
    admin_key = _optional_secret(admin, "key")
    admin.finish()
    for unsupported in ("keys", "state"):
        if root.has(unsupported):
            root.raw_value(unsupported)
            problems.add(unsupported, _NOT_YET)
    root.finish()
    if problems:
        raise ConfigError(list(problems))
    return GatewayConfig(server=server, providers=MappingProxyType(providers),
                         models=MappingProxyType(models), timeouts=timeouts,
                         telemetry=telemetry, admin_key=admin_key, source=source)


def _server(s: Section) -> ServerConfig:
    d = ServerConfig()
    config = ServerConfig(
        host=s.str("host", d.host),
        port=s.number("port", d.port, minimum=0, integer=True),
        max_body_mb=s.number("max_body_mb", d.max_body_mb, minimum=0.001),
        max_messages=s.number("max_messages", d.max_messages, minimum=1, integer=True),
    )
    if config.port > 65535:
        s.problems.add(join(s.path, "port"), f"must be a TCP port (0-65535), got {config.port}")
    s.finish()
    return config


def _timeouts(raw: Any, path: str, problems: Problems, base: Timeouts) -> Timeouts:
    s = Section(raw, path, problems)
    result = Timeouts(
        connect=s.duration("connect", base.connect),
        first_token=s.duration("first_token", base.first_token),
        idle=s.duration("idle", base.idle),
        total=s.duration("total", base.total),
    )
    s.finish()
    return result


def _policies(s: Section) -> None:
    s.raw_value("timeouts")  # read above, before providers need it
    for name in ("retry", "breaker", "budgets", "cache"):
        if s.has(name):
            s.raw_value(name)
            s.problems.add(join(s.path, name), _NOT_YET)
    s.finish()


def _optional_secret(s: Section, key: str) -> str | None:
    value = s.raw_value(key)
    if value is None or isinstance(value, MissingEnv):
        return None
    if not isinstance(value, str) or not value:
        s.problems.add(join(s.path, key), "must be a non-empty string")
        return None
    return value


def _providers(s: Section, timeouts: Timeouts) -> dict[str, ProviderConfig]:
    providers: dict[str, ProviderConfig] = {}
    if not s.raw:
        s.problems.add("providers", "at least one provider is required")
    for name in list(s.raw):
        p = s.section(name)
        kind = p.str("type", required=True)
        if kind is not None and kind not in PROVIDER_TYPES:
            known = ", ".join(sorted(PROVIDER_TYPES))
            p.problems.add(join(p.path, "type"), f"unknown provider type '{kind}' (known: {known})")
            kind = None
        translator = PROVIDER_TYPES.get(kind) if kind else None
        base_url = p.str("base_url", translator.default_base_url if translator else None)
        if translator and base_url is None and not translator.in_process:
            p.problems.add(join(p.path, "base_url"), "is required for this provider type")
        if base_url and not (translator and translator.in_process):
            base_url = _check_url(base_url, join(p.path, "base_url"), p.problems)
        api_key, disabled = None, None
        raw_key = p.raw_value("api_key")
        if isinstance(raw_key, MissingEnv):
            disabled = f"environment variable {raw_key.var} is not set"
        elif raw_key is not None:
            api_key = _optional_secret(p, "api_key")
        elif translator and translator.requires_api_key:
            p.problems.add(join(p.path, "api_key"), "is required for this provider type")
        headers = _headers(p.section("headers"))
        options = {}
        for opt_name, opt in (translator.provider_options if translator else {}).items():
            options[opt_name] = _option(p, opt_name, opt)
        provider_timeouts = _timeouts(p.raw_value("timeouts"), join(p.path, "timeouts"),
                                      p.problems, timeouts)
        p.finish()
        if kind:
            providers[str(name)] = ProviderConfig(
                name=str(name), type=kind, base_url=(base_url or "").rstrip("/"),
                api_key=api_key, disabled_reason=disabled,
                headers=MappingProxyType(headers), timeouts=provider_timeouts,
                options=MappingProxyType(options))
    return providers


def _option(p: Section, name: str, opt: Any) -> Any:
    if opt.kind is str:
        return p.str(name, opt.default, required=opt.required)
    if opt.kind is bool:
        return p.bool(name, opt.default)
    if opt.kind in (int, float):
        return p.number(name, opt.default, integer=opt.kind is int, required=opt.required)
    value = p.raw_value(name)
    return opt.default if value is None else value


def _headers(s: Section) -> dict[str, str]:
    headers = {}
    for key, value in s.raw.items():
        s.raw_value(key)
        if isinstance(value, MissingEnv):
            s.problems.add(join(s.path, key), f"environment variable {value.var} is not set")
        elif not isinstance(value, str) or "\r" in value or "\n" in value:
            s.problems.add(join(s.path, key), "must be a single-line string")
        else:
            headers[str(key).lower()] = value
    return headers


def _check_url(url: str, path: str, problems: Problems) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.add(path, f"must be an http:// or https:// URL, got '{url}'")
        return None
    if parts.query or parts.fragment:
        problems.add(path, "must not carry a query string or fragment")
        return None
    return url


def _models(s: Section, providers: dict[str, ProviderConfig]) -> dict[str, ModelConfig]:
    models: dict[str, ModelConfig] = {}
    if not s.raw:
        s.problems.add("models", "at least one model is required")
    for name in list(s.raw):
        m = s.section(name)
        targets = tuple(t for t in m.list("targets", lambda raw, path: _target(
            raw, path, s.problems, providers)) if t is not None)
        if m.ok and not m.has("targets"):
            s.problems.add(join(m.path, "targets"), "is required (a list of provider targets)")
        strategy = m.str("strategy", "priority", choices=STRATEGIES)
        fallbacks = tuple(m.list("fallbacks"))
        cw_fallbacks = tuple(m.list("context_window_fallbacks"))
        drop = m.bool("drop_unsupported", False)
        m.finish()
        models[str(name)] = ModelConfig(name=str(name), targets=targets, strategy=strategy,
                                        fallbacks=fallbacks, context_window_fallbacks=cw_fallbacks,
                                        drop_unsupported=drop)
    for model in models.values():
        for key, names in (("fallbacks", model.fallbacks),
                           ("context_window_fallbacks", model.context_window_fallbacks)):
            for i, other in enumerate(names):
                if other not in models:
                    s.problems.add(join(join(join("models", model.name), key), i),
                                   f"unknown model '{other}'")
    return models


def _target(raw: Any, path: str, problems: Problems,
            providers: dict[str, ProviderConfig]) -> TargetConfig | None:
    t = Section(raw, path, problems)
    provider = t.str("provider", required=True)
    model = t.str("model", required=True)
    weight = t.number("weight", 1.0, minimum=0)
    rpm = t.number("rpm", None, minimum=1, integer=True)
    tpm = t.number("tpm", None, minimum=1, integer=True)
    t.finish()
    if provider is not None and provider not in providers:
        if provider not in _declared_names(problems):
            problems.add(join(path, "provider"), f"unknown provider '{provider}'")
        return None
    if provider is None or model is None:
        return None
    return TargetConfig(provider=provider, model=model, weight=float(weight), rpm=rpm, tpm=tpm)


def _declared_names(problems: Problems) -> set[str]:
    """Providers that exist but failed validation: don't report them twice."""
    return {p.split(".")[1].split(":")[0] for p in problems if p.startswith("providers.")}


def _telemetry(s: Section) -> TelemetryConfig:
    config = TelemetryConfig(
        log_format=s.str("log_format", "json", choices=("json", "text")),
        log_level=s.str("log_level", "info", choices=("debug", "info", "warning", "error")),
    )
    s.finish()
    return config
