"""The config loader answers any YAML with a config or field-path problems, never a
traceback: random documents, random edits of a full config, hostile YAML."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.server.app import build_app
from proxy.server.configure import ConfigError, parse_config

ROOT = Path(__file__).parents[1]
FULL = yaml.safe_load("""
server: {host: 127.0.0.1, port: 4000, max_body_mb: 16, max_messages: 100}
admin: {key: admin-secret-123456}
providers:
  p: {type: openai, base_url: "http://127.0.0.1:1/v1", api_key: sk-123456789,
      headers: {x-a: b}, timeouts: {connect: 1s}, health_check: {interval: 5s, path: /models}}
  g: {type: gemini, api_key: "${X}"}
  az: {type: azure, base_url: "https://x.openai.azure.com", api_key: k1234567890,
       deployment: d, api_version: "2024-10-21"}
  o: {type: ollama, base_url: "http://127.0.0.1:2"}
  mo: {type: mock, latency_ms: 0}
models:
  m:
    strategy: {name: adaptive, weights: {success: 1, latency: 2}}
    targets: [{provider: p, model: gpt-4o, weight: 2, rpm: 10, tpm: 100,
               price: {input: 1, output: 2}, capabilities: [tools], max_output: 100,
               context_window: 1000}]
    fallbacks: [n]
    context_window_fallbacks: [n]
    drop_unsupported: true
    cache: {ttl: 5m}
  n: {targets: [{provider: mo, model: echo}]}
keys:
  - {name: a, key: sk-client-key-0123456789, models: ["gpt-*", m], rpm: 5, tpm: 100,
     max_concurrent: 2, budget: {usd: 10, per: day, thresholds: [50%, 0.8], degrade_at: 80%,
     local_only_at: 95}}
policies:
  timeouts: {connect: 5s, first_token: 30s, idle: 60s, total: 600s}
  retry: {attempts: 2, backoff: 0.25s, max_backoff: 8s, retry_after_cap: 30s, deadline: 100s,
          budget: {ratio: 0.2, min_retries: 10, window: 10s}}
  breaker: {failures: 5, reset_after: 30s, half_open_probes: 1}
  budgets: {global: {usd: 100}, providers: {p: {usd: 5, per: month}},
            alert_webhook: "http://x/y"}
  cache: {ttl: 5m, max_entries: 100, scope: key}
state: {backend: memory, ledger: none, prefix: "g:", instances: 1,
        on_outage: {budgets: fail_open}}
telemetry: {prometheus: true, log_format: json, log_level: info, tracing: false}
""")


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


PATHS = list(_paths(FULL))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(), st.text(max_size=8),
    st.sampled_from(["${X}", "${UNSET}", "${UNSET:-1}", "10s", "80%", "sqlite:", "m", "n", "p",
                     "postgresql://a@b/c", "http://x", "inf", "1e400", "-1", "0"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers(),
                              st.sampled_from(["name", "usd", "provider", "model", "type"])),
                    inner, max_size=3)), max_leaves=8)


def _load(text: str) -> None:
    """Parse, and build the app the config describes: only ConfigError may escape."""
    try:
        config = parse_config(text, {"X": "v"})
    except ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)
        return
    build_app(config)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
def test_any_edit_of_a_full_config_loads_or_names_problems(edits):
    doc = copy.deepcopy(FULL)
    for path, value in edits:
        if not path:
            doc = value
            continue
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            if isinstance(value, dict) and isinstance(node, dict) and len(path) % 2:
                node.update(value)  # extra keys next to the known ones
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    _load(text)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200),
                 st.dictionaries(st.text(max_size=8), VALUES, max_size=5).map(yaml.safe_dump)))
def test_random_yaml_loads_or_names_problems(text):
    _load(text)


@pytest.mark.parametrize("text, problem", [
    ("models: {m: {targets: [{provider: mo, model: echo}], fallbacks: [[]]}}",
     "models.m.fallbacks[0]: must be a non-empty string, got a list"),
    ("models: {m: {targets: [{provider: mo, model: echo}], "
     "context_window_fallbacks: [{a: 1}]}}",
     "models.m.context_window_fallbacks[0]: must be a non-empty string, got a mapping"),
    ("server: {max_body_mb: .inf}", "server.max_body_mb: must be a number >= 0.001, got inf"),
    ("keys: [{name: a, key: sk-client-key-0123456789, budget: {usd: .nan}}]",
     "keys[0].budget.usd: must be a number >= 0, got nan"),
    ("policies: {timeouts: {first_token: .inf}}", "policies.timeouts.first_token: must be a "
     "duration"),
    ("a: &a [*a]", "a: nested more than 32 levels deep"),
    ("x: " + "[" * 3000 + "]" * 3000, "nested more than 32 levels deep"),
    ("\n".join(["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]),
     "more than 200000 values"),
])
def test_hostile_configs_name_their_problem(text, problem):
    base = "providers: {mo: {type: mock}}\n"
    if not text.startswith(("models", "a:", "x:", "l0")):
        base += "models: {m: {targets: [{provider: mo, model: echo}]}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(base + text, {})
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_cli_check_answers_fallbacks_list_of_list_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {mo: {type: mock}}\n"
                   "models: {m: {targets: [{provider: mo, model: echo}], fallbacks: [[]]}}\n")
    done = subprocess.run([sys.executable, "-m", "proxy", "check", "--config", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "models.m.fallbacks[0]: must be a non-empty string, got a list" in done.stderr
