"""A provider's pool of credentials: `api_keys:` instead of one `api_key:`.

    api_keys: ["${OPENAI_KEY_1}", "${OPENAI_KEY_2}"]
    api_keys:
      - {name: primary, key: "${OPENAI_KEY_1}", weight: 3}
      - {name: spare, key: "${file:/run/secrets/openai_spare}"}

Each entry is a key, or a mapping with `key`, an optional `name` (its index
otherwise: metrics, logs and the admin API name credentials, never show them)
and an optional `weight`. An entry whose `${VAR}` is unset is left out of the
pool, as an unset `api_key` disables its provider; with every entry unset the
provider is disabled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from proxy.config.reader import MissingEnv, Section, join
from proxy.config.types import Credential

#: names go into metric labels and log lines
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_CREDENTIALS = 64


@dataclass(frozen=True, slots=True)
class Pool:
    credentials: tuple[Credential, ...]
    unset: tuple[str, ...]  # the names of entries whose variable is unset
    unset_vars: tuple[str, ...]


def parse_api_keys(p: Section) -> Pool | None:
    """The pool under `api_keys`, or None when the provider has none."""
    raw = p.raw_value("api_keys")
    if raw is None:
        return None
    path = join(p.path, "api_keys")
    if not isinstance(raw, list) or not raw:
        p.problems.add(path, "must be a non-empty list of keys")
        return Pool((), (), ())
    if len(raw) > MAX_CREDENTIALS:
        p.problems.add(path, f"must list at most {MAX_CREDENTIALS} keys")
        return Pool((), (), ())
    credentials: list[Credential] = []
    unset: list[str] = []
    unset_vars: list[str] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        where = join(path, i)
        name, key, weight = _entry(item, i, where, p)
        if name is None:
            continue
        if name in names:
            p.problems.add(where, f"duplicate credential name '{name}'")
            continue
        names.add(name)
        if isinstance(key, MissingEnv):
            unset.append(name)
            unset_vars.append(key.var)
        elif key is not None:
            credentials.append(Credential(name=name, key=key, weight=weight))
    seen: dict[str, str] = {}
    for credential in credentials:
        if credential.key in seen:
            p.problems.add(path, f"credentials '{seen[credential.key]}' and '{credential.name}' "
                                 "are the same key")
        seen.setdefault(credential.key, credential.name)
    return Pool(tuple(credentials), tuple(unset), tuple(unset_vars))


def _entry(item: Any, index: int, where: str,
           p: Section) -> tuple[str | None, str | MissingEnv | None, float]:
    """(name, key or MissingEnv, weight); name None when the entry is unusable."""
    if isinstance(item, (str, MissingEnv)):
        return (str(index), item, 1.0) if _usable(item, where, p) else (None, None, 1.0)
    if not isinstance(item, dict):
        p.problems.add(where, "must be a key or a mapping with 'key', 'name' and 'weight'")
        return None, None, 1.0
    c = Section(item, where, p.problems)
    name = c.str("name", str(index))
    if name is not None and not NAME.match(name):
        p.problems.add(join(where, "name"), "must be letters, digits, '.', '_' or '-' (at most "
                                            "64), starting with a letter or digit")
        name = None
    weight = c.number("weight", 1.0, minimum=0)
    if weight is not None and weight <= 0:
        p.problems.add(join(where, "weight"), "must be more than 0")
    raw_key = c.raw_value("key")
    c.finish()
    if raw_key is None:
        p.problems.add(join(where, "key"), "is required")
        return None, None, 1.0
    if not _usable(raw_key, join(where, "key"), p):
        return None, None, 1.0
    return name, raw_key, float(weight or 1.0)


def _usable(value: Any, where: str, p: Section) -> bool:
    """A key is a non-empty string (or an unset variable: the pool leaves it out)."""
    if isinstance(value, MissingEnv) or (isinstance(value, str) and value):
        return True
    p.problems.add(where, "must be a non-empty string")
    return False
