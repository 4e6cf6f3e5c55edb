"""What one upstream attempt consumed, whether it served the answer or not.

Every attempt that reached an upstream which began working on it is billed:
the usage the upstream reported, or else an estimate from the prompt and the
output received (the translator's count of a cut stream), flagged `estimated`.
An attempt the upstream refused with an HTTP error, or that never reached it
(connection refused, connect timeout), consumed nothing. A timeout or a cancel
before the upstream answered is billed its prompt: the upstream had the
request and may bill it, and nothing billed is better missed than guessed low.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from proxy.core.errors import ErrorClass
from proxy.core.pricing import cost
from proxy.core.usage import Usage

if TYPE_CHECKING:
    from proxy.core.exchange import Attempt, Exchange
    from translators.base import Translator


def consumed(attempt: "Attempt") -> bool:
    """Whether the upstream may bill this attempt."""
    if attempt.status is not None:  # its headers came: an error status bills nothing
        return attempt.status < 400
    cls = attempt.error_class
    return cls is None or cls is ErrorClass.TIMEOUT  # cancelled or cut while it worked


def bill(ex: "Exchange", attempt: "Attempt", translator: "Translator") -> None:
    """Set the attempt's usage and cost (and `ex.usage`, the latest attempt's)."""
    usage = ex.usage
    if usage is None and consumed(attempt):
        usage = translator.partial_usage()
        if usage is None:
            usage = Usage(prompt_tokens=ex.estimated().prompt_tokens, estimated=True)
        ex.usage = usage
    attempt.usage = usage
    if usage is not None and attempt.target.info.priced:
        attempt.cost = cost(usage, attempt.target)


def total_cost(attempts: Sequence["Attempt"]) -> float | None:
    """What every attempt cost together; None when no attempt had a price."""
    if len(attempts) == 1:  # the common case
        return attempts[0].cost
    costs = [a.cost for a in attempts if a.cost is not None]
    return sum(costs) if costs else None
