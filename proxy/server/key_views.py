"""How a client key looks in the admin API and `gatewise keys`: one JSON shape for
keys from the file and from the API, names and settings only — never a secret or
its hash (the display prefix is the first characters of an API key's secret).
"""

from __future__ import annotations

import time
from typing import Any

from policies.budget import period_label
from proxy.config.api_keys import key_config
from proxy.config.policies import KeyConfig
from proxy.state.api_keys import KeyRecord
from proxy.state.ledger import period_start


def _budget(budget: Any) -> dict[str, Any] | None:
    if budget is None:
        return None
    return {"usd": budget.usd, "per": budget.per}


def _settings(key: KeyConfig | None, spec: dict[str, Any]) -> dict[str, Any]:
    if key is None:  # a stored spec that no longer reads: show it as it is
        return {"models": spec.get("models") or ["*"], "rpm": spec.get("rpm"),
                "tpm": spec.get("tpm"), "max_concurrent": spec.get("max_concurrent"),
                "budget": spec.get("budget"), "metadata": spec.get("metadata") or {},
                "tasks": spec.get("tasks") or [], "any_fallback": bool(spec.get("any_fallback")),
                "expires_at": spec.get("expires_at")}
    return {"models": list(key.models) or ["*"], "rpm": key.rpm, "tpm": key.tpm,
            "max_concurrent": key.max_concurrent, "budget": _budget(key.budget),
            "metadata": dict(key.metadata), "tasks": list(key.tasks),
            "any_fallback": key.any_fallback, "expires_at": key.expires_at}


def _status(revoked: float | None, expires: float | None, now: float) -> str:
    if revoked is not None:
        return "revoked"
    if expires is not None and expires <= now:
        return "expired"
    return "active"


def file_key_view(key: KeyConfig) -> dict[str, Any]:
    return {"object": "gateway.key", "name": key.name, "source": "file", "prefix": None,
            "status": _status(None, key.expires_at, time.time()), **_settings(key, {}),
            "created_at": None, "updated_at": None, "last_used_at": None, "revoked_at": None,
            "previous_key_valid_until": None}


def api_key_view(record: KeyRecord) -> dict[str, Any]:
    key = key_config(record.name, bytes.fromhex(record.digest), record.spec)
    settings = _settings(key, record.spec)
    now = time.time()
    grace = record.previous_until if record.previous_until and record.previous_until > now \
        else None
    return {"object": "gateway.key", "name": record.name, "source": "api",
            "prefix": record.prefix, "status": _status(record.revoked_at,
                                                       settings["expires_at"], now),
            **settings, "created_at": record.created_at, "updated_at": record.updated_at,
            "last_used_at": record.last_used_at, "revoked_at": record.revoked_at,
            "previous_key_valid_until": grace}


async def with_spend(gateway: Any, views: list[dict[str, Any]]) -> None:
    """Each key's spend this period — its budget's period when it has one (with what
    requests in flight hold), else today (UTC) from the ledger — and its rate-limit use."""
    budget, limits = gateway.budget, gateway.client_limits
    keys = {k.name: k for k in gateway.config.keys}
    if gateway.keyring is not None:
        keys.update(gateway.keyring.index.by_name)
    if limits is not None:
        for view in views:
            key = keys.get(view["name"])
            if key is not None:
                view["usage"] = limits.usage(key)
    if budget is None:
        return
    now = budget.now()
    today: dict[str | None, float] = {}
    if budget.ledger is not None and any(v["budget"] is None for v in views):
        rows = await budget.ledger.report("key", period_start("day", now))
        today = {r["key"]: r["cost_usd"] for r in rows}
    for view in views:
        b = view["budget"]
        if b is not None:
            label = period_label(b["per"], now)
            spent, held = budget.store.used(f"key:{view['name']}:{label}")
            view["spend"] = {"period": label, "usd": round(spent, 10),
                             "held_usd": round(held, 10)}
            b.update(period=label, spent_usd=round(spent, 10), held_usd=round(held, 10))
        else:
            view["spend"] = {"period": period_label("day", now),
                             "usd": round(today.get(view["name"], 0.0), 10), "held_usd": 0.0}
