"""Parsing the upstream side of the config: providers, models and their targets."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Mapping, Protocol
from urllib.parse import urlsplit

from proxy.config.catalog import CAPABILITIES, lookup
from proxy.config.credentials import parse_api_keys
from proxy.config.policies import TASK_NAME
from proxy.config.reader import MissingEnv, Problems, Section, join
from proxy.config.responses import parse_mode
from proxy.config.types import (DEFAULT_MAX_CONNECTIONS, ModelConfig, ProviderConfig,
                                TargetConfig, Timeouts)

class ProviderSchema(Protocol):
    """What the config needs of a provider type (a translator class satisfies it)."""

    default_base_url: str | None
    requires_api_key: bool
    provider_options: Mapping[str, Any]
    model_pattern: "re.Pattern[str] | None"
    in_process: bool


ProviderTypes = Mapping[str, ProviderSchema]

#: provider types that run on the operator's own machines: their targets cost $0
#: unless the config gives them a price (so `cheapest` and a budget's
#: `local_only_at` treat them as free)
LOCAL_TYPES = frozenset({"ollama", "mock"})

STRATEGIES = ("priority", "round_robin", "weighted", "least_busy", "least_tokens",
              "lowest_latency", "cheapest", "adaptive", "affinity")


def parse_timeouts(raw: Any, path: str, problems: Problems, base: Timeouts) -> Timeouts:
    s = Section(raw, path, problems)
    result = Timeouts(
        connect=s.duration("connect", base.connect),
        first_token=s.duration("first_token", base.first_token),
        idle=s.duration("idle", base.idle),
        total=s.duration("total", base.total),
        first_token_last=s.duration("first_token_last", base.first_token_last),
        client_write=s.duration("client_write", base.client_write),
    )
    for name in ("connect", "first_token", "idle", "total", "first_token_last", "client_write"):
        value = getattr(result, name)
        if s.has(name) and value is not None and value <= 0:  # it would fail every request
            problems.add(join(path, name), "must be longer than 0s")
    s.finish()
    return result


def optional_secret(s: Section, key: str) -> str | None:
    value = s.raw_value(key)
    if value is None or isinstance(value, MissingEnv):
        return None
    if not isinstance(value, str) or not value:
        s.problems.add(join(s.path, key), "must be a non-empty string")
        return None
    return value


def parse_providers(s: Section, timeouts: Timeouts,
                    types: ProviderTypes) -> dict[str, ProviderConfig]:
    providers: dict[str, ProviderConfig] = {}
    if not s.raw:
        s.problems.add("providers", "at least one provider is required")
    for name in list(s.raw):
        p = s.section(name)
        kind = p.str("type", required=True)
        if kind is not None and kind not in types:
            known = ", ".join(sorted(types))
            p.problems.add(join(p.path, "type"), f"unknown provider type '{kind}' (known: {known})")
            kind = None
        translator = types.get(kind) if kind else None
        base_url = p.str("base_url", translator.default_base_url if translator else None)
        if translator and base_url is None and not translator.in_process:
            p.problems.add(join(p.path, "base_url"), "is required for this provider type")
        if base_url and not (translator and translator.in_process):
            base_url = _check_url(base_url, join(p.path, "base_url"), p.problems)
        api_key, disabled = None, None
        raw_key = p.raw_value("api_key")
        pool = parse_api_keys(p)
        if pool is not None and raw_key is not None:
            p.problems.add(join(p.path, "api_keys"), "give either api_key or api_keys, not both")
        elif pool is not None:
            api_key = pool.credentials[0].key if pool.credentials else None
            if pool.unset_vars and not pool.credentials:
                names = ", ".join(pool.unset_vars)
                disabled = f"environment variable(s) {names} are not set (every api_keys entry)"
        elif isinstance(raw_key, MissingEnv):
            disabled = f"environment variable {raw_key.var} is not set"
        elif raw_key is not None:
            api_key = optional_secret(p, "api_key")
        elif translator and translator.requires_api_key:
            p.problems.add(join(p.path, "api_key"), "is required for this provider type")
        headers = _headers(p.section("headers"))
        options = {}
        for opt_name, opt in (translator.provider_options if translator else {}).items():
            options[opt_name] = _option(p, opt_name, opt)
        provider_timeouts = parse_timeouts(p.raw_value("timeouts"), join(p.path, "timeouts"),
                                      p.problems, timeouts)
        responses = parse_mode(p, kind)
        max_connections = p.number("max_connections", DEFAULT_MAX_CONNECTIONS,
                                   minimum=1, integer=True)
        p.finish()
        if kind:
            providers[str(name)] = ProviderConfig(
                name=str(name), type=kind, base_url=(base_url or "").rstrip("/"),
                api_key=api_key, disabled_reason=disabled,
                headers=MappingProxyType(headers), timeouts=provider_timeouts,
                options=MappingProxyType(options), responses=responses,
                max_connections=max_connections,
                credentials=pool.credentials if pool is not None else (),
                unset_credentials=pool.unset if pool is not None else ())
    return providers


def _option(p: Section, name: str, opt: Any) -> Any:
    if opt.kind is str:
        value = p.str(name, opt.default, required=opt.required, choices=opt.choices)
        if value is not None and opt.pattern and not re.fullmatch(opt.pattern, value):
            p.problems.add(join(p.path, name), f"{value!r} does not fit this field "
                           f"({opt.help or 'see the provider docs'})")
            return opt.default
        return value
    if opt.kind is bool:
        return p.bool(name, opt.default)
    if opt.kind in (int, float):
        return p.number(name, opt.default, integer=opt.kind is int, required=opt.required)
    if opt.kind is list:  # a list of strings, each matching the pattern if one is given
        if not p.has(name):
            return opt.default
        items = p.list(name)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item or (
                    opt.pattern and not re.fullmatch(opt.pattern, item)):
                p.problems.add(join(join(p.path, name), i), f"{item!r} does not fit this "
                               f"field ({opt.help or 'see the provider docs'})")
                return opt.default
        return tuple(items)
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


def parse_models(s: Section, providers: dict[str, ProviderConfig],
                 types: ProviderTypes) -> dict[str, ModelConfig]:
    models: dict[str, ModelConfig] = {}
    if not s.raw:
        s.problems.add("models", "at least one model is required")
    for name in list(s.raw):
        m = s.section(name)
        targets = tuple(t for t in m.list("targets", lambda raw, path: _target(
            raw, path, s.problems, providers)) if t is not None)
        if m.ok and not m.has("targets"):
            s.problems.add(join(m.path, "targets"), "is required (a list of provider targets)")
        elif m.ok and isinstance(m.raw["targets"], list | None) and not m.raw["targets"]:
            s.problems.add(join(m.path, "targets"), "must list at least one target")
        strategy = m.str("strategy", "priority", choices=STRATEGIES)
        fallbacks = m.names("fallbacks")
        cw_fallbacks = m.names("context_window_fallbacks")
        drop = m.bool("drop_unsupported", False)
        m.finish()
        models[str(name)] = ModelConfig(name=str(name), targets=targets, strategy=strategy,
                                        fallbacks=fallbacks, context_window_fallbacks=cw_fallbacks,
                                        drop_unsupported=drop)
    for model in models.values():
        for i, target in enumerate(model.targets):
            kind = providers[target.provider].type
            pattern = types[kind].model_pattern
            if pattern is not None and not pattern.fullmatch(target.model):
                s.problems.add(join(join(join("models", model.name), "targets"), i) + ".model",
                               f"'{target.model}' cannot go into a {kind} URL path "
                               "(letters, digits, '-', '_' and '.' only)")
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
    overrides = _model_info_overrides(t)
    quality = _quality(t.section("quality"))
    tier = t.str("tier", None)
    t.finish()
    if provider is not None and provider not in providers:
        if provider not in _declared_names(problems):
            problems.add(join(path, "provider"), f"unknown provider '{provider}'")
        return None
    if provider is None or model is None:
        return None
    if providers[provider].type in LOCAL_TYPES:
        # the model table's prices are a cloud's, not this machine's
        if "input" not in overrides and "output" not in overrides:
            overrides = {"input": 0.0, "output": 0.0, "cached_input": 0.0, **overrides}
    return TargetConfig(provider=provider, model=model, weight=float(weight), rpm=rpm, tpm=tpm,
                        info=lookup(model).with_overrides(overrides),
                        quality=MappingProxyType(quality), tier=tier)


def _quality(q: Section) -> dict[str, float]:
    """Scores in [0, 1] per task kind; `default` for a task the target has no score for."""
    scores: dict[str, float] = {}
    for task in list(q.raw):
        value = q.number(str(task), None)
        if value is None:
            continue
        if value > 1:
            q.problems.add(join(q.path, str(task)), f"must be a score in [0, 1], got {value!r}")
        elif task != "default" and not TASK_NAME.match(str(task)):
            q.problems.add(join(q.path, str(task)), "a task kind is lower-case letters, digits, "
                                                     "'_', '-' and '.' (at most 64)")
        else:
            scores[str(task)] = float(value)
    q.finish()
    return scores


def _model_info_overrides(t: Section) -> dict[str, Any]:
    """Per-target corrections to the shipped model table."""
    overrides: dict[str, Any] = {}
    for key in ("context_window", "max_output", "default_max_tokens"):
        value = t.number(key, None, minimum=1, integer=True)
        if value is not None:
            overrides[key] = value
    price = t.section("price")
    for key in ("input", "output", "cached_input", "cache_write", "cache_write_1h"):
        value = price.number(key, None, minimum=0)
        if value is not None:
            overrides[key] = float(value)
    price.finish()
    capabilities = t.list("capabilities")
    if t.has("capabilities"):
        unknown = [c for c in capabilities if c not in CAPABILITIES]
        if unknown:
            t.problems.add(join(t.path, "capabilities"),
                           f"unknown capability {unknown[0]!r} (known: {', '.join(CAPABILITIES)})")
        overrides["capabilities"] = [c for c in capabilities if c in CAPABILITIES]
    return overrides


def _declared_names(problems: Problems) -> set[str]:
    """Providers that exist but failed validation: don't report them twice."""
    return {p.split(".")[1].split(":")[0] for p in problems if p.startswith("providers.")}
