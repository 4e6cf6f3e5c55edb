"""Parsing the policy side of the config: client keys, budgets and state.

Client keys are hashed here and only the SHA-256 digest leaves this module, so
the plain key never lives longer than config loading. Every problem names its
field path, like the rest of the config.
"""

from __future__ import annotations

import datetime
import hashlib
from fnmatch import fnmatchcase
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from proxy.config.reader import MissingEnv, Problems, Section, join

#: a task kind (`coding`, `creative`…): what quality scores, keys and rules name
TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

PERIODS = ("day", "month", "total")
DEFAULT_THRESHOLDS = (0.5, 0.8, 0.95)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """A spend limit in USD over a UTC period; fractions are of `usd`."""

    usd: float
    per: str = "day"  # day | month | total
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    degrade_at: float | None = None  # routing prefers cheaper targets from here
    local_only_at: float | None = None  # routing uses free targets only from here


@dataclass(frozen=True, slots=True)
class KeyConfig:
    name: str
    digest: bytes = field(repr=False)  # SHA-256 of the client key; the key itself is dropped
    models: tuple[str, ...] = ()  # globs; empty means every model
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget: BudgetConfig | None = None
    any_fallback: bool = False  # configured fallbacks may serve it outside `models`
    #: the operator's labels for the key (team, plan…): route rules match on them; values
    #: are strings (numbers and booleans as YAML writes them, e.g. "1", "true")
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)
    tasks: tuple[str, ...] = ()  # task kinds the client may name; empty: any
    expires_at: float | None = None  # seconds since the epoch; refused (401) from then on
    #: "file" (the config's `keys:`) or "api" (made through /admin/keys, kept in the ledger DB)
    source: str = field(default="file", compare=False)

    @property
    def limited(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_concurrent)

    def allows(self, model: str) -> bool:
        """Whether this key may use `model` (its `models` globs; none: every model)."""
        return not self.models or any(fnmatchcase(model, glob) for glob in self.models)


@dataclass(frozen=True, slots=True)
class BudgetsConfig:
    global_: BudgetConfig | None = None
    providers: Mapping[str, BudgetConfig] = field(default_factory=dict)
    alert_webhook: str | None = None

    @property
    def any(self) -> bool:
        return self.global_ is not None or bool(self.providers)


@dataclass(frozen=True, slots=True)
class StateConfig:
    backend: str = "memory"  # memory | redis (shared by every instance)
    ledger: str | None = None  # a SQLite file path; None keeps the ledger in memory
    url: str | None = field(default=None, repr=False)  # redis://… (may hold a password)
    prefix: str = "gatewise:"  # every Redis key starts with it
    budgets_on_outage: str = "fail_closed"  # fail_closed | fail_open while Redis is down
    instances: int = 1  # gatewise processes sharing the state: outage limits are ÷ this
    postgres: str | None = field(default=None, repr=False)  # postgresql://… shared ledger
    durability: str = "process"  # process (survives kill -9) | power (fsync per commit)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_keys(raw: Any, problems: Problems) -> tuple[KeyConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add("keys", "must be a list of client keys")
        return ()
    keys: list[KeyConfig] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for i, item in enumerate(raw):
        path = join("keys", i)
        k = Section(item, path, problems)
        if not k.ok:
            continue
        name = k.str("name", required=True)
        digest = _digest(k)
        fields = key_fields(k)
        k.finish()
        if name in names:
            problems.add(join(path, "name"), f"duplicate key name '{name}'")
        if digest is not None and digest in digests:
            problems.add(path, f"the same key is already configured as '{digests[digest]}'")
        if name is not None:
            names.add(name)
        if name is None or digest is None:
            continue
        digests[digest] = name
        keys.append(KeyConfig(name=name, digest=digest, **fields))
    return tuple(keys)


