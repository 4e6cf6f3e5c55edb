"""The policy pipeline: onion-style middleware over an Exchange.

A policy is `async def __call__(exchange, call_next)`. It may act before the
call (auth, limits, reservations, cache lookup), after it (usage, cost, ledger,
cache store), or instead of it (a cache hit, a refusal). The chain is linked
once at start, so a request pays one coroutine per policy and nothing else:
each link is a plain function that hands back the policy's own coroutine, not
a coroutine of its own around it (every await level is paid again each time
the request's task resumes). A policy whose whole work is a synchronous check
before the call (it raises to refuse) may say so with a `before(exchange)`
method: its link calls that and hands on, and the policy costs no coroutine.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol, Sequence

from proxy.core.exchange import Exchange

CallNext = Callable[[Exchange], Awaitable[None]]


class Policy(Protocol):
    async def __call__(self, exchange: Exchange, call_next: CallNext) -> None: ...


def _link(policy: Policy, call_next: CallNext) -> CallNext:
    before: Callable[[Exchange], None] | None = getattr(policy, "before", None)
    if before is not None:
        def check(exchange: Exchange) -> Awaitable[None]:
            before(exchange)  # (raising here is raising at the caller's await)
            return call_next(exchange)

        return check

    def step(exchange: Exchange) -> Awaitable[None]:
        return policy(exchange, call_next)

    return step


class Pipeline:
    def __init__(self, policies: Sequence[Policy], terminal: CallNext) -> None:
        self.policies = tuple(policies)
        handler = terminal
        for policy in reversed(self.policies):
            handler = _link(policy, handler)
        self._handler = handler

    def __call__(self, exchange: Exchange) -> Awaitable[None]:
        return self._handler(exchange)
