"""The docs are part of the product: every YAML example in README.md and docs/ is a
config `gatewise check` accepts (a block meant as a fragment starts with
`# partial` and must still parse), every default docs/config.md states is the
code's default, and no working notes are left in them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from proxy.config.policies import StateConfig
from proxy.config.routing import BreakerConfig, HealthCheck, RetryConfig
from proxy.config.telemetry import CacheConfig, TelemetryConfig
from proxy.config.types import DEFAULT_MAX_CONNECTIONS, GatewayConfig, ServerConfig, Timeouts
from proxy.config.reader import parse_duration
from proxy.config.observe import AlertsConfig, AlertSink
from proxy.config.responses import DEFAULT_RETENTION
from proxy.server.configure import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def blocks() -> list[tuple[str, int, str]]:
    out = []
    for path in DOCS:
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            line = text[:match.start()].count("\n") + 1
            out.append((str(path.relative_to(ROOT)), line, match.group(1)))
    return out


@pytest.mark.parametrize(("doc", "line", "block"), blocks(),
                         ids=[f"{d}:{n}" for d, n, _ in blocks()])
def test_every_yaml_block_parses_and_is_a_valid_config(doc, line, block):
    try:
        yaml.safe_load(block)
    except yaml.YAMLError as exc:
        pytest.fail(f"{doc}:{line}: the YAML does not parse: {exc}")
    if block.lstrip().startswith("# partial"):
        return  # a fragment, said so: parsing is all it promises
    env = {name: f"{name}-set-for-the-docs-test-0123456789" for name in _VAR.findall(block)}
    try:
        parse_config(block, env)
    except ConfigError as err:
        pytest.fail(f"{doc}:{line}: `gatewise check` refuses it:\n  " + "\n  ".join(err.problems))


def test_there_are_yaml_blocks_to_check():
    assert len(blocks()) >= 15


# (section heading in docs/config.md, field) -> the code's default
DEFAULTS = {
    ("server", "host"): ServerConfig().host,
    ("server", "port"): ServerConfig().port,
    ("server", "max_body_mb"): ServerConfig().max_body_mb,
    ("server", "max_messages"): ServerConfig().max_messages,
    ("server", "max_in_flight"): ServerConfig().max_in_flight,
    ("server", "shutdown_timeout"): ServerConfig().shutdown_timeout,
    ("server", "admin_host"): ServerConfig().admin_host,
    ("server", "allow_unauthenticated"): ServerConfig().allow_unauthenticated,
    ("providers", "max_connections"): DEFAULT_MAX_CONNECTIONS,
    ("models", "strategy"): "priority",
    ("models", "drop_unsupported"): False,
    ("policies", "timeouts.connect"): Timeouts().connect,
    ("policies", "timeouts.first_token"): Timeouts().first_token,
    ("policies", "timeouts.idle"): Timeouts().idle,
    ("policies", "timeouts.total"): Timeouts().total,
    ("policies", "timeouts.client_write"): Timeouts().client_write,
    ("policies", "retry.attempts"): RetryConfig().attempts,
    ("policies", "retry.retry_after_cap"): RetryConfig().retry_after_cap,
    ("state", "backend"): StateConfig().backend,
    ("state", "prefix"): StateConfig().prefix,
    ("state", "instances"): StateConfig().instances,
    ("state", "on_outage"): {"budgets": StateConfig().budgets_on_outage},
    ("responses", "retention"): DEFAULT_RETENTION,
    ("server", "max_json_depth"): ServerConfig().max_json_depth,
    ("server", "max_n"): ServerConfig().max_n,
    ("server", "max_tools"): ServerConfig().max_tools,
    ("keys", "any_fallback"): False,
    ("policies", "retry.quota_cooldown"): RetryConfig().quota_cooldown,
    ("policies", "retry.auth_cooldown"): RetryConfig().auth_cooldown,
    ("alerts", "webhooks"): list(AlertsConfig().sinks),
    ("alerts", "cooldown"): AlertsConfig().cooldown,
    ("alerts", "log"): AlertsConfig().log,
    ("alerts", "format"): AlertSink.__dataclass_fields__["format"].default,
    ("admin", "ui"): GatewayConfig.__dataclass_fields__["ui"].default,
    ("models", "quality"): {},
    ("keys", "metadata"): {},
    ("state", "durability"): StateConfig().durability,
    ("providers", "headers"): {},
    ("models", "fallbacks"): [],
    ("models", "weight"): 1.0,
    ("policies", "retry.backoff"): (RetryConfig().backoff, RetryConfig().max_backoff),
    ("models", "context_window_fallbacks"): [],
    ("telemetry", "log_format"): TelemetryConfig().log_format,
    ("telemetry", "log_level"): TelemetryConfig().log_level,
    ("telemetry", "prometheus"): TelemetryConfig().prometheus,
    ("telemetry", "capture_content"): TelemetryConfig().capture_content,
    ("telemetry", "service_name"): TelemetryConfig().service_name,
}
# fields documented as a mapping of defaults: {name: value, ...}
MAPPINGS = {
    ("policies", "breaker"): BreakerConfig(),
    ("policies", "retry.budget"): {"ratio": RetryConfig().budget_ratio,
                                   "min_retries": RetryConfig().budget_min_retries,
                                   "window": RetryConfig().budget_window},
    ("providers", "health_check"): HealthCheck(),
    ("policies", "cache"): CacheConfig(),
}


def config_rows(whole: bool = False) -> dict[tuple[str, str], str]:
    """{(section, field): the Default cell} of every table in docs/config.md (`whole`:
    the row). A type-specific table (`| Type | Field | Default |`) gives
    ("providers.TYPE", field)."""
    rows, section, by_type = {}, None, False
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        heading = re.match(r"^## `(\w+)`", line)
        if heading:
            section = heading.group(1)
        if not line.startswith("|"):
            by_type = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Type":
            by_type = True
        if not section or len(cells) < 3 or not cells[0].startswith("`"):
            continue
        if by_type:
            key, cell = (f"providers.{cells[0].strip('`')}", cells[1].strip("`")), cells[2]
        else:
            key, cell = (section, cells[0].strip("`").split("`")[0]), cells[1]
        rows[key] = line if whole else cell
    return rows


def literal(cell: str) -> object:
    if "`, `" in cell:  # several fields in one row: `0.25s`, `8s`
        return tuple(literal(part) for part in cell.split(", "))
    raw = cell.strip("`")
    value = yaml.safe_load(raw)
    if isinstance(value, (dict, list)) and not raw.startswith(("{", "[")):
        return raw  # e.g. `gatewise:`: a string that YAML would read as a mapping
    if isinstance(value, str):
        seconds = parse_duration(value)
        return seconds if seconds is not None and value[-1:].isalpha() else value
    return value


def same(documented: object, code: object) -> bool:
    if isinstance(code, tuple):
        return isinstance(documented, tuple) and len(documented) == len(code) and all(
            same(d, c) for d, c in zip(documented, code))
    if isinstance(code, bool) or isinstance(documented, bool):
        return documented is code
    if isinstance(code, (int, float)) and isinstance(documented, (int, float)):
        return float(documented) == float(code)
    return documented == code


@pytest.mark.parametrize(("key", "code"), list(DEFAULTS.items()), ids=lambda v: str(v))
def test_each_default_in_config_md_is_the_code_default(key, code):
    rows = config_rows()
    assert key in rows, f"docs/config.md does not document {key}"
    documented = literal(rows[key])
    assert same(documented, code), f"docs/config.md: {key} default {rows[key]}, code: {code!r}"


@pytest.mark.parametrize(("key", "code"), list(MAPPINGS.items()), ids=lambda v: str(v))
def test_each_mapping_of_defaults_in_config_md_is_the_code_default(key, code):
    row = config_rows(whole=True)[key]
    mapping = yaml.safe_load(re.search(r"`(\{.*?\})`", row).group(1))
    for name, documented in mapping.items():
        if name == "enabled" and config_rows()[key] == "off":
            continue  # written as what turns it on
        value = code[name] if isinstance(code, dict) else getattr(code, name)
        if isinstance(documented, str):
            documented = parse_duration(documented) if documented[-1:].isalpha() and \
                parse_duration(documented) is not None else documented
        if name == "path" and documented == "per type":
            documented = None
        assert same(documented, value), f"docs/config.md: {key}.{name} {documented!r} vs {value!r}"


def test_provider_type_defaults_in_config_md_are_the_translators():
    from translators import PROVIDER_TYPES

    rows = {k: v for k, v in config_rows().items() if k[0].startswith("providers.")}
    assert len(rows) >= 10
    for (section, name), cell in rows.items():
        option = PROVIDER_TYPES[section.split(".")[1]].provider_options[name]
        documented = None if cell == "none" else cell.strip("`") if option.kind is str \
            else yaml.safe_load(cell.strip("`"))
        if documented is None and option.default == ():
            continue  # "none": an empty list
        assert same(documented, option.default), f"docs/config.md: {section}.{name} {cell}"


#: defaults written as a reference to another setting or in words, not a literal
REFERENCES = {"`policies.timeouts`", "`timeouts.total`", "`policies.cache.enabled`",
              "`routes[i]`", "`{}` (every request)"}
WORDS = {("providers", "responses")}  # `native` for the OpenAI API, else `translate`


def test_every_literal_default_in_config_md_is_checked():
    unchecked = [f"{key}: {cell}" for key, cell in config_rows().items()
                 if cell.startswith("`") and cell not in REFERENCES
                 and key not in DEFAULTS and key not in MAPPINGS and key not in WORDS
                 and not key[0].startswith("providers.")]
    assert unchecked == []


def test_no_working_notes_in_the_docs():
    notes = re.compile(r"the lead|issue \d|\bTODO\b|DESIGN\.md|working note", re.I)
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in DOCS
             for n, line in enumerate(p.read_text().splitlines(), 1) if notes.search(line)]
    assert found == []


def _check(text: str, env: dict[str, str]) -> None:
    try:
        parse_config(text, env)
    except ConfigError as err:
        pytest.fail("\n".join(err.problems))


def test_the_containers_config_passes_check_and_needs_a_client_key():
    from proxy.server.cli import unauthenticated_refusal

    text = (ROOT / "deploy" / "docker.yaml").read_text()
    env = {name: f"{name}-set-for-the-docs-test-0123456789" for name in _VAR.findall(text)}
    _check(text, env)
    config = parse_config(text, env)
    assert config.server.host == "0.0.0.0" and config.keys
    assert unauthenticated_refusal(config, "0.0.0.0") is None
    with pytest.raises(ConfigError, match="GATEWISE_CLIENT_KEY is not set"):
        parse_config(text, {k: v for k, v in env.items() if k != "GATEWISE_CLIENT_KEY"})
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/docker.yaml /etc/gatewise/config.yaml" in dockerfile


def test_the_compose_config_passes_check():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    text = compose["configs"]["gatewise"]["content"].replace("$$", "$")
    _check(text, {name: f"{name}-set-for-the-docs-test-0123456789" for name in _VAR.findall(text)})


def test_the_shutdown_timeout_is_one_value_everywhere():
    grace = ServerConfig().shutdown_timeout
    assert grace == 30.0
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    stop = parse_duration(compose["x-gatewise"]["stop_grace_period"])
    assert stop > grace  # the container gets longer than the drain
    dockerfile = (ROOT / "Dockerfile").read_text()
    timeout = int(re.search(r"--stop-timeout (\d+)", dockerfile).group(1))
    assert timeout > grace and f"({grace:g} s by default)" in dockerfile
    readme = (ROOT / "README.md").read_text()
    assert f"--stop-timeout {timeout}" in readme and f"`server.shutdown_timeout` ({grace:g} s)" \
        in readme
    docs = (ROOT / "docs" / "config.md").read_text()
    assert f"| `shutdown_timeout` | `{grace:g}s` |" in docs
