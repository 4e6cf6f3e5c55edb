"""Route rules, compiled once into one matching function.

At start the rules become the source of a single function, one `if` per rule in
order, each condition a chain of `and`s with its cheapest tests first (names
and headers, then the token estimate the exchange keeps, the walk over the
messages for images last), and it is compiled with `compile()`. Matching a
request is then one call that reads the exchange's fields once and stops at
the first rule that holds, with no call per condition. Only constants the
config's parser produced enter the function, by name from its namespace, never
as text: no config value is ever pasted into the source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from proxy.config.routes import RouteMatch, RouteRule
from proxy.engine.routing import _has_image

if TYPE_CHECKING:
    from proxy.core.exchange import Exchange

class RuleTable:
    """The config's `routes:` in order; `match(ex)` gives the first matching rule."""

    def __init__(self, rules: Iterable[RouteRule]) -> None:
        self.rules = tuple(rules)
        self.source, namespace = compile_rules(self.rules)
        exec(compile(self.source, "<gatewise routes>", "exec"), namespace)  # noqa: S102
        self.match: Callable[["Exchange"], RouteRule | None] = namespace["match"]


def compile_rules(rules: tuple[RouteRule, ...]) -> tuple[str, dict[str, Any]]:
    """The matching function's source, and the namespace holding every constant it reads."""
    namespace: dict[str, Any] = {"has_image": _has_image,
                                 "isinstance": isinstance, "len": len, "bool": bool,
                                 "str": str, "__builtins__": {}}
    lines = ["def match(ex):", "    model = ex.model.name", "    key = ex.key",
             "    http = ex.http", "    body = ex.body"]
    for i, rule in enumerate(rules):
        namespace[f"R{i}"] = rule
        tests = _tests(i, rule, namespace)
        lines.append(f"    if {' and '.join(tests) if tests else 'True'}:")
        lines.append(f"        return R{i}")
    lines.append("    return None")
    return "\n".join(lines) + "\n", namespace


def _tests(i: int, rule: RouteRule, ns: dict[str, Any]) -> list[str]:
    """One rule's conditions as expressions over `model`, `key`, `http`, `body`, `ex`."""
    m: RouteMatch = rule.match
    tests: list[str] = []

    def const(kind: str, value: Any) -> str:
        name = f"{kind}{i}_{len(ns)}"
        ns[name] = value
        return name

    if rule.subsets is not None and rule.model is None:  # the requested model has targets
        tests.append(f"model in {const('S', frozenset(rule.subsets))}")
    if m.models is not None:
        tests.append(f"model in {const('M', m.models)}")
    if m.keys is not None:
        tests.append(f"key is not None and key.name in {const('K', m.keys)}")
    for name, values in m.metadata:
        field, allowed = const("F", name), const("V", values)
        tests.append(f"key is not None and key.metadata.get({field}) in {allowed}")
    if m.tasks is not None:
        tests.append(f"ex.task in {const('T', m.tasks)}")
    if m.endpoints is not None:
        tests.append(f"ex.endpoint in {const('E', m.endpoints)}")
    for name, values in m.headers:
        header = const("H", name)
        if values is None:
            tests.append(f"http is not None and {header} in http.headers")
        else:  # exactly one such header: one sent twice is ambiguous and matches nothing
            allowed = const("V", values)
            tests.append(f"http is not None and http.headers.get({header}) in {allowed} "
                         f"and len(http.headers.getall({header})) == 1")
    if m.users is not None:
        tests.append(f"isinstance(body.get('user'), str) and body['user'] in "
                     f"{const('U', m.users)}")
    if m.tools is not None:
        tests.append(f"bool(body.get('tools') or body.get('functions')) is "
                     f"{const('B', m.tools)}")
    if m.prompt_tokens is not None:
        low, high = m.prompt_tokens
        tests.append(f"{const('L', low)} <= ex.estimated().prompt_tokens <= "
                     f"{const('L', high)}")
    if m.images is not None:
        tests.append(f"has_image(body.get('messages')) is {const('B', m.images)}")
    return [f"({t})" for t in tests]
