"""Parsing `routes:`: ordered rules that send a request by what it is and who sent it.

```yaml
routes:
  - name: long-prompts
    match: {endpoint: chat, prompt_tokens: {min: 32000}}
    model: gpt-4.1
  - name: research-team
    match: {metadata: {team: research}, header: {x-priority: high}}
    targets: [tier:premium]
    strategy: {name: affinity, key_from: "header:x-session-id"}
```

Everything a rule names is checked here, at load, with its field path: models,
targets (`provider/model`, a provider name, or `tier:NAME`), key names, header
names, strategies. Each target selector is resolved to the targets it picks,
per model, so nothing is looked up while a request is routed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from proxy.config.policies import TASK_NAME, KeyConfig, metadata_value
from proxy.config.reader import Problems, Section, join
from proxy.config.routing import SECRET_HEADERS, StrategySpec, parse_strategy
from proxy.config.types import ModelConfig, TargetConfig
from proxy.config.upstreams import STRATEGIES

#: what `match.endpoint` may name: the inbound API (`Exchange.endpoint`)
ENDPOINTS = ("chat", "completions", "embeddings", "responses", "messages")
#: the name the admin key's requests carry, like a client key's name
ADMIN_KEY_NAME = "admin"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
_RULE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NO_LIMIT = 1 << 62


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Every condition given must hold; each list means "any of these"."""

    models: frozenset[str] | None = None  # requested model names the globs matched
    headers: tuple[tuple[str, frozenset[str] | None], ...] = ()  # None: present at all
    keys: frozenset[str] | None = None
    metadata: tuple[tuple[str, frozenset[str]], ...] = ()
    users: frozenset[str] | None = None
    endpoints: frozenset[str] | None = None
    prompt_tokens: tuple[int, int] | None = None  # inclusive
    tools: bool | None = None
    images: bool | None = None
    tasks: frozenset[str] | None = None  # the task kind the client named


@dataclass(frozen=True, slots=True)
class RouteRule:
    name: str
    match: RouteMatch
    model: str | None = None  # send the request to this model
    strategy: StrategySpec | None = None  # order the targets with this instead
    task: str | None = None  # the task kind, when the client named none
    #: model name → the targets the rule's `targets:` picks of it; None: no subset
    subsets: Mapping[str, tuple[TargetConfig, ...]] | None = field(default=None, compare=False)


def selects(selector: str, target: TargetConfig) -> bool:
    """`provider/model` (the target's label), `provider`, or `tier:NAME`."""
    if selector.startswith("tier:"):
        return target.tier == selector[5:]
    return selector == target.label or selector == target.provider


