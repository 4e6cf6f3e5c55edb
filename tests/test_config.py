"""Config validation: every mistake is one line naming its field path."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from proxy.server.configure import ConfigError, load_config, parse_config

OK_MODELS = "models: {m: {targets: [{provider: x, model: y}]}}\n"


def problems(text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), env or {})
    return info.value.problems


def test_unknown_provider_in_a_target():
    assert problems("""
        providers: {openai: {type: openai, api_key: k}}
        models:
          gpt-4o:
            targets: [{provider: openai, model: gpt-4o}, {provider: azure-us, model: gpt-4o}]
    """) == ["models.gpt-4o.targets[1].provider: unknown provider 'azure-us'"]


def test_unknown_provider_type():
    [line] = problems("providers: {x: {type: azur, api_key: k}}\n" + OK_MODELS)
    assert line.startswith("providers.x.type: unknown provider type 'azur' (known: ")
    assert "openai" in line and "mock" in line


def test_missing_required_fields():
    assert problems("""
        providers: {x: {api_key: k}, y: {type: mock}}
        models: {m: {targets: [{model: a}, {provider: y}]}, n: {strategy: priority}}
    """) == ["providers.x.type: is required",
             "models.m.targets[0].provider: is required",
             "models.m.targets[1].model: is required",
             "models.n.targets: is required (a list of provider targets)"]


def test_empty_config_needs_providers_and_models():
    assert problems("") == ["providers: at least one provider is required",
                            "models: at least one model is required"]


def test_wrong_types():
    assert problems("""
        server: {port: abc, max_body_mb: -1, host: 5}
        providers: {x: {type: mock}}
        models: {m: {targets: [{provider: x, model: y, weight: heavy, rpm: 1.5}],
                     strategy: fastest}}
    """) == ["server.host: must be a non-empty string, got a number",
             "server.port: must be an integer >= 0, got 'abc'",
             "server.max_body_mb: must be a number >= 0.001, got -1",
             "models.m.targets[0].weight: must be a number >= 0, got 'heavy'",
             "models.m.targets[0].rpm: must be an integer >= 1, got 1.5",
             "models.m.strategy: must be one of priority, round_robin, weighted, least_busy, "
             "least_tokens, lowest_latency, cheapest, adaptive, affinity; got 'fastest'"]


def test_port_range():
    assert problems("server: {port: 70000}\nproviders: {x: {type: mock}}\n" + OK_MODELS) == [
        "server.port: must be a TCP port (0-65535), got 70000"]


def test_sections_that_are_not_mappings_are_reported_once():
    """Regression: a non-mapping also produced "is required" for each of its fields."""
    assert problems("providers: {x: 5}\n" + OK_MODELS) == [
        "providers.x: must be a mapping, got a number"]
    assert problems("providers: {x: {type: mock}}\nmodels: {m: {targets: [x]}}") == [
        "models.m.targets[0]: must be a mapping, got a string"]
    assert problems("providers: {x: {type: mock}}\nmodels: {m: {targets: {provider: x}}}") == [
        "models.m.targets: must be a list, got a mapping"]
    assert problems("providers: {x: {type: mock}}\nmodels: {m: 5}") == [
        "models.m: must be a mapping, got a number"]


def test_bad_durations():
    assert problems("""
        providers: {x: {type: mock, timeouts: {idle: forever}}}
        models: {m: {targets: [{provider: x, model: y}]}}
        policies: {timeouts: {connect: 5 parsecs, first_token: -1}}
    """) == ["policies.timeouts.connect: must be a duration like 5s, 250ms or 2m, got '5 parsecs'",
             "policies.timeouts.first_token: must be a duration like 5s, 250ms or 2m, got -1",
             "providers.x.timeouts.idle: must be a duration like 5s, 250ms or 2m, got 'forever'"]


def test_zero_timeouts_are_refused():
    """Regression: `first_token: 0` was accepted and failed every stream at once."""
    assert problems("""
        providers: {x: {type: mock, timeouts: {idle: 0s}}}
        models: {m: {targets: [{provider: x, model: y}]}}
        policies: {timeouts: {first_token: 0}}
    """) == ["policies.timeouts.first_token: must be longer than 0s",
             "providers.x.timeouts.idle: must be longer than 0s"]


def test_durations_parse():
    config = parse_config("""