def key_fields(k: Section) -> dict[str, Any]:
    """What a client key holds besides its name and secret — the same fields, read
    the same way, for a key in the file and one made through the admin API."""
    path, problems = k.path, k.problems
    models = k.list("models")
    for j, glob in enumerate(models):
        if not isinstance(glob, str) or not glob:
            problems.add(join(join(path, "models"), j), "must be a model name or glob")
    return {"models": tuple(m for m in models if isinstance(m, str) and m),
            "rpm": k.number("rpm", None, minimum=1, integer=True),
            "tpm": k.number("tpm", None, minimum=1, integer=True),
            "max_concurrent": k.number("max_concurrent", None, minimum=1, integer=True),
            "budget": parse_budget(k.raw_value("budget"), join(path, "budget"), problems),
            "any_fallback": k.bool("any_fallback", False),
            "tasks": _tasks(k),
            "metadata": MappingProxyType(parse_metadata(k.section("metadata"))),
            "expires_at": parse_time(k.raw_value("expires_at"), join(path, "expires_at"),
                                     problems)}


def _tasks(k: Section) -> tuple[str, ...]:
    tasks = tuple(k.list("tasks"))
    for j, task in enumerate(tasks):
        if not isinstance(task, str) or not TASK_NAME.match(task):
            k.problems.add(join(join(k.path, "tasks"), j), "must be a task kind (lower-case "
                                                           "letters, digits, '_', '-', '.')")
    return tuple(t for t in tasks if isinstance(t, str))


