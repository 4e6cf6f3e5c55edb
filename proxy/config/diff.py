"""What changed between two configs: what a running gateway cannot take, and what
a reload did (for its log line and the admin API's answer).

A reload applies a config whole or not at all. Some parts are bound at start
(the listening socket, the shared-state connections, logging and tracing, the
stored-response database): a change there refuses the reload, naming the field,
so nothing is half applied. Values are never printed: URLs may hold passwords.
"""

from __future__ import annotations

from typing import Any

from proxy.config.types import GatewayConfig

#: server fields read once, when the listener is made
SERVER_AT_START = ("host", "port", "max_body_mb", "admin_host", "admin_port")
_RESTART = "cannot change while gatewise runs; restart gatewise to apply it"


def fixed_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """One problem per field that only a restart can change."""
    problems = [f"server.{name}: {_RESTART}" for name in SERVER_AT_START
                if getattr(old.server, name, None) != getattr(new.server, name, None)]
    if old.ui != new.ui:
        problems.append(f"admin.ui: {_RESTART}")
    elif old.admin_key != new.admin_key and new.ui:  # the page's login and sessions
        problems.append(f"admin.key: {_RESTART} (the page's sessions were opened with it; "
                        "or set admin.ui: false)")
    if old.alerts != new.alerts:
        problems.append(f"alerts: {_RESTART}")
    for section in ("state", "telemetry", "responses"):
        before, after = getattr(old, section), getattr(new, section)
        if before != after:
            fields = [f for f in type(before).__slots__
                      if getattr(before, f) != getattr(after, f)]
            problems += [f"{section}.{f}: {_RESTART}" for f in fields]
    return problems


def _names(a: Any, b: Any) -> dict[str, list[str]]:
    """Added, removed and changed names of two mappings of frozen configs."""
    out = {"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)),
           "changed": sorted(n for n in set(a) & set(b) if a[n] != b[n])}
    return {k: v for k, v in out.items() if v}


def changes(old: GatewayConfig, new: GatewayConfig) -> dict[str, Any]:
    """What a reload changes: models, targets, providers and client keys by name, and
    the other sections that differ. Empty when nothing did."""
    found: dict[str, Any] = {}
    targets_old = {t.label: t for m in old.models.values() for t in m.targets}
    targets_new = {t.label: t for m in new.models.values() for t in m.targets}
    for name, (a, b) in {"models": (old.models, new.models),
                         "targets": (targets_old, targets_new),
                         "providers": (old.providers, new.providers),
                         "keys": ({k.name: _key_view(k) for k in old.keys},
                                  {k.name: _key_view(k) for k in new.keys})}.items():
        diff = _names(a, b)
        if diff:
            found[name] = diff
    other = [section for section in ("routing", "budgets", "cache", "server", "timeouts")
             if getattr(old, section) != getattr(new, section)]
    if old.admin_key != new.admin_key:
        other.append("admin.key")
    if other:
        found["sections"] = other
    return found


def _key_view(key: Any) -> tuple:
    """A client key as a reload compares it: metadata too (left out of its equality)."""
    return (key, tuple(sorted(key.metadata.items())))


def summary(found: dict[str, Any]) -> str:
    """`models +a -b ~c; keys +alice` for the reload's log line."""
    if not found:
        return "no changes"
    parts = []
    marks = {"added": "+", "removed": "-", "changed": "~"}
    for what in ("models", "targets", "providers", "keys"):
        diff = found.get(what)
        if diff:
            parts.append(f"{what} " + " ".join(f"{marks[kind]}{name}" for kind in marks
                                              for name in diff.get(kind, ())))
    if found.get("sections"):
        parts.append("changed: " + ", ".join(found["sections"]))
    return "; ".join(parts)