providers: {x: {type: mock, timeouts: {first_token: 250ms}}}
models: {m: {targets: [{provider: x, model: y}]}}
policies: {timeouts: {connect: 2, idle: 1.5m, total: 1h}}
""", {})
    t = config.providers["x"].timeouts
    assert (t.connect, t.first_token, t.idle, t.total) == (2.0, 0.25, 90.0, 3600.0)
    assert config.timeouts.first_token == 30.0  # the default, not the provider's


def test_unknown_fields():
    assert problems("""
        servr: {}
        providers: {x: {type: mock, colour: red}}
        models: {m: {targets: [{provider: x, model: y, wieght: 2}]}}
        telemetry: {log_format: json, prometheus_port: 9}
    """) == ["providers.x.colour: unknown field",
             "models.m.targets[0].wieght: unknown field",
             "telemetry.prometheus_port: unknown field",
             "servr: unknown field"]


def test_bad_base_url():
    assert problems("""
        providers:
          x: {type: openai, base_url: "ftp://a/b"}
          y: {type: openai, base_url: "https://a/v1?x=1"}
          z: {type: openai, base_url: nohost}
        models: {m: {targets: [{provider: x, model: y}]}}
    """) == ["providers.x.base_url: must be an http:// or https:// URL, got 'ftp://a/b'",
             "providers.y.base_url: must not carry a query string or fragment",
             "providers.z.base_url: must be an http:// or https:// URL, got 'nohost'"]


def test_empty_targets_are_refused():
    """Regression: `targets: []` was accepted and the model could never answer."""
    assert problems("providers: {x: {type: mock}}\nmodels: {m: {targets: []}}") == [
        "models.m.targets: must list at least one target"]


def test_unknown_fallback_model():
    assert problems("providers: {x: {type: mock}}\n"
                    "models: {m: {targets: [{provider: x, model: y}], fallbacks: [nope]}}") == [
        "models.m.fallbacks[0]: unknown model 'nope'"]


def test_env_default_is_used():
    config = parse_config("""
providers:
  x: {type: openai, base_url: "${BASE:-http://127.0.0.1:8000/v1}", api_key: "${K:-local}"}
