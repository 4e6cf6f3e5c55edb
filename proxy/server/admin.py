"""Admin routes for spend and targets; the admin key alone opens them.

`GET /admin/spend?by=key|model|provider&period=day|month|total` sums the ledger
for the current UTC period. Keys: proxy/server/admin_keys.py; reloads:
proxy/server/reload_admin.py.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from policies.budget import period_label
from proxy.core.errors import GatewayError, bad_request, ledger_unavailable
from proxy.engine.health import targets_report
from proxy.server.gateway import GATEWAY
from proxy.state.ledger import GROUPS, LedgerUnavailable, period_start

_PERIODS = ("day", "month", "total")


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def spend(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    gateway.admin_auth.check(request.headers)
    by = request.query.get("by", "key")
    period = request.query.get("period", "day")
    if by not in GROUPS:
        raise bad_request(f"Invalid 'by': expected one of {', '.join(GROUPS)}.", param="by")
    if period not in _PERIODS:
        raise bad_request(f"Invalid 'period': expected one of {', '.join(_PERIODS)}.",
                          param="period")
    budget = gateway.budget
    if budget is None or budget.ledger is None:
        raise GatewayError(404, "The spend ledger is off: configure a budget or state.ledger.",
                           "invalid_request_error", code="ledger_disabled")
    now = budget.now()
    since = period_start(period, now)
    try:
        rows = await budget.ledger.report(by, since)
    except LedgerUnavailable:  # its writes are being retried: a report would be short
        raise ledger_unavailable(1.0) from None
    return _json({"object": "list", "by": by, "period": period,
                  "period_label": period_label(period, now), "since": since,
                  "total_cost_usd": round(sum(r["cost_usd"] for r in rows), 10), "data": rows})


async def targets(request: web.Request) -> web.Response:
    """GET /admin/targets: each target's breaker, health and statistics."""
    gateway = request.app[GATEWAY]
    gateway.admin_auth.check(request.headers)
    report = targets_report(gateway.config, gateway.dispatcher, gateway.health)
    return web.Response(body=orjson.dumps(report), content_type="application/json")


async def alerts(request: web.Request) -> web.Response:
    """GET /admin/alerts?limit=N: recent alerts, newest first, with their deliveries."""
    gateway = request.app[GATEWAY]
    gateway.admin_auth.check(request.headers)
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise bad_request("Invalid 'limit': expected an integer from 1 to 1000.", param="limit")
    hub = gateway.alerts
    return _json({"object": "list", "data": hub.listing(int(raw)), "stats": hub.stats(),
                  "sinks": [{"url": s.where, "format": s.sink.format,
                             "events": list(s.sink.events) or ["*"], "queued": s.queue.qsize()}
                            for s in hub.senders],
                  "cooldown_s": hub.config.cooldown})


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/alerts", alerts)
    app.router.add_get("/admin/spend", spend)
    app.router.add_get("/admin/targets", targets)


def spend_table(rows: list[dict[str, Any]], by: str) -> str:
    """The /admin/spend rows as a plain-text table (for `gatewise spend`)."""
    head = [by, "requests", "prompt_tok", "completion_tok", "cached_tok", "cost_usd", "pending_usd"]
    body = [[str(r[by] if r[by] is not None else "-"), str(r["requests"]), str(r["prompt_tokens"]),
             str(r["completion_tokens"]), str(r["cached_tokens"]), f"{r['cost_usd']:.6f}",
             f"{r['pending_usd']:.6f}"] for r in rows]
    total = sum(r["cost_usd"] for r in rows)
    body.append(["TOTAL", str(sum(r["requests"] for r in rows)), "", "", "", f"{total:.6f}", ""])
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(line, widths))) for line in [head, *body]]
    return "\n".join(lines)