def metadata_value(value: Any) -> str | None:
    """A metadata value as rules compare it: strings as they are, numbers and booleans as
    YAML writes them; None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def parse_metadata(m: Section) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for name, value in m.raw.items():
        m.raw_value(name)
        text = metadata_value(value)
        if isinstance(value, MissingEnv):
            m.problems.add(join(m.path, str(name)), f"environment variable {value.var} is not set")
        elif text is None:
            m.problems.add(join(m.path, str(name)), "must be a string, number or boolean")
        else:
            metadata[str(name)] = text
    return metadata


def parse_time(value: Any, path: str, problems: Problems) -> float | None:
    """A moment: seconds since the epoch, or an ISO 8601 date-time (UTC unless it says
    otherwise; YAML may already have read it as a date)."""
    if value is None:
        return None
    moment = to_timestamp(value)
    if moment is None:
        problems.add(path, "must be an ISO 8601 date-time like 2026-01-31T00:00:00Z or "
                           f"seconds since the epoch, got {value!r}")
    return moment


def to_timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if 0 <= value < 1e11 else None
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):
        moment = datetime.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _digest(k: Section) -> bytes | None:
    """`key: ${VAR}` (hashed now), `key: sha256:<hex>` or `key_sha256: <hex>`."""
    has_plain, has_hash = k.has("key"), k.has("key_sha256")
    if has_plain == has_hash:
        k.raw_value("key")
        k.raw_value("key_sha256")
        k.problems.add(k.path, "needs exactly one of 'key' or 'key_sha256'")
        return None
    field_name = "key" if has_plain else "key_sha256"
    value = k.raw_value(field_name)
    where = join(k.path, field_name)
    if isinstance(value, MissingEnv):
        k.problems.add(where, f"environment variable {value.var} is not set")
        return None
    if not isinstance(value, str) or not value:
        k.problems.add(where, "must be a non-empty string")
        return None
    if has_plain and not value.startswith("sha256:"):
        if len(value) < 16:
            k.problems.add(where, "is too short: client keys need at least 16 characters")
            return None
        return hash_key(value)
    hexdigest = value.removeprefix("sha256:")
    if not _HEX64.match(hexdigest):
        k.problems.add(where, "must be a SHA-256 digest: 64 hex digits")
        return None
    return bytes.fromhex(hexdigest)


def parse_budget(raw: Any, path: str, problems: Problems) -> BudgetConfig | None:
    if raw is None:
        return None
    b = Section(raw, path, problems)
    if not b.ok:
        return None
    usd = b.number("usd", None, minimum=0, required=True)
    per = b.str("per", "day", choices=PERIODS)
    thresholds = DEFAULT_THRESHOLDS
    if b.has("thresholds"):
        thresholds = tuple(sorted(
            t for t in (_fraction(v, join(join(path, "thresholds"), i), problems)
                        for i, v in enumerate(b.list("thresholds"))) if t is not None))
    degrade = _fraction(b.raw_value("degrade_at"), join(path, "degrade_at"), problems)
    local = _fraction(b.raw_value("local_only_at"), join(path, "local_only_at"), problems)
    b.finish()
    if usd is None:
        return None
    return BudgetConfig(usd=float(usd), per=per, thresholds=thresholds, degrade_at=degrade,
                        local_only_at=local)


def _fraction(value: Any, path: str, problems: Problems) -> float | None:
    """A percentage: `80%` or `80` → 0.8."""
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, str):
        match = _PERCENT.match(value)
        number = float(match.group(1)) if match else None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    if number is None or not 0 < number <= 100:
        problems.add(path, f"must be a percentage like 80% (0-100], got {value!r}")
        return None
    return number / 100


def parse_budgets(raw: Any, path: str, problems: Problems,
                  providers: Mapping[str, Any]) -> BudgetsConfig:
    s = Section(raw, path, problems)
    global_ = parse_budget(s.raw_value("global"), join(path, "global"), problems)
    per_provider: dict[str, BudgetConfig] = {}
    p = s.section("providers")
    for name in list(p.raw):
        budget = parse_budget(p.raw_value(name), join(p.path, str(name)), problems)
        if name not in providers:
            problems.add(join(p.path, str(name)), f"unknown provider '{name}'")
        elif budget is not None:
            per_provider[str(name)] = budget
    webhook = s.str("alert_webhook", None)
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        problems.add(join(path, "alert_webhook"), "must be an http:// or https:// URL")
        webhook = None
    s.finish()
    return BudgetsConfig(global_=global_, providers=MappingProxyType(per_provider),
                         alert_webhook=webhook)


def parse_state(raw: Any, problems: Problems) -> StateConfig:
    s = Section(raw, "state", problems)
    backend = s.str("backend", "memory", choices=("memory", "redis"))
    url = s.str("url", None)
    if backend == "redis" and not url:
        problems.add("state.url", "is required when state.backend is redis (redis://HOST:6379/0)")
    elif url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        problems.add("state.url", "must be a redis://, rediss:// or unix:// URL")
    prefix = s.str("prefix", "gatewise:")
    instances = s.number("instances", 1, minimum=1, integer=True)
    outage = s.section("on_outage")
    on_budgets = outage.str("budgets", "fail_closed", choices=("fail_closed", "fail_open"))
    outage.finish()
    durability = s.str("durability", "process", choices=("process", "power"))
    ledger_raw = s.raw_value("ledger")
    ledger: str | None = None
    postgres: str | None = None
    if isinstance(ledger_raw, str) and ledger_raw.startswith(("postgresql://", "postgres://")):
        postgres = ledger_raw
    elif ledger_raw is not None and ledger_raw not in ("none", "memory"):
        if not isinstance(ledger_raw, str) or not ledger_raw.startswith("sqlite:") \
                or len(ledger_raw) <= len("sqlite:"):
            problems.add("state.ledger", "must be sqlite:PATH, postgresql://… or none, "
                                         f"got {ledger_raw!r}")
        else:
            ledger = ledger_raw[len("sqlite:"):]
            ledger = ledger.removeprefix("//")  # sqlite:///abs/path → /abs/path
    s.finish()
    return StateConfig(backend=backend or "memory", ledger=ledger, url=url,
                       prefix=prefix or "gatewise:", budgets_on_outage=on_budgets or "fail_closed",
                       instances=int(instances or 1), postgres=postgres,
                       durability=durability or "process")
