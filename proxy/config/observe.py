"""Parsing what the operator watches and is told: SLOs, alert sinks, the page.

```yaml
models:
  gpt-4o:
    slo: {latency_p95_ms: 4000, ttft_p95_ms: 800, availability: 99.5%, window: 5m}
    targets:
      - {provider: openai, model: gpt-4o, slo: {availability: 99%, window: 1h, adaptive: true}}
alerts:
  webhook: http://alerts.internal:9000/gatewise
  secret: ${ALERT_SECRET}
  format: json          # json | slack
  cooldown: 10m
admin: {key: ${GATEWISE_ADMIN_KEY}, ui: true}
```

`extract_slos` runs before the model parser and takes every `slo:` out of the
raw models and targets, so that parser sees only what it knows. One block with
several objectives becomes one SLO per objective; a list of blocks gives
several windows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from proxy.config.reader import MissingEnv, Problems, Section, join

OBJECTIVES = ("latency_p95_ms", "ttft_p95_ms", "availability")
EVENTS = ("slo_breach", "slo_recovered", "breaker_open", "breaker_closed", "health_down",
          "health_up", "upstream_auth", "ledger_error", "budget_threshold")
MIN_WINDOW, MAX_WINDOW = 60.0, 86400.0
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True, slots=True)
class SloConfig:
    """One objective over a rolling window, of a public model (requests as the client
    saw them) or of a target `provider/model` (each upstream attempt)."""

    scope: str  # model | target
    subject: str  # the model name, or the target label provider/model
    objective: str  # latency_p95_ms | ttft_p95_ms | availability
    threshold: float  # milliseconds, or the fraction of good requests (0.995)
    window: float = 300.0  # seconds
    min_requests: int = 20  # fewer in the window: not judged (no data)
    adaptive: bool = False  # a breaching target scores half under strategy adaptive

    @property
    def id(self) -> str:
        return f"{self.scope}:{self.subject}:{self.objective}:{_span(self.window)}"

    @property
    def budget(self) -> float:
        """The share of requests allowed to miss: 5 % for a p95, 1 - availability."""
        return 0.05 if self.objective != "availability" else max(1e-9, 1.0 - self.threshold)


@dataclass(frozen=True, slots=True)
class AlertSink:
    url: str = field(repr=False)  # may carry a token (Slack): never shown
    secret: str | None = field(default=None, repr=False)  # HMAC-SHA256 key
    format: str = "json"  # json | slack
    events: tuple[str, ...] = ()  # empty: every event

    @property
    def where(self) -> str:
        """scheme://host[:port] only: a webhook's path is often its secret."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"

    def wants(self, kind: str) -> bool:
        return not self.events or kind in self.events


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    sinks: tuple[AlertSink, ...] = ()
    cooldown: float = 600.0  # one alert per event kind and subject in this many seconds
    log: bool = True  # a log line per alert (logger gatewise.alerts)

    def secrets(self) -> list[str]:
        return [v for s in self.sinks for v in (s.secret, s.url) if v]


