"""The YAML config, validated into frozen typed objects.

`load_config(path)` raises `ConfigError` with every problem found, each naming
the field path. Providers whose `${KEY}` is unset are kept but disabled, with
the variable's name, so their models can answer 503 saying why.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import yaml

from proxy.config.reader import MAX_DEPTH, Problems, Section, TooLarge, interpolate, join
from proxy.config.routes import ADMIN_KEY_NAME, known_tasks, parse_routes
from proxy.config.routing import extract_routing, parse_routing
from proxy.config.types import (GatewayConfig, ModelConfig, ProviderConfig, ServerConfig,
                                TargetConfig, TelemetryConfig, Timeouts)
from proxy.config.observe import extract_slos, parse_alerts
from proxy.config.policies import hash_key, parse_budgets, parse_keys, parse_state
from proxy.config.responses import parse_responses
from proxy.config.telemetry import extract_model_cache, parse_cache, parse_telemetry
from proxy.config.upstreams import (STRATEGIES, ProviderTypes, optional_secret, parse_models, parse_providers,
                                    parse_timeouts)

__all__ = ["ConfigError", "GatewayConfig", "ModelConfig", "ProviderConfig", "ServerConfig",
           "STRATEGIES", "TargetConfig", "TelemetryConfig", "Timeouts", "load_config",
           "parse_config"]

_NOT_YET = "is not supported by this version of gatewise"
MAX_JSON_DEPTH = 200


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: str | Path, env: Mapping[str, str] | None = None, *,
                provider_types: ProviderTypes) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from None
    config = parse_config(text, env if env is not None else os.environ, source=str(path),
                          provider_types=provider_types)
    return config


def parse_config(text: str, env: Mapping[str, str], source: str = "<memory>", *,
                 provider_types: ProviderTypes) -> GatewayConfig:
    """`provider_types` maps each provider `type` to its schema (the translators
    registry in gatewise; handed in so the config floor imports nothing above it)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{source}:{where}: invalid YAML: {problem}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: nested more than {MAX_DEPTH} levels deep"]) from None
    problems = Problems()
    if raw is None:
        raw = {}
    base = Path(source).parent if source and not source.startswith("<") else None
    try:
        raw = interpolate(raw, env, problems, base=base)
    except TooLarge as exc:
        raise ConfigError([f"{source}: {exc}"]) from None
    root = Section(raw, "", problems)
    if not root.ok:
        raise ConfigError([f"{source}: the config must be a YAML mapping"])
    server = _server(root.section("server"))
    timeouts = parse_timeouts(root.section("policies").raw.get("timeouts"), "policies.timeouts",
                               problems, Timeouts())
    routing = parse_routing(root.section("policies"), extract_routing(root.raw, problems))
    policies = root.section("policies")
    _policies(policies)
    providers = parse_providers(root.section("providers"), timeouts, provider_types)
    budgets = parse_budgets(policies.raw.get("budgets"), "policies.budgets", problems, providers)
    keys = parse_keys(root.raw_value("keys"), problems)
    state = parse_state(root.raw_value("state"), problems)
    model_cache = extract_model_cache(root.raw.get("models"), problems)
    slos = extract_slos(root.raw.get("models"), problems)
    models = parse_models(root.section("models"), providers, provider_types)
    cache = parse_cache(policies.raw.get("cache"), "policies.cache", problems, model_cache)
    telemetry = parse_telemetry(root.section("telemetry"))
    responses = parse_responses(root.raw_value("responses"), problems)
    admin = root.section("admin")
    admin_key = optional_secret(admin, "key")
    ui = admin.bool("ui", True)
    admin.finish()
    alerts = parse_alerts(root.raw_value("alerts"), problems, budgets.alert_webhook)
    routes = parse_routes(root.raw_value("routes"), problems, models, keys, admin_key is not None)
    admin_digest = hash_key(admin_key) if admin_key is not None else None
    for i, key in enumerate(keys):
        if admin_key is not None and key.name == ADMIN_KEY_NAME:
            problems.add(f"keys[{i}].name", f"'{ADMIN_KEY_NAME}' is the admin key's name on the "
                                            "data plane: choose another")
        if admin_digest is not None and key.digest == admin_digest:  # at load: no timing
            problems.add(f"keys[{i}]", "is the same key as admin.key: a client key must not "
                                       "open the admin API")
    root.finish()
    if problems:
        raise ConfigError(list(problems))
    return GatewayConfig(server=server, providers=MappingProxyType(providers),
                         models=MappingProxyType(models), timeouts=timeouts,
                         telemetry=telemetry, cache=cache, admin_key=admin_key, source=source,
                         routing=routing, keys=keys, budgets=budgets, state=state,
                         responses=responses, slos=slos, alerts=alerts, ui=ui,
                         routes=routes, tasks=known_tasks(models, keys, routes), files=(
                             (source,) if base is not None else ()) + tuple(problems.files))


def _server(s: Section) -> ServerConfig:
    d = ServerConfig()
    config = ServerConfig(
        host=s.str("host", d.host),
        port=s.number("port", d.port, minimum=0, integer=True),
        max_body_mb=s.number("max_body_mb", d.max_body_mb, minimum=0.001),
        max_messages=s.number("max_messages", d.max_messages, minimum=1, integer=True),
        max_json_depth=s.number("max_json_depth", d.max_json_depth, minimum=2, integer=True),
        max_n=s.number("max_n", d.max_n, minimum=1, integer=True),
        max_tools=s.number("max_tools", d.max_tools, minimum=0, integer=True),
        max_in_flight=s.number("max_in_flight", d.max_in_flight, minimum=1, integer=True),
        shutdown_timeout=s.duration("shutdown_timeout", d.shutdown_timeout),
        admin_port=s.number("admin_port", d.admin_port, minimum=0, integer=True),
        admin_host=s.str("admin_host", d.admin_host),
        allow_unauthenticated=s.bool("allow_unauthenticated", d.allow_unauthenticated),
    )
    for name in ("port", "admin_port"):
        value = getattr(config, name)
        if value is not None and value > 65535:
            s.problems.add(join(s.path, name), f"must be a TCP port (0-65535), got {value}")
    if config.admin_port is not None and config.admin_port == config.port != 0:
        s.problems.add(join(s.path, "admin_port"), "must differ from server.port")
    if config.max_json_depth > MAX_JSON_DEPTH:
        # what an upstream body may nest, plus the levels a translator adds, must stay
        # under the JSON encoder's own limit (254)
        s.problems.add(join(s.path, "max_json_depth"),
                       f"must be at most {MAX_JSON_DEPTH}, got {config.max_json_depth}")
    s.finish()
    return config


def _policies(s: Section) -> None:
    s.raw_value("timeouts")  # read above, before providers need it
    s.raw_value("retry")  # parsed by proxy/config/routing.py
    s.raw_value("breaker")
    s.raw_value("budgets")  # parsed by proxy/config/policies.py
    s.raw_value("cache")  # parsed by proxy/config/telemetry.py
    s.finish()