models: {m: {targets: [{provider: x, model: "${MODEL:-llama-3}"}]}}
server: {host: "${HOST:-0.0.0.0}"}
""", {"HOST": "10.0.0.1"})
    provider = config.providers["x"]
    assert provider.base_url == "http://127.0.0.1:8000/v1"
    assert provider.api_key == "local" and provider.enabled
    assert config.models["m"].targets[0].model == "llama-3"
    assert config.server.host == "10.0.0.1"  # set wins over the default


def test_env_value_is_substituted():
    config = parse_config('providers: {x: {type: openai, api_key: "${KEY}"}}\n' + OK_MODELS,
                          {"KEY": "sk-abc123456789"})
    assert config.providers["x"].api_key == "sk-abc123456789"
    assert "sk-abc123456789" not in repr(config)  # keys stay out of reprs (and logs)
    assert config.secrets() == ["sk-abc123456789"]


def test_unset_api_key_disables_the_provider():
    config = parse_config('providers: {x: {type: openai, api_key: "${OPENAI_API_KEY}"}}\n'
                          + OK_MODELS, {})
    provider = config.providers["x"]
    assert not provider.enabled
    assert provider.disabled_reason == "environment variable OPENAI_API_KEY is not set"
    empty = parse_config('providers: {x: {type: openai, api_key: "${K}"}}\n' + OK_MODELS,
                         {"K": ""})
    assert not empty.providers["x"].enabled  # set but empty counts as unset


def test_unset_variable_elsewhere_is_an_error():
    assert problems("""
        providers: {x: {type: openai, base_url: "${BASE}", headers: {x-org: "${ORG}"}}}
        models: {m: {targets: [{provider: x, model: "${MODEL}"}]}}
    """) == ["providers.x.base_url: environment variable BASE is not set",
             "providers.x.headers.x-org: environment variable ORG is not set",
             "models.m.targets[0].model: environment variable MODEL is not set"]


def test_unset_variable_inside_a_string_is_one_problem():
    """Regression: the emptied value was reported again (`got 'https:///v1'`)."""
    assert problems('providers: {x: {type: openai, base_url: "https://${HOST}/v1"}}\n'
                    + OK_MODELS) == ["providers.x.base_url: environment variable HOST is not set"]


def test_unset_variable_in_a_list_is_an_error():
    """Regression: `fallbacks: [${FB}]` reported "unknown model 'MissingEnv(var='FB')'"."""
    assert problems("providers: {x: {type: mock}}\nmodels: {m: {targets: [{provider: x, "
                    "model: y}], fallbacks: ['${FB}']}}") == [
        "models.m.fallbacks[0]: environment variable FB is not set"]


def test_invalid_yaml():
    [line] = problems("providers: {x: [}")
    assert line.startswith("<memory>: line 1, column 17: invalid YAML: ")


def test_not_a_mapping():
    assert problems("- a\n- b") == ["<memory>: the config must be a YAML mapping"]


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [f"{missing}: cannot read config file: No such file or "
                                   "directory"]
    if os.geteuid() != 0:
        locked = tmp_path / "locked.yaml"
        locked.write_text("providers: {}")
        locked.chmod(0)
        with pytest.raises(ConfigError) as info:
            load_config(locked)
        assert "Permission denied" in info.value.problems[0]


def test_load_config_reads_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "gw.yaml"
    path.write_text('providers: {x: {type: openai, api_key: "${GW_TEST_KEY}"}}\n' + OK_MODELS)
    monkeypatch.setenv("GW_TEST_KEY", "sk-from-env-123")
    config = load_config(path)
    assert config.providers["x"].api_key == "sk-from-env-123"
    assert config.source == str(path)


def test_example_config_is_valid_offline():
    config = load_config(Path(__file__).parents[1] / "proxy.example.yaml", env={})
    assert config.providers["offline"].enabled
    assert not config.providers["openai"].enabled
    assert "OPENAI_API_KEY" in config.providers["openai"].disabled_reason


def test_config_objects_are_frozen():
    config = parse_config("providers: {x: {type: mock}}\n" + OK_MODELS, {})
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.models["n"] = config.models["m"]  # type: ignore[index]


@pytest.mark.parametrize("provider,model,field,message", [
    ("{type: azure, base_url: 'https://x.openai.azure.com', api_key: k, api_version: '1; rm'}",
     "d", "providers.p.api_version", "does not fit this field"),
    ("{type: azure, base_url: 'https://x.openai.azure.com', api_key: k, api_style: v2}",
     "d", "providers.p.api_style", "must be one of deployments, v1"),
    ("{type: azure, base_url: 'https://x.openai.azure.com', api_key: k}",
     "../admin", "models.m.targets[0].model", "cannot go into a azure URL path"),
    ("{type: gemini, api_key: k}", "gemini-2.5-flash:streamGenerateContent?key=x",
     "models.m.targets[0].model", "cannot go into a gemini URL path"),
])
def test_values_that_enter_a_url_are_checked_at_start(provider, model, field, message):
    # Regression: these were only refused (500) when the first request arrived.
    with pytest.raises(ConfigError) as info:
        parse_config(f"""
providers: {{p: {provider}}}
models: {{m: {{targets: [{{provider: p, model: "{model}"}}]}}}}
""", {})
    assert any(p.startswith(field + ":") and message in p for p in info.value.problems), \
        info.value.problems


def test_state_durability_defaults_to_process_and_takes_only_its_two_values():
    base = "providers: {x: {type: mock}}\n" + OK_MODELS
    assert parse_config(base, {}).state.durability == "process"
    power = parse_config(base + "state: {ledger: 'sqlite:l.db', durability: power}\n", {})
    assert power.state.durability == "power"
    found = problems(base + "state: {ledger: 'sqlite:l.db', durability: disk}\n")
    assert any("state.durability" in p for p in found), found
