"""Config for SLOs, alerts and the page: defaults, shorthands, and every mistake
named by its field path."""

from __future__ import annotations

import textwrap

import pytest

from proxy.config.observe import AlertSink
from proxy.server.configure import ConfigError, parse_config

BASE = """
providers:
  openai: {type: openai, api_key: sk-test-0123456789abcdef}
models:
  gpt-4o:
    slo: {latency_p95_ms: 4000, ttft_p95_ms: 800, availability: 99.5%, window: 5m}
    targets:
      - {provider: openai, model: gpt-4o, slo: [{availability: 99%, window: 1h, adaptive: true},
                                                {latency_p95_ms: 2500}]}
"""


def parse(extra: str = "", env: dict | None = None, base: str = BASE):
    return parse_config(textwrap.dedent(base) + textwrap.dedent(extra), env or {})


def problems(extra: str = "", env: dict | None = None, base: str = BASE) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(extra, env, base)
    return err.value.problems


def test_slos_per_model_and_target():
    config = parse()
    ids = [s.id for s in config.slos]
    assert ids == ["model:gpt-4o:latency_p95_ms:5m", "model:gpt-4o:ttft_p95_ms:5m",
                   "model:gpt-4o:availability:5m", "target:openai/gpt-4o:availability:1h",
                   "target:openai/gpt-4o:latency_p95_ms:5m"]
    availability = config.slos[2]
    assert availability.threshold == 0.995 and round(availability.budget, 6) == 0.005
    assert config.slos[3].adaptive and not config.slos[4].adaptive
    assert config.slos[0].budget == 0.05 and config.slos[0].min_requests == 20
    assert config.ui is True and config.alerts.sinks == () and config.alerts.cooldown == 600


def test_alert_sinks_inline_list_and_the_budget_webhook():
    config = parse("""
        alerts:
          webhook: http://alerts.internal:9000/gatewise
          secret: ${ALERT_SECRET}
          format: slack
          cooldown: 2m
          webhooks:
            - {url: "https://hooks.example/T0/B0/xyz", events: [slo_breach, slo_recovered]}
        policies: {budgets: {alert_webhook: "http://budget.internal/hook"}}
        admin: {key: admin-0123456789abcdef, ui: false}
        """, {"ALERT_SECRET": "whsec-0123456789abcdef"})
    sinks = config.alerts.sinks
    assert [s.format for s in sinks] == ["slack", "json", "json"]
    assert sinks[0].secret == "whsec-0123456789abcdef" and config.alerts.cooldown == 120
    assert sinks[1].events == ("slo_breach", "slo_recovered") and not sinks[1].wants("breaker_open")
    assert sinks[2].events == ("budget_threshold",) and sinks[2].url == "http://budget.internal/hook"
    assert sinks[1].where == "https://hooks.example"  # the path (a token) is never shown
    assert "whsec-0123456789abcdef" in config.secrets()
    assert "https://hooks.example/T0/B0/xyz" in config.secrets()
    assert "xyz" not in repr(sinks[1]) and "whsec" not in repr(sinks[0])
    assert config.ui is False


def test_mistakes_name_their_path():
    found = problems("""
        alerts: {webhook: "ftp://x", secret: short, format: xml, events: [nope], cooldown: soon,
                 bogus: 1}
        """)
    assert "alerts.webhook: must be an http:// or https:// URL" in found
    assert "alerts.secret: must be a string of at least 16 characters" in found
    assert any(p.startswith("alerts.format: must be one of json, slack") for p in found)
    assert any(p.startswith("alerts.events[0]: unknown event 'nope'") for p in found)
    assert any(p.startswith("alerts.cooldown: must be a duration") for p in found)
    assert "alerts.bogus: unknown field" in found
    assert "alerts.secret: environment variable ALERT_SECRET is not set" in problems(
        'alerts: {webhook: "http://x/h", secret: "${ALERT_SECRET}"}')
    assert "alerts.secret: needs 'webhook' beside it (or set it on an entry of 'webhooks')" \
        in problems("alerts: {secret: whsec-0123456789abcdef}")
    bad_slo = """
        providers: {openai: {type: openai, api_key: sk-test-0123456789abcdef}}
        models:
          m:
            slo: {availability: 100%, window: 10s, latency_p95_ms: -1, adaptive: true, x: 1}
            targets: [{provider: openai, model: gpt-4o, slo: {window: 5m}}]
        """
    found = problems(base=bad_slo)
    assert "models.m.slo.availability: must be a percentage below 100 like 99.5%, got '100%'" \
        in found
    assert "models.m.slo.window: must be between 1m and 24h" in found
    assert any(p.startswith("models.m.slo.latency_p95_ms: must be a number >= 1") for p in found)
    assert "models.m.slo.adaptive: only applies to a target's SLO" in found
    assert "models.m.slo.x: unknown field" in found
    assert any(p.startswith("models.m.targets[0].slo: needs at least one objective")
               for p in found)


def test_a_sink_is_shown_by_host_only():
    assert AlertSink(url="http://user:pw@10.0.0.5:9000/a/b?token=x").where == "http://10.0.0.5:9000"


def test_check_lists_slos_sinks_by_host_and_the_page(tmp_path, capsys):
    from proxy.server.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent("""
        alerts: {webhook: "https://hooks.example/T0/B0/tok3n", format: slack,
                 secret: whsec-0123456789abcdef}
        admin: {key: admin-0123456789abcdef}
        """))
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  slo model:gpt-4o:availability:5m: 0.995" in out
    assert "  slo target:openai/gpt-4o:latency_p95_ms:5m: 2500 ms" in out
    assert "  alerts -> https://hooks.example (slack, every event, signed)" in out
    assert "  page: /ui (log in with the admin key)" in out
    assert "tok3n" not in out and "whsec" not in out