def parse_routes(raw: Any, problems: Problems, models: Mapping[str, ModelConfig],
                 keys: Iterable[KeyConfig], admin: bool) -> tuple[RouteRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.add("routes", "must be a list of rules")
        return ()
    key_names = {k.name for k in keys} | ({ADMIN_KEY_NAME} if admin else set())
    rules: list[RouteRule] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        path = join("routes", i)
        r = Section(item, path, problems)
        if not r.ok:
            continue
        name = r.str("name", f"routes[{i}]")
        if r.has("name") and not _RULE_NAME.match(name):
            problems.add(join(path, "name"), "letters, digits, '_', '.', ':' and '-' only "
                                             "(at most 64): it goes into a response header")
        if name in names:
            problems.add(join(path, "name"), f"duplicate rule name '{name}'")
        names.add(name)
        match = _match(r.section("match"), models, key_names)
        model = r.str("model", None)
        if model is not None and model not in models:
            problems.add(join(path, "model"), f"unknown model '{model}'")
            model = None
        spec = parse_strategy(r.raw_value("strategy"), join(path, "strategy"), problems) \
            if r.raw_value("strategy") is not None else None
        if spec is not None and spec.name not in STRATEGIES:
            problems.add(join(path, "strategy"), f"must be one of {', '.join(STRATEGIES)}; "
                                                 f"got '{spec.name}'")
            spec = None
        task = r.str("task", None)
        if task is not None and not TASK_NAME.match(task):
            problems.add(join(path, "task"), "must be a task kind (lower-case letters, digits, "
                                             "'_', '-', '.')")
        selectors = [str(s) for s in r.list("targets")]
        subsets = None
        if r.has("targets"):
            scope = [models[model]] if model else [m for n, m in models.items()
                                                   if match.models is None or n in match.models]
            subsets = _subsets(selectors, scope, join(path, "targets"), problems,
                               must_fit=model is not None)
        if r.ok and not any(r.has(k) for k in ("model", "targets", "strategy", "task")):
            problems.add(path, "needs at least one of model, targets, strategy or task")
        r.finish()
        rules.append(RouteRule(name=name, match=match, model=model, strategy=spec, task=task,
                               subsets=subsets))
    return tuple(rules)


def _subsets(selectors: list[str], scope: list[ModelConfig], path: str, problems: Problems,
             must_fit: bool) -> Mapping[str, tuple[TargetConfig, ...]]:
    if not selectors:
        problems.add(path, "must name at least one target")
    for j, selector in enumerate(selectors):
        if not any(selects(selector, t) for m in scope for t in m.targets):
            where = f"model '{scope[0].name}'" if must_fit and scope else "the models it may apply to"
            problems.add(join(path, j), f"'{selector}' selects no target of {where} "
                                        "(provider/model, a provider, or tier:NAME)")
    subsets = {}
    for model in scope:
        picked = tuple(t for t in model.targets if any(selects(s, t) for s in selectors))
        if picked:
            subsets[model.name] = picked
    return MappingProxyType(subsets)


def _strings(s: Section, key: str) -> list[str] | None:
    return _values(s.raw_value(key), join(s.path, key), s.problems)


def _values(value: Any, path: str, problems: Problems) -> list[str] | None:
    """A string or a list of strings (numbers and booleans as YAML writes them)."""
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    out = []
    for j, v in enumerate(values):
        text = metadata_value(v)
        if text is None or text == "":
            problems.add(join(path, j) if isinstance(value, list) else path,
                         "must be a string or a list of strings")
        else:
            out.append(text)
    if isinstance(value, list) and not value:
        problems.add(path, "must not be an empty list")
    return out


def _match(m: Section, models: Mapping[str, ModelConfig], key_names: set[str]) -> RouteMatch:
    path, problems = m.path, m.problems
    globs = _strings(m, "model")
    model_set = None
    if globs is not None:
        model_set = frozenset(n for n in models if any(fnmatchcase(n, g) for g in globs))
        for glob in globs:
            if not any(fnmatchcase(n, glob) for n in models):
                problems.add(join(path, "model"), f"'{glob}' matches no model")
    keys = _strings(m, "key")
    for name in keys or ():
        if name not in key_names:
            problems.add(join(path, "key"), f"unknown key '{name}'")
    headers = []
    h = m.section("header")
    for name, value in h.raw.items():
        where = join(h.path, str(name))
        lower = str(name).lower()
        if not _HEADER_NAME.match(str(name)):
            problems.add(where, "is not a header name")
        elif lower in SECRET_HEADERS:
            problems.add(where, "carries credentials: match on key or metadata instead")
        if value is True:
            headers.append((lower, None))
        elif value is None:
            problems.add(where, "needs a value, a list of values, or true (present at all)")
        else:
            values = _values(value, where, problems)
            if values is not None:
                headers.append((lower, frozenset(values)))
    metadata = []
    for name, value in m.section("metadata").raw.items():
        where = join(join(path, "metadata"), str(name))
        values = _values(value, where, problems)
        if values is None:
            problems.add(where, "needs a value or a list of values")
        else:
            metadata.append((str(name), frozenset(values)))
    users = _strings(m, "user")
    endpoints = _strings(m, "endpoint")
    for value in endpoints or ():
        if value not in ENDPOINTS:
            problems.add(join(path, "endpoint"), f"must be one of {', '.join(ENDPOINTS)}; "
                                                 f"got '{value}'")
    tokens = None
    if m.has("prompt_tokens"):
        t = m.section("prompt_tokens")
        low = t.number("min", 0, integer=True)
        high = t.number("max", _NO_LIMIT, integer=True)
        t.finish()
        if t.ok and not (t.has("min") or t.has("max")):
            problems.add(t.path, "needs min, max or both")
        elif low > high:
            problems.add(t.path, f"min ({low}) is above max ({high})")
        tokens = (low, high)
    tools = m.bool("tools", None) if m.has("tools") else None
    images = m.bool("images", None) if m.has("images") else None
    tasks = _strings(m, "task")
    for value in tasks or ():
        if not TASK_NAME.match(value):
            problems.add(join(path, "task"), f"'{value}' is not a task kind")
    m.finish()
    return RouteMatch(
        models=model_set, headers=tuple(headers),
        keys=frozenset(keys) if keys is not None else None,
        metadata=tuple(metadata), users=frozenset(users) if users is not None else None,
        endpoints=frozenset(endpoints) if endpoints is not None else None,
        prompt_tokens=tokens, tools=tools, images=images,
        tasks=frozenset(tasks) if tasks is not None else None)


def known_tasks(models: Mapping[str, ModelConfig], keys: Iterable[KeyConfig],
                routes: Iterable[RouteRule]) -> frozenset[str]:
    """Every task kind the config names: a request may name only these."""
    tasks: set[str] = set()
    for model in models.values():
        for target in model.targets:
            tasks.update(t for t in target.quality if t != "default")
    for key in keys:
        tasks.update(key.tasks)
    for rule in routes:
        if rule.task:
            tasks.add(rule.task)
        tasks.update(rule.match.tasks or ())
    return frozenset(tasks)
