"""Route rules, compiled once: each rule becomes a tuple of checks, cheapest first.

Matching a request walks the rules in order and stops at the first whose checks
all pass; a check is one closure call reading the exchange (a set lookup for
names, one header read, the estimate the exchange already keeps). The walk over
the messages for images runs last, and only for rules that got that far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from proxy.config.routes import RouteMatch, RouteRule
from proxy.engine.routing import _has_image

if TYPE_CHECKING:
    from proxy.core.exchange import Exchange

Check = Callable[["Exchange"], bool]

#: request path → what `match.endpoint` calls it
ENDPOINT_OF = {"/v1/chat/completions": "chat", "/chat/completions": "chat",
               "/v1/completions": "completions", "/completions": "completions",
               "/v1/embeddings": "embeddings", "/embeddings": "embeddings"}


class RuleTable:
    """The config's `routes:` in order; `match(ex)` gives the first matching rule."""

    def __init__(self, rules: Iterable[RouteRule]) -> None:
        self.rules = tuple((rule, tuple(compile_rule(rule))) for rule in rules)

    def match(self, ex: "Exchange") -> RouteRule | None:
        for rule, checks in self.rules:
            for check in checks:
                if not check(ex):
                    break
            else:
                return rule
        return None


def compile_rule(rule: RouteRule) -> list[Check]:
    """The rule's checks, cheapest first. A rule with a `targets:` subset and no `model`
    also needs the requested model to have targets in that subset."""
    m: RouteMatch = rule.match
    checks: list[Check] = []
    if rule.subsets is not None and rule.model is None:
        checks.append(_model_in(frozenset(rule.subsets)))
    if m.models is not None:
        checks.append(_model_in(m.models))
    if m.keys is not None:
        checks.append(_key_in(m.keys))
    for name, values in m.metadata:
        checks.append(_metadata_in(name, values))
    if m.tasks is not None:
        checks.append(_task_in(m.tasks))
    if m.endpoints is not None:
        checks.append(_endpoint_in(m.endpoints))
    for name, header_values in m.headers:
        checks.append(_header_present(name) if header_values is None
                      else _header_in(name, header_values))
    if m.users is not None:
        checks.append(_user_in(m.users))
    if m.tools is not None:
        checks.append(_has_tools(m.tools))
    if m.prompt_tokens is not None:
        checks.append(_prompt_within(*m.prompt_tokens))
    if m.images is not None:
        checks.append(_has_images(m.images))
    return checks


def _model_in(names: frozenset[str]) -> Check:
    return lambda ex: ex.model.name in names


def _key_in(names: frozenset[str]) -> Check:
    return lambda ex: ex.key is not None and ex.key.name in names


def _metadata_in(name: str, values: frozenset[str]) -> Check:
    return lambda ex: ex.key is not None and ex.key.metadata.get(name) in values


def _task_in(tasks: frozenset[str]) -> Check:
    return lambda ex: ex.task in tasks


def _endpoint_in(endpoints: frozenset[str]) -> Check:
    return lambda ex: ex.http is not None and ENDPOINT_OF.get(ex.http.path) in endpoints


def _header_present(name: str) -> Check:
    return lambda ex: ex.http is not None and name in ex.http.headers


def _header_in(name: str, values: frozenset[str]) -> Check:
    """Exactly one such header with one of the values: a header sent twice is ambiguous
    and matches nothing."""
    def check(ex: "Exchange") -> bool:
        if ex.http is None:
            return False
        headers = ex.http.headers
        value = headers.get(name)
        return value is not None and value in values and len(headers.getall(name)) == 1
    return check


def _user_in(users: frozenset[str]) -> Check:
    def check(ex: "Exchange") -> bool:
        user = ex.body.get("user")
        return isinstance(user, str) and user in users
    return check


def _has_tools(want: bool) -> Check:
    return lambda ex: bool(ex.body.get("tools") or ex.body.get("functions")) is want


def _prompt_within(low: int, high: int) -> Check:
    return lambda ex: low <= ex.estimated().prompt_tokens <= high


def _has_images(want: bool) -> Check:
    return lambda ex: _has_image(ex.body.get("messages")) is want
