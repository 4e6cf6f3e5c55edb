"""Routing that knows the request: its task kind, the route rule it matches, and (for
the admin key alone) an explanation of where it went.

It runs before auth, limits and budgets, so each of them sees the model a rule
chose: a key must be allowed both the model it asked for and the one a rule sends
it to (else 403 `model_not_allowed`), and budgets reserve at that model's prices.

- Task kind: `x-gatewise-task: coding`, or `metadata.task` in the body; it must be
  one the config names (else 400 `invalid_task`) and, when the key lists `tasks`,
  one of them (else 403 `task_not_allowed`). A rule's `task` applies when the
  client names none.
- Explanation: `x-gatewise-explain: 1` with the admin key as bearer. The admin key
  is compared in constant time; anyone else's header is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
from types import MappingProxyType
from typing import Any, Mapping

from policies.auth import presented_key
from proxy.config.policies import KeyConfig
from proxy.config.types import ModelConfig
from proxy.core.errors import GatewayError, bad_request
from proxy.core.exchange import Exchange
from proxy.core.pipeline import CallNext
from proxy.engine.explain import Explanation
from proxy.engine.rules import RuleTable

TASK_HEADER = "x-gatewise-task"
EXPLAIN_HEADER = "x-gatewise-explain"
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})  # an exchange built without HTTP


class Routes:
    """Policy: task kind, route rule, explanation."""

    def __init__(self, table: RuleTable | None, models: Mapping[str, ModelConfig],
                 tasks: frozenset[str], admin: KeyConfig | None) -> None:
        self.table = table if table is not None and table.rules else None
        self.models = models
        self.tasks = tasks
        self.admin = admin

    async def __call__(self, ex: Exchange, call_next: CallNext) -> None:
        self.before(ex)
        await call_next(ex)

    def before(self, ex: Exchange) -> None:
        """The whole policy, before the call (the pipeline links it without a coroutine)."""
        headers = ex.http.headers if ex.http is not None else _NO_HEADERS
        if self.tasks:
            value = headers.get(TASK_HEADER)
            if value is not None or "metadata" in ex.body:
                self._task(ex, value)
        if self.admin is not None and headers.get(EXPLAIN_HEADER) == "1" \
                and self._is_admin(ex, headers):
            ex.explain = Explanation()
        if self.table is not None:
            rule = self.table.match(ex)
            if rule is not None:
                self._apply(ex, rule)

    def _is_admin(self, ex: Exchange, headers: Mapping[str, str]) -> bool:
        """The admin key's identity; with no client keys configured (no auth), its
        digest compared in constant time."""
        if ex.key is not None:
            return ex.key is self.admin
        token = (headers.get("x-api-key") or "").strip() or presented_key(headers)
        if not token:  # x-api-key first, as the Messages API reads it
            return False
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self.admin.digest)

    def _task(self, ex: Exchange, value: Any) -> None:
        param = TASK_HEADER
        if value is None:
            metadata = ex.body.get("metadata")
            if not isinstance(metadata, dict) or "task" not in metadata:
                return
            value, param = metadata["task"], "metadata.task"
        if not isinstance(value, str) or value not in self.tasks:
            shown = value if isinstance(value, str) and len(value) <= 64 else "…"
            raise bad_request(f"Unknown task kind {shown!r} in '{param}': expected one of "
                              f"{', '.join(sorted(self.tasks))}.", param=param,
                              code="invalid_task")
        key = ex.key
        if key is not None and key.tasks and value not in key.tasks:
            raise GatewayError(403, f"The key '{key.name}' may not name the task kind "
                                    f"'{value}'.", "invalid_request_error", param=param,
                               code="task_not_allowed")
        ex.task = value

    def _apply(self, ex: Exchange, rule: Any) -> None:
        ex.route_rule = rule
        if rule.model is not None and rule.model != ex.model.name:
            key = ex.key
            if key is not None and key.models:
                for name, why in ((ex.model.name, ""),
                                  (rule.model, f" (route rule '{rule.name}' sends this "
                                               "request to it)")):
                    if not key.allows(name):
                        raise GatewayError(
                            403, f"The key '{key.name}' is not allowed to use the model "
                                 f"'{name}'{why}.", "invalid_request_error", param="model",
                            code="model_not_allowed")
            ex.model = self.models[rule.model]
        if ex.task is None and rule.task is not None:
            ex.task = rule.task