def _span(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def extract_slos(raw_models: Any, problems: Problems) -> tuple[SloConfig, ...]:
    """Take each model's and target's `slo:` out of the raw mapping and parse it."""
    found: dict[str, SloConfig] = {}
    if not isinstance(raw_models, dict):
        return ()
    for name, model in raw_models.items():
        if not isinstance(model, dict):
            continue
        path = join("models", str(name))
        if "slo" in model:
            _blocks(model.pop("slo"), join(path, "slo"), "model", str(name), problems, found)
        targets = model.get("targets")
        for i, target in enumerate(targets if isinstance(targets, list) else ()):
            if isinstance(target, dict) and "slo" in target:
                label = f"{target.get('provider')}/{target.get('model')}"
                _blocks(target.pop("slo"), join(join(join(path, "targets"), i), "slo"),
                        "target", label, problems, found)
    return tuple(found.values())


def _blocks(raw: Any, path: str, scope: str, subject: str, problems: Problems,
            found: dict[str, SloConfig]) -> None:
    items = raw if isinstance(raw, list) else [raw]
    for i, item in enumerate(items):
        where = join(path, i) if isinstance(raw, list) else path
        for slo in _block(item, where, scope, subject, problems):
            if slo.id in found and found[slo.id] != slo:
                problems.add(where, f"{slo.objective} over {_span(slo.window)} is already "
                                    f"set differently for {scope} '{subject}'")
            found[slo.id] = slo


def _block(raw: Any, path: str, scope: str, subject: str,
           problems: Problems) -> list[SloConfig]:
    s = Section(raw, path, problems)
    if not s.ok:
        return []
    window = s.duration("window", 300.0) or 300.0
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        problems.add(join(path, "window"), "must be between 1m and 24h")
        window = min(MAX_WINDOW, max(MIN_WINDOW, window))
    min_requests = s.number("min_requests", 20, minimum=1, integer=True)
    adaptive = s.bool("adaptive", False)
    slos = []
    for objective in OBJECTIVES:
        if not s.has(objective):
            continue
        if objective == "availability":
            value = _availability(s.raw_value(objective), join(path, objective), problems)
        else:
            value = s.number(objective, None, minimum=1)
        if value is not None:
            slos.append(SloConfig(scope, subject, objective, float(value), window,
                                  int(min_requests), adaptive))
    s.finish()
    if not slos and not any(s.has(o) for o in OBJECTIVES):
        problems.add(path, f"needs at least one objective: {', '.join(OBJECTIVES)}")
    if adaptive and scope != "target":
        problems.add(join(path, "adaptive"), "only applies to a target's SLO")
    return slos


def _availability(value: Any, path: str, problems: Problems) -> float | None:
    """`99.5%` (or 99.5) → 0.995; must leave some room for error and be above 0."""
    number: float | None = None
    if isinstance(value, str):
        match = _PERCENT.match(value)
        number = float(match.group(1)) if match else None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None or not 0 < number < 100:
        problems.add(path, f"must be a percentage below 100 like 99.5%, got {value!r}")
        return None
    return number / 100


def parse_alerts(raw: Any, problems: Problems, budget_webhook: str | None) -> AlertsConfig:
    """`alerts:` — one sink inline (`webhook:`), a list under `webhooks:`, or both.
    `policies.budgets.alert_webhook` is kept as a sink for budget events only."""
    s = Section(raw, "alerts", problems)
    d = AlertsConfig()
    cooldown = s.duration("cooldown", d.cooldown)
    log = s.bool("log", d.log)
    sinks: list[AlertSink] = []
    if s.has("webhook"):
        sink = _sink(s, "alerts", url_key="webhook")
        if sink is not None:
            sinks.append(sink)
    else:
        for key in ("secret", "format", "events"):
            if s.has(key):
                s.raw_value(key)
                problems.add(join("alerts", key), "needs 'webhook' beside it "
                                                  "(or set it on an entry of 'webhooks')")
    for i, item in enumerate(s.list("webhooks")):
        sink_section = Section(item, join("alerts.webhooks", i), problems)
        if sink_section.ok:
            sink = _sink(sink_section, sink_section.path, url_key="url")
            sink_section.finish()
            if sink is not None:
                sinks.append(sink)
    s.finish()
    if budget_webhook is not None:
        sinks.append(AlertSink(url=budget_webhook, events=("budget_threshold",)))
    return AlertsConfig(sinks=tuple(sinks), cooldown=d.cooldown if cooldown is None else cooldown,
                        log=log)


def _sink(s: Section, path: str, url_key: str) -> AlertSink | None:
    url = s.str(url_key, None, required=True)
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            s.problems.add(join(path, url_key), "must be an http:// or https:// URL")
            url = None
    secret_raw = s.raw_value("secret")
    secret = None
    if isinstance(secret_raw, MissingEnv):
        s.problems.add(join(path, "secret"), f"environment variable {secret_raw.var} is not set")
    elif secret_raw is not None:
        if not isinstance(secret_raw, str) or len(secret_raw) < 16:
            s.problems.add(join(path, "secret"), "must be a string of at least 16 characters")
        else:
            secret = secret_raw
    fmt = s.str("format", "json", choices=("json", "slack"))
    events = s.list("events")
    for i, kind in enumerate(events):
        if kind not in EVENTS:
            s.problems.add(join(join(path, "events"), i),
                           f"unknown event {kind!r} (known: {', '.join(EVENTS)})")
    if url is None:
        return None
    return AlertSink(url=url, secret=secret, format=fmt or "json",
                     events=tuple(e for e in events if e in EVENTS))
