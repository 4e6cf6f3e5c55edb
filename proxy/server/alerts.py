"""Alerts: one place every event goes through — de-duplicated, logged, kept for
the page and `GET /admin/alerts`, and sent to each configured webhook.

An event is (kind, subject): `slo_breach` of `model:gpt-4o:availability:5m`,
`breaker_open` of `openai/gpt-4o`, ... The same kind and subject is sent at
most once per cool-down; what the cool-down held back is counted and reported
with the next one that goes out. Every string in an event passes the log
redactor (each credential the config loaded, bearer tokens), and events carry
names, numbers and error classes only — never a key, a header or upstream text.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any, Callable

import aiohttp

from proxy.config.observe import AlertsConfig
from proxy.core.errors import ErrorClass
from proxy.server.logs import Redactor
from proxy.server.webhook import WebhookSender

log = logging.getLogger("gatewise.alerts")

SEVERITY = {"slo_breach": "critical", "breaker_open": "critical", "health_down": "critical",
            "upstream_auth": "critical", "ledger_error": "critical",
            "slo_recovered": "info", "breaker_closed": "info", "health_up": "info",
            "budget_threshold": "warning"}
_ENVELOPE = ("id", "event", "severity", "subject", "message", "time", "timestamp", "gateway",
             "suppressed")
KEEP = 200


class AlertHub:
    def __init__(self, config: AlertsConfig, secrets: list[str],
                 clock: Callable[[], float] = time.time, keep: int = KEEP) -> None:
        self.config = config
        self.clock = clock
        self.redact = Redactor(secrets)
        self.gateway = f"{socket.gethostname()}:{os.getpid()}"
        self.recent: deque[dict] = deque(maxlen=keep)
        self._sent: dict[tuple[str, str], float] = {}  # (kind, subject) -> when last sent
        self._held: dict[tuple[str, str], int] = {}  # suppressed since then
        self._prune_at = 4096
        self.emitted = 0
        self.suppressed = 0
        self._session: aiohttp.ClientSession | None = None
        self.senders = [WebhookSender(sink, self.session) for sink in config.sinks]

    def session(self) -> aiohttp.ClientSession:
        """Alerts' own small pool: a hanging receiver never holds an upstream connection."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=8), trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    def emit(self, kind: str, subject: str, message: str,
             details: dict[str, Any] | None = None, severity: str | None = None) -> dict | None:
        """Raise an event now; None when the cool-down holds it back."""
        now = self.clock()
        key = (kind, subject)
        last = self._sent.get(key)
        if last is not None and now - last < self.config.cooldown:
            self._held[key] = self._held.get(key, 0) + 1
            self.suppressed += 1
            return None
        if len(self._sent) > self._prune_at:  # forget what is past its cool-down
            self._sent = {k: t for k, t in self._sent.items() if now - t < self.config.cooldown}
            self._held = {k: n for k, n in self._held.items() if k in self._sent}
            self._prune_at = max(4096, 2 * len(self._sent))  # amortised: never per event
        self._sent[key] = now
        self.emitted += 1
        event = {k: v for k, v in self._clean(details or {}).items() if k not in _ENVELOPE}
        event.update({
            "id": f"alt_{os.urandom(8).hex()}", "event": kind,
            "severity": severity or SEVERITY.get(kind, "warning"),
            "subject": self._clean(subject), "message": self._clean(message),
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
                            .replace("+00:00", "Z"),
            "timestamp": round(now, 3), "gateway": self.gateway,
            "suppressed": self._held.pop(key, 0)})
        deliveries = []
        for sender in self.senders:
            if sender.sink.wants(kind):
                status = {"sink": sender.where, "format": sender.sink.format,
                          "state": "pending", "attempts": 0, "detail": None}
                deliveries.append(status)
                sender.offer(event, status)
        self.recent.append({"event": event, "deliveries": deliveries})
        if self.config.log:
            level = logging.WARNING if event["severity"] != "info" else logging.INFO
            log.log(level, f"alert {kind}: {event['message']}", extra={"fields": {
                "alert": kind, "subject": event["subject"], "severity": event["severity"],
                "alert_id": event["id"], "suppressed": event["suppressed"]}})
        return event

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {str(k): self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clean(v) for v in value]
        return value

    async def budget_alert(self, event: dict) -> None:
        """The budget policy's threshold alert (it already raises each only once)."""
        scope, threshold = str(event.get("scope")), float(event.get("threshold", 0))
        spent, usd = event.get("spent_usd", 0.0), event.get("budget_usd", 0.0)
        details = {k: v for k, v in event.items() if k != "event"}
        self.emit("budget_threshold", f"{scope} {threshold:.0%}",
                  f"budget {scope} passed {threshold:.0%}: ${spent:,.4f} of ${usd:,.2f} "
                  f"per {event.get('per')}", details,
                  severity="critical" if threshold >= 0.95 else "warning")

    def upstream_auth(self, ex: Any, attempt: Any) -> None:
        """A failed-attempt listener: the upstream refused the gateway's credential."""
        if attempt.error_class is ErrorClass.AUTH:
            target = attempt.target
            self.emit("upstream_auth", target.provider,
                      f"provider '{target.provider}' refused the gateway's credential "
                      f"(HTTP {attempt.status}) for target {target.label}: check its api_key",
                      {"provider": target.provider, "target": target.label,
                       "status": attempt.status})

    def ledger_failed(self, exc: BaseException) -> None:
        """The ledger could not write a row (its error's type only: no row data)."""
        self.emit("ledger_error", "ledger", "the spend ledger could not write a row: "
                  f"{type(exc).__name__}", {"error": type(exc).__name__})

    def listing(self, limit: int = KEEP) -> list[dict]:
        """Newest first, each with where it was sent and how that went."""
        items = list(self.recent)[-limit:]
        return [{**item["event"], "deliveries": [dict(d) for d in item["deliveries"]]}
                for item in reversed(items)]

    def stats(self) -> dict[str, int]:
        return {"emitted": self.emitted, "suppressed": self.suppressed,
                "dropped": sum(s.dropped for s in self.senders),
                "delivered": sum(s.delivered for s in self.senders),
                "failed": sum(s.failed for s in self.senders)}

    def start(self) -> None:
        for sender in self.senders:
            sender.start()

    async def stop(self) -> None:
        for sender in self.senders:
            await sender.stop()
        if self._session is not None:
            await self._session.close()
