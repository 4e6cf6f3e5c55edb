"""The Responses API's config: `responses.retention` and each provider's `responses:`."""

from __future__ import annotations

import textwrap

import pytest

from proxy.config.responses import DEFAULT_RETENTION, is_native
from proxy.server.configure import ConfigError, parse_config

MODELS = "models: {m: {targets: [{provider: a, model: y}]}}\n"


def config(text: str):
    return parse_config(textwrap.dedent(text) + MODELS, {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(text)
    return info.value.problems


def test_defaults_native_only_at_openais_own_url():
    c = config("""
        providers:
          a: {type: openai, api_key: k}
          compat: {type: openai, base_url: "https://api.deepseek.com/v1", api_key: k}
          slash: {type: openai, base_url: "https://api.openai.com/v1/", api_key: k}
          offline: {type: mock}
          claude: {type: anthropic, api_key: k}
    """)
    assert c.responses.retention == DEFAULT_RETENTION == 30 * 86400
    native = {name: is_native(p) for name, p in c.providers.items()}
    assert native == {"a": True, "compat": False, "slash": True, "offline": False, "claude": False}


def test_explicit_modes_win():
    c = config("""
        providers:
          a: {type: openai, api_key: k, responses: translate}
          local: {type: openai, base_url: "http://127.0.0.1:8000/v1", responses: native}
        responses: {retention: 12h}
    """)
    assert not is_native(c.providers["a"]) and is_native(c.providers["local"])
    assert c.responses.retention == 12 * 3600


def test_mistakes_name_the_field():
    assert problems("""
        providers:
          a: {type: openai, api_key: k, responses: yes-please}
          b: {type: anthropic, api_key: k, responses: native}
        responses: {retention: forever, keep: true}
    """) == [
        "providers.a.responses: must be one of native, translate; got 'yes-please'",
        "providers.b.responses: 'native' needs a provider of type openai; "
        "a anthropic upstream has no Responses API",
        "responses.retention: must be a duration like 5s, 250ms or 2m, got 'forever'",
        "responses.keep: unknown field",
    ]
    assert problems("responses: {retention: 0s}\nproviders: {a: {type: mock}}\n") == [
        "responses.retention: must be longer than 0s"]
