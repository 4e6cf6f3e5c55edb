"""How one request becomes ledger rows: its own row, and one per earlier attempt
that consumed tokens, so the rows' costs add up to what every upstream billed.

The request's row (its id is the reservation's) records its last attempt and
what the client got: the status, and the class of the error (`client_closed`
for a 499, which means only that the client went away). An earlier attempt's
row (`<id>.<n>`, `parent` = the request's row) records the upstream's status
and the attempt's error class.
"""

from __future__ import annotations

import time

from proxy.core.exchange import Attempt, Exchange
from proxy.state.ledger import AttemptRow, Outcome, Pending


def request_rows(ex: Exchange, row: Pending, cache_hit: bool, now: float,
                 closing: bool) -> tuple[Outcome, list[AttemptRow]]:
    """The request row's outcome, and the rows of its earlier consuming attempts.
    `closing`: the gateway is shutting down, so a cancel is not the client's."""
    attempts = [] if cache_hit else ex.attempts
    status, error_class = ex.outcome()
    state = "done"
    if status == 499 and closing:
        state, error_class = "interrupted", "shutdown"
        status = 200 if ex.response is not None else None
    last = attempts[-1] if attempts else None
    outcome = _outcome(last, status, error_class, ex.started_ns, None, cache_hit, now, state)
    earlier = []
    for n, attempt in enumerate(attempts[:-1], 1):
        if attempt.usage is None:
            continue  # it consumed nothing (refused, or never reached its upstream)
        cls = attempt.error_class.value if attempt.error_class is not None else None
        earlier.append(AttemptRow(
            id=f"{row.id}.{n}", parent=row.id, request_id=row.request_id,
            key_name=row.key_name, model=attempt.model or row.model, stream=row.stream,
            created_at=row.created_at,
            outcome=_outcome(attempt, attempt.status, cls, attempt.started_ns,
                             attempt.ended_ns, False, now, "done")))
    return outcome, earlier


def _outcome(attempt: Attempt | None, status: int | None, error_class: str | None,
             started_ns: int, ended_ns: int | None, cache_hit: bool, now: float,
             state: str) -> Outcome:
    usage = attempt.usage if attempt is not None else None
    target = attempt.target if attempt is not None else None
    return Outcome(
        provider=target.provider if target else None, target=target.label if target else None,
        http_status=status, error_class=error_class,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        cost=(attempt.cost or 0.0) if attempt is not None else 0.0,
        estimated=bool(usage and usage.estimated),
        latency_ms=round(((ended_ns or time.perf_counter_ns()) - started_ns) / 1e6, 3),
        cache_hit=cache_hit, finished_at=now, state=state)
