"""Client keys made through the admin API: their request bodies, read by the same
rules as a key in the config file, and the `KeyConfig` each stored key becomes.

A key's settings are stored as the JSON the client sent once it was valid (its
"spec"), and read back through the same parser, so a key made through the API
honours `models`, `rpm`, `tpm`, `max_concurrent`, `budget`, `expires_at`,
`metadata` and `any_fallback` exactly as a key in the file does. Names are restricted (they go
into URL paths, log lines and metric-free audit rows); the secret is never a
field a client can send.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.config.policies import KeyConfig, key_fields
from proxy.config.reader import Problems, Section, join

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: the settings a key made through the API may have (PATCH changes any of them)
SPEC_FIELDS = ("models", "rpm", "tpm", "max_concurrent", "budget", "expires_at", "metadata",
               "any_fallback", "tasks")
NAME_RULE = ("must be 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter "
             "or digit")


def check_name(name: Any, problems: Problems, path: str = "name") -> str | None:
    if not isinstance(name, str) or not NAME.match(name):
        problems.add(path, NAME_RULE)
        return None
    return name


def read_spec(body: Any, problems: Problems, *, with_name: bool) -> tuple[str | None, dict]:
    """The name (for a create) and the settings of a request body; every problem is
    added with its field path. The spec returned holds only the fields given."""
    s = Section(body, "", problems)
    if not s.ok:
        if body is None:
            problems.add("", "the body must be a JSON object")
        return None, {}
    name = None
    if with_name:
        raw_name = s.raw_value("name")
        if raw_name is None:
            problems.add("name", "is required")
        else:
            name = check_name(raw_name, problems)
    spec = {f: s.raw_value(f) for f in SPEC_FIELDS if f in s.raw}
    check = Section({k: v for k, v in spec.items() if v is not None}, "", problems)
    key_fields(check)
    check.finish()
    s.finish()
    return name, spec


def merged(old: dict, change: dict) -> dict:
    """A PATCH: given fields replace the stored ones; null removes one."""
    spec = {**old, **change}
    return {k: v for k, v in spec.items() if v is not None}


def key_config(name: str, digest: bytes, spec: dict) -> KeyConfig | None:
    """The KeyConfig a stored key stands for; None if its spec no longer reads (then
    the key is refused rather than let through without its limits)."""
    problems = Problems()
    s = Section(spec, join("api_keys", name), problems)
    fields = key_fields(s)
    if problems or not s.ok:
        return None
    return KeyConfig(name=name, digest=digest, source="api", **fields)
