"""Circuit breakers: one per target (provider + upstream model), on pybreaker's state.

pybreaker is built for synchronous calls (`call_async` needs Tornado, and
decorating an `async def` records nothing), so the dispatcher does not wrap
the awaited attempt: it asks `admit()` before and reports with `record()`
after, and each outcome is replayed into pybreaker's own state machine.
pybreaker would let every call through while half-open; `admit()` lets
exactly `half_open_probes` probes in per half-open period and sends the rest
elsewhere. Only failures of the target itself count (server, overloaded,
timeout, connect); 4xx answers other than 408/429 never do.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Callable

import pybreaker

from proxy.config.routing import BreakerConfig
from proxy.core.errors import ErrorClass

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN

#: the admission tickets
PASS = 0  # closed: an ordinary call
PROBE = 1  # half-open: one of the probes


class _Failure(Exception):
    pass


def _ok() -> None:
    return None


def _fail() -> None:
    raise _Failure()


#: told of every transition: (target label, "closed" | "open" | "half-open")
OnChange = Callable[[str, str], None]


class _Transitions(pybreaker.CircuitBreakerListener):
    """pybreaker's hook for state changes (its other hooks run only when an outcome is
    replayed into it, never on the common healthy path)."""

    def __init__(self, notify: OnChange) -> None:
        self.notify = notify

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: object,
                     new_state: pybreaker.CircuitBreakerState) -> None:
        self.notify(cb.name, new_state.name)


class TargetBreaker:
    __slots__ = ("cb", "config", "probes")

    def __init__(self, label: str, config: BreakerConfig,
                 on_change: OnChange | None = None) -> None:
        self.config = config
        self.cb = pybreaker.CircuitBreaker(
            fail_max=config.failures, reset_timeout=config.reset_after,
            success_threshold=config.half_open_probes, name=label,
            throw_new_error_on_trip=False,
            listeners=[_Transitions(on_change)] if on_change is not None else None)
        self.probes = 0  # probes admitted in this half-open period and not yet settled

    @property
    def state(self) -> str:
        return self.cb.current_state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets probes in."""
        opened = self.cb._state_storage.opened_at
        if self.cb.current_state != OPEN or opened is None:
            return 0.0
        left = self.config.reset_after - (datetime.now(UTC) - opened).total_seconds()
        return max(0.0, left)

    def admit(self) -> int | float:
        """PASS or PROBE when the target may be tried now, else seconds to wait (> 0)."""
        state = self.cb.current_state
        if state == CLOSED:
            return PASS
        if state == OPEN:
            wait = self.retry_in()
            if wait > 0:
                return wait
            self.cb.half_open()
            self.probes = 0
        if self.probes < self.config.half_open_probes:
            self.probes += 1
            return PROBE
        return max(0.05, min(1.0, self.config.reset_after))

    def record(self, ticket: int, error_class: ErrorClass | None, *, settled: bool = True) -> None:
        """The attempt's outcome: error_class None is a success; `settled=False` means
        neither (the client left, a 4xx): a probe slot is given back."""
        state = self.cb.current_state
        if error_class is None and ticket == PASS and state == CLOSED \
                and not self.cb.fail_counter:
            return  # the common case: a healthy target stays healthy, nothing to count
        if ticket == PROBE and state != HALF_OPEN:
            return  # another probe already decided this period
        if not settled or (error_class is not None and not error_class.counts_against_target):
            if ticket == PROBE:
                self.probes -= 1
            return
        if ticket == PASS and state != CLOSED:
            return  # a call admitted before the breaker opened: it already said enough
        try:
            self.cb.call(_ok if error_class is None else _fail)
        except (_Failure, pybreaker.CircuitBreakerError):
            pass
        if self.cb.current_state == OPEN:
            self.probes = 0


class Breakers:
    """The registry, keyed by target label."""

    def __init__(self, config: BreakerConfig, on_change: OnChange | None = None) -> None:
        """`on_change` hears every transition (the metrics' gauge)."""
        self.config = config
        self.on_change = on_change
        self._breakers: dict[str, TargetBreaker] = {}

    def get(self, label: str) -> TargetBreaker:
        breaker = self._breakers.get(label)
        if breaker is None:
            breaker = self._breakers[label] = TargetBreaker(label, self.config, self.on_change)
        return breaker

    def admit(self, label: str) -> int | float:
        if not self.config.enabled:
            return PASS
        return self.get(label).admit()

    def record(self, label: str, ticket: int, error_class: ErrorClass | None, *,
               settled: bool = True) -> None:
        if self.config.enabled:
            self.get(label).record(ticket, error_class, settled=settled)

    def state(self, label: str) -> str:
        if not self.config.enabled:
            return CLOSED
        breaker = self._breakers.get(label)
        if breaker is None:
            return CLOSED
        state = breaker.cb.current_state  # (what `breaker.state` returns)
        if state == OPEN and breaker.retry_in() == 0:
            return HALF_OPEN  # would admit probes now
        return state

    def is_open(self, label: str) -> bool:
        return self.state(label) == OPEN

    def keep_only(self, labels: Iterable[str]) -> "Breakers":
        """A registry for the next config (a reload): the same breakers for `labels`, so
        their state and counts go on; the others start closed."""
        keep = set(labels)
        carried = copy.copy(self)
        carried._breakers = {label: b for label, b in self._breakers.items() if label in keep}
        return carried
